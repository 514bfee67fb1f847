"""Pairwise distances, Krum, Multi-Krum and Bulyan against step-by-step references."""

import jax
import numpy as np
import pytest

import numpy_reference as ref
from robustfl_jax import aggregators as agg


def _rand(n, d, seed=0):
  return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_pairwise_sq_distances_matches_direct_form():
  u = _rand(9, 40)
  d = np.asarray(agg.pairwise_sq_distances(u))
  np.testing.assert_allclose(d, ref.sq_dist(u), rtol=1e-4, atol=1e-4)
  assert np.all(np.diag(d) == 0.0)
  assert np.all(d >= 0.0)
  np.testing.assert_array_equal(d, d.T)


def test_pairwise_sq_distances_clamps_rounding_and_marks_nonfinite_rows():
  # Identical large rows: the Gram form rounds to tiny negatives, clamped to 0.
  u = (np.full((4, 1000), 1e3) + np.arange(4)[:, None] * 1e-4).astype(np.float32)
  assert np.all(np.asarray(agg.pairwise_sq_distances(u)) >= 0)
  v = _rand(4, 3)
  v[2, 1] = np.nan
  d = np.asarray(agg.pairwise_sq_distances(v))
  assert np.all(np.isinf(np.delete(d[2], 2))) and d[2, 2] == 0
  assert np.all(np.isfinite(np.delete(np.delete(d, 2, 0), 2, 1)))


def test_krum_hand_case():
  # n=6, f=1 -> 3 neighbours. Cluster at 0..3, outliers at 10 and 100.
  u = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [100.0]], np.float32)
  # scores: row0: 1+4+9=14, row1: 1+1+4=6, row2: 1+1+4=6, row3: 1+4+9=14.
  # Rows 1 and 2 tie; the tie-break (sum of squared distances to all others)
  # is 9888 for row 1 and 9674 for row 2: row 2 is the more central.
  assert float(agg.krum(u, 1)[0]) == 2.0
  scores = agg.krum_scores(agg.pairwise_sq_distances(u), np.ones(6, bool), 3)
  np.testing.assert_allclose(scores[:4], [14, 6, 6, 14])


def test_krum_uses_squared_distances_as_the_paper():
  u = np.array([[0, 0], [3, 5], [-5, -4], [4, 5], [-3, -2], [4, -1], [-2, 4]], np.float32)
  # With squared distances (the paper) row 0 wins; plain distances pick row 1.
  assert np.argmin(ref.krum_scores(u, 2)) == 0
  assert np.argmin(ref.krum_scores(u, 2, squared=False)) == 1
  np.testing.assert_array_equal(agg.krum(u, 2), u[0])


@pytest.mark.parametrize("n,f", [(5, 1), (9, 3), (12, 2), (20, 8)])
def test_krum_matches_reference(n, f):
  u = _rand(n, 8, seed=n + f)
  np.testing.assert_array_equal(agg.krum(u, f), ref.krum(u, f))


def test_krum_selects_honest_row_when_honest_rows_are_clustered():
  rng = np.random.default_rng(0)
  honest = 5.0 + 0.01 * rng.standard_normal((8, 20)).astype(np.float32)
  for bad in (1e30, -1e30, np.nan, np.inf):
    u = np.concatenate([honest, np.full((3, 20), bad, np.float32)])
    out = np.asarray(agg.krum(u, 3))
    assert any(np.array_equal(out, h) for h in honest)


def test_krum_requirement_error():
  with pytest.raises(ValueError, match="krum needs n > 2f \\+ 2; got n=6, f=2"):
    agg.krum(_rand(6, 2), 2)


def test_multi_krum_extremes():
  u = _rand(10, 6)
  np.testing.assert_allclose(agg.multi_krum(u, 2, 10), u.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(agg.multi_krum(u, 2, 1), agg.krum(u, 2))
  best3 = np.argsort(ref.krum_scores(u, 2), kind="stable")[:3]
  np.testing.assert_allclose(agg.multi_krum(u, 2, 3), u[best3].mean(0), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="num_selected <= n"):
    agg.multi_krum(u, 2, 11)


@pytest.mark.parametrize("n,f,seed", [(7, 1, 0), (11, 2, 1), (15, 3, 2), (9, 1, 3), (3, 0, 4)])
def test_bulyan_matches_step_by_step_reference(n, f, seed):
  u = _rand(n, 12, seed=seed)
  expected, _ = ref.bulyan(u, f)
  np.testing.assert_allclose(agg.bulyan(u, f), expected, rtol=1e-5, atol=1e-6)


def test_bulyan_rescoring_differs_from_scoring_once():
  """Scoring once and taking the n-2f best (a common shortcut) is not Bulyan."""
  u = np.array([[-9.0], [-6.0], [6.0], [3.0], [8.0], [0.0], [2.0]], np.float32)
  scores = ref.krum_scores(u, 1)
  assert len(set(scores.tolist())) == 7  # no ties: the difference is the method
  expected, selected = ref.bulyan(u, 1)
  assert selected == [1, 2, 3, 5, 6]
  once = np.sort(np.argsort(scores, kind="stable")[:5])
  assert once.tolist() == [2, 3, 4, 5, 6]
  got = float(agg.bulyan(u, 1)[0])
  assert got == pytest.approx(float(expected[0])) and got == pytest.approx(5 / 3)
  s = u[once]
  idx = np.argsort(np.abs(s - np.median(s, 0)), 0, kind="stable")[:3]
  assert float(np.take_along_axis(s, idx, 0).mean()) == pytest.approx(11 / 3)


def test_bulyan_output_stays_in_honest_range_under_far_attack():
  rng = np.random.default_rng(5)
  honest = rng.standard_normal((9, 30)).astype(np.float32)
  for bad in (1e30, -1e30, np.nan):
    u = np.concatenate([honest, np.full((2, 30), bad, np.float32)])
    out = np.asarray(agg.bulyan(u, 2))
    # Far rows are never selected, so only honest values are averaged.
    assert np.all(out >= honest.min(0) - 1e-6) and np.all(out <= honest.max(0) + 1e-6)


def test_bulyan_requirement_error():
  with pytest.raises(ValueError, match="bulyan needs n >= 4f \\+ 3; got n=10, f=2"):
    agg.bulyan(_rand(10, 2), 2)


def test_selection_info_from_registry():
  u = _rand(9, 4)
  u[3] = np.nan
  for name, hp in (("krum", {"num_byzantine": 2}),
                   ("multi_krum", {"num_byzantine": 2, "num_selected": 4}),
                   ("bulyan", {"num_byzantine": 1})):
    a = agg.get(name, **hp)
    out, _, info = jax.jit(a.update)(u, a.init(u[0]))
    assert not bool(info["selected"][3])
    assert int(info["num_nonfinite"]) == 1 and bool(info["rejected"][3])
    assert np.all(np.isfinite(np.asarray(out)))
