"""Property tests of the client partitioners and the padded layout."""

import numpy as np
import pytest

from robustfl_jax import data

LABELS = np.repeat(np.arange(10), 60)[np.random.default_rng(0).permutation(600)]


def _check_disjoint(parts, total):
  flat = np.concatenate(parts)
  assert len(flat) == len(np.unique(flat))
  assert flat.min() >= 0 and flat.max() < total
  return flat


@pytest.mark.parametrize("name", data.PARTITIONS)
@pytest.mark.parametrize("num_clients", [10, 23])
def test_partitions_cover_disjoint_nonempty_seeded(name, num_clients):
  parts = data.partition(name, LABELS, num_clients, seed=1, alpha=0.3)
  assert len(parts) == num_clients
  flat = _check_disjoint(parts, len(LABELS))
  assert len(flat) == len(LABELS)  # every example is used
  assert all(len(p) >= 1 for p in parts)
  again = data.partition(name, LABELS, num_clients, seed=1, alpha=0.3)
  assert all(np.array_equal(a, b) for a, b in zip(parts, again))
  if name == "one_label" and num_clients == 10:
    return  # one client per class: nothing left to randomise
  other = data.partition(name, LABELS, num_clients, seed=2, alpha=0.3)
  assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_iid_sizes_and_label_mix():
  parts = data.iid(LABELS, 10)
  assert {len(p) for p in parts} == {60}
  assert all(len(np.unique(LABELS[p])) >= 8 for p in parts)


def test_dirichlet_skew_grows_as_alpha_shrinks():
  def mean_classes(alpha):
    parts = data.dirichlet(LABELS, 10, alpha, seed=0)
    # Classes holding at least 10% of a client's data.
    return np.mean([np.sum(np.bincount(LABELS[p], minlength=10) >= 0.1 * len(p))
                    for p in parts])
  assert mean_classes(0.05) < mean_classes(1.0) < mean_classes(100.0)
  with pytest.raises(ValueError, match="alpha"):
    data.dirichlet(LABELS, 10, 0.0)


def test_shards_limit_classes_per_client():
  parts = data.shards(LABELS, 20, classes_per_client=2, seed=0)
  # 40 shards of 15 from 10 classes of 60: shards never straddle classes here.
  assert all(len(np.unique(LABELS[p])) <= 2 for p in parts)


def test_one_label_each_client_one_class():
  parts = data.one_label(LABELS, 20, seed=0)
  assert all(len(np.unique(LABELS[p])) == 1 for p in parts)
  owners = [int(LABELS[p[0]]) for p in parts]
  assert sorted(owners) == sorted(list(range(10)) * 2)
  with pytest.raises(ValueError, match="num_clients >= number of classes"):
    data.one_label(LABELS, 5)


def test_errors_and_unknown_name():
  with pytest.raises(ValueError, match="unknown partition"):
    data.partition("zipf", LABELS, 10)
  with pytest.raises(ValueError, match="exceeds"):
    data.iid(LABELS[:5], 10)


def test_to_client_data_pads_and_masks():
  x = np.arange(600 * 3, dtype=np.float32).reshape(600, 3)
  parts = data.dirichlet(LABELS, 7, 0.2, seed=0)
  cd = data.to_client_data(x, LABELS, parts)
  assert cd.x.shape == (7, max(len(p) for p in parts), 3)
  np.testing.assert_array_equal(cd.count, [len(p) for p in parts])
  mask = cd.example_mask()
  for c, p in enumerate(parts):
    np.testing.assert_array_equal(cd.x[c, :len(p)], x[p])
    np.testing.assert_array_equal(cd.y[c, :len(p)], LABELS[p])
    assert np.all(cd.x[c, len(p):] == 0) and np.all(cd.y[c, len(p):] == 0)
  assert mask.sum() == 600
  truncated = data.to_client_data(x, LABELS, parts, max_examples=5)
  assert truncated.x.shape[1] == 5 and truncated.count.max() == 5
