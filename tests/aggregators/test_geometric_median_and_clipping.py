"""Geometric median (RFA), centered clipping, clipping and ARC."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import aggregators as agg


def _rand(n, d, seed=0):
  return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _objective(z, u, w=None):
  w = np.ones(len(u)) if w is None else w
  return float(np.sum(w * np.linalg.norm(u.astype(np.float64) - z, axis=1)))


@pytest.mark.parametrize("seed", range(4))
def test_geometric_median_optimality_and_beats_mean_and_median(seed):
  rng = np.random.default_rng(seed)
  u = rng.standard_normal((15, 6)).astype(np.float32)
  u[:3] += 20.0 * rng.standard_normal((3, 6)).astype(np.float32)
  z = np.asarray(agg.geometric_median(u, max_iter=2000, smoothing=1e-8, ftol=0.0),
                 np.float64)
  # Optimality: the sum of unit vectors towards the points vanishes.
  diff = u.astype(np.float64) - z
  grad = np.sum(diff / np.linalg.norm(diff, axis=1, keepdims=True), axis=0)
  assert np.linalg.norm(grad) < 1e-2 * len(u)
  assert _objective(z, u) < _objective(u.mean(0), u)
  assert _objective(z, u) < _objective(np.median(u, 0), u)


def test_rfa_settings_and_weights_and_nan_rows():
  u = _rand(10, 5)
  four = agg.get("rfa")
  out, _, info = four.update(u, four.init(u[0]))
  assert int(info["num_iters"]) <= 4
  np.testing.assert_allclose(out, agg.geometric_median(u, max_iter=4), rtol=1e-6)
  # Weight 2 on a point is the same as duplicating it.
  w = np.ones(10)
  w[0] = 2.0
  dup = np.concatenate([u, u[:1]])
  # float32 cannot see the flat objective move near the optimum: compare in
  # float64, run to convergence.
  converged = dict(max_iter=1000, ftol=0.0, smoothing=1e-12)
  with jax.enable_x64(True):
    np.testing.assert_allclose(
        agg.geometric_median(u.astype(np.float64), weights=w, **converged),
        agg.geometric_median(dup.astype(np.float64), **converged), rtol=1e-7, atol=1e-7)
  v = u.copy()
  v[2] = np.nan
  np.testing.assert_allclose(agg.geometric_median(v), agg.geometric_median(np.delete(u, 2, 0)),
                             rtol=1e-4, atol=1e-5)


def test_geometric_median_all_rows_equal_and_bounded_under_attack():
  u = np.tile(np.arange(4, dtype=np.float32), (6, 1))
  np.testing.assert_allclose(agg.geometric_median(u), np.arange(4), atol=1e-5)
  honest = _rand(9, 4, seed=3)
  for bad in (1e30, -1e30, 1e3):
    x = np.concatenate([honest, np.full((4, 4), bad, np.float32)])
    assert np.all(np.isfinite(np.asarray(agg.geometric_median(x))))
    out = np.asarray(agg.geometric_median(x, init="median"))
    assert np.linalg.norm(out - np.median(honest, 0)) < 3.0
  # Moderately far rows: the paper's mean start gets there too.
  x = np.concatenate([honest, np.full((4, 4), 1e3, np.float32)])
  assert np.linalg.norm(np.asarray(agg.geometric_median(x)) - np.median(honest, 0)) < 3.0


def test_centered_clipping_limits_and_hand_cases():
  u = _rand(8, 6)
  # An infinite radius makes one step from any center the mean.
  np.testing.assert_allclose(agg.centered_clipping(u, jnp.full(6, 3.0), 1e9, 1),
                             u.mean(0), rtol=1e-5, atol=1e-5)
  # Zero distance: every row equals the center: the output is the center.
  same = np.ones((5, 3), np.float32)
  np.testing.assert_array_equal(agg.centered_clipping(same, jnp.ones(3), 1.0, 3), np.ones(3))
  # One row far away moves the output by at most radius / n per step.
  x = np.zeros((10, 2), np.float32)
  x[0] = [1e30, 0]
  out = np.asarray(agg.centered_clipping(x, jnp.zeros(2), 2.0, 1))
  np.testing.assert_allclose(out, [0.2, 0.0], rtol=1e-6)
  out3 = np.asarray(agg.centered_clipping(x, jnp.zeros(2), 2.0, 3))
  assert np.linalg.norm(out3) <= 3 * 2.0 / 10 + 1e-6


def test_stateful_centered_clipping_carries_the_previous_aggregate():
  a = agg.get("centered_clipping", radius=0.5, num_iters=1)
  state = a.init({"w": jnp.zeros((2, 2))})
  assert state.center.shape == (4,)
  u = np.full((4, 4), 10.0, np.float32)
  out1, state, _ = a.update(u, state)
  np.testing.assert_allclose(out1, np.full(4, 0.25), rtol=1e-6)  # 0.5 / |(10,10,10,10)| * 10
  out2, state, _ = a.update(u, state)
  assert np.all(np.asarray(out2) > np.asarray(out1))
  np.testing.assert_allclose(state.center, out2)


def test_clip_by_norm_and_zero_rows():
  u = _rand(6, 5) * 10
  u[1] = 0.0
  out = np.asarray(agg.clip_by_norm(u, 1.0))
  assert np.all(np.linalg.norm(out, axis=1) <= 1.0 + 1e-6)
  np.testing.assert_array_equal(out[1], 0.0)
  small = u / 1e6
  np.testing.assert_array_equal(agg.clip_by_norm(small, 1.0), small)
  masked = np.asarray(agg.clip_by_norm(u, 1.0, mask=np.arange(6) != 2))
  assert np.all(np.isnan(masked[2])) and np.all(np.isfinite(np.delete(masked, 2, 0)))


def test_arc_clips_the_k_largest_to_the_next_norm():
  norms = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], np.float32)
  u = np.zeros((10, 3), np.float32)
  u[:, 0] = norms
  # n=10, f=2: k = floor(2 * 2/10 * 8) = 3 -> clip to the 4th largest norm, 7.
  out = np.asarray(agg.arc(u, 2))
  np.testing.assert_allclose(out[:, 0], np.minimum(norms, 7.0))
  np.testing.assert_array_equal(agg.arc(u, 0), u)
  with pytest.raises(ValueError, match="arc needs n > 2f"):
    agg.arc(u, 5)
