"""The seed's z-score detector and the robust (median / MAD) variant."""

import numpy as np
import pytest

from robustfl_jax import aggregators as agg
from robustfl_jax import scoring


def _seed_example():
  """The seed's worked example: mean norms 100, 1, 1.1, 0.9, 1.0."""
  rng = np.random.default_rng(0)
  norms = [100.0, 1.0, 1.1, 0.9, 1.0]
  coresets = []
  for k in norms:
    v = rng.standard_normal((20, 8)).astype(np.float32)
    coresets.append(k * v / np.linalg.norm(v, axis=1, keepdims=True))
  return np.stack(coresets)


def test_plain_zscore_misses_the_seeds_outlier_and_robust_flags_it():
  coresets = _seed_example()
  plain = scoring.zscore_scores(coresets)
  # np.std (ddof=0), as the seed's code: one outlier among 5 reaches sqrt(4)=2.
  assert float(plain.z[0, 0]) == pytest.approx(2.0, abs=1e-4)
  sample = scoring.zscore_scores(coresets, ddof=1)
  assert float(sample.z[0, 0]) == pytest.approx(1.789, abs=1e-3)  # the prose's "about 1.8"
  assert not bool(plain.is_outlier[0]) and not bool(sample.is_outlier[0])
  robust = scoring.robust_zscore_scores(coresets)
  np.testing.assert_array_equal(np.asarray(robust.is_outlier), [True, False, False, False, False])


def test_layouts_agree_list_stacked_and_updates():
  coresets = _seed_example()
  a = scoring.zscore_scores(coresets)
  b = scoring.zscore_scores(list(coresets))
  np.testing.assert_allclose(a.z, b.z, rtol=1e-5)
  updates = coresets[:, 0, :]
  c = scoring.robust_zscore_scores(updates)
  # One vector per client: the std metric is 0 for all and scores 0.
  np.testing.assert_array_equal(np.asarray(c.stats[:, 1]), 0.0)
  np.testing.assert_array_equal(np.asarray(c.z[:, 1]), 0.0)
  assert bool(c.is_outlier[0])


def test_ragged_coresets_identical_clients_and_nonfinite():
  same = [np.ones((3, 2)), np.ones((5, 2)), np.ones((2, 2))]
  res = scoring.zscore_scores(same)
  np.testing.assert_array_equal(np.asarray(res.scores), 0.0)  # spread below 1e-10 -> 0
  bad = same + [np.full((4, 2), np.nan)]
  res = scoring.robust_zscore_scores(bad)
  np.testing.assert_array_equal(np.asarray(res.is_outlier), [False, False, False, True])
  assert np.isinf(float(res.scores[3]))


def test_robust_zscore_falls_back_to_mean_absolute_deviation():
  # Three of five agree exactly: the MAD is 0, the mean absolute deviation is not.
  u = np.zeros((5, 1), np.float32)
  u[:, 0] = [1.0, 1.0, 1.0, 1.2, 9.0]
  res = scoring.robust_zscore_scores(u)
  np.testing.assert_array_equal(np.asarray(res.is_outlier), [False, False, False, False, True])


def test_exclusion_mask_feeds_the_rules():
  rng = np.random.default_rng(1)
  u = rng.standard_normal((12, 6)).astype(np.float32)
  u[0] *= 1000.0
  res = scoring.robust_zscore_scores(u)
  keep = scoring.keep_mask(res)
  assert not bool(keep[0]) and bool(np.all(np.asarray(keep)[1:]))
  np.testing.assert_allclose(agg.mean(u, mask=keep), u[1:].mean(0), rtol=1e-5)


def test_scoring_errors():
  with pytest.raises(ValueError, match="threshold must be > 0"):
    scoring.zscore_scores(np.ones((3, 2)), threshold=0)
  with pytest.raises(ValueError, match="empty list"):
    scoring.zscore_scores([])
  with pytest.raises(ValueError, match="unknown client scorer"):
    scoring.get("lof")
  assert scoring.get("robust_zscore") is scoring.robust_zscore_scores
