"""Fang et al. (2020) full-knowledge attacks on trimmed mean/median and Krum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import aggregators as agg
from robustfl_jax import attacks


def _np_krum_scores(x, f):
  n = x.shape[0]
  dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  scores = []
  for i in range(n):
    others = np.sort(np.delete(dist[i], i))
    scores.append(others[: n - f - 2].sum())
  return np.array(scores)


def test_fang_trimmed_mean_samples_the_papers_intervals():
  honest = np.array([
      # col0: all > 0, mean > 0 -> [w_min / b, w_min]
      # col1: all < 0, mean < 0 -> [w_max, w_max / b]
      # col2: mean < 0, w_max > 0 -> [w_max, b * w_max]
      # col3: mean > 0, w_min < 0 -> [b * w_min, w_min]
      [1.0, -1.0, 0.5, 2.0],
      [2.0, -2.0, -3.0, -1.0],
      [3.0, -3.0, -2.0, 3.0],
      [4.0, -0.5, 1.0, 0.5],
  ])
  byz = np.full((40, 4), 7.0)
  updates = jnp.asarray(np.concatenate([byz, honest]), jnp.float32)
  mask = jnp.arange(44) < 40
  out = np.asarray(attacks.fang_trimmed_mean(jax.random.key(0, impl="rbg"), updates, mask, b=2.0))
  crafted = out[:40]
  bounds = [(0.5, 1.0), (-0.5, -0.25), (1.0, 2.0), (-2.0, -1.0)]
  for j, (lo, hi) in enumerate(bounds):
    assert crafted[:, j].min() >= lo - 1e-6 and crafted[:, j].max() <= hi + 1e-6
    assert crafted[:, j].std() > 0.05 * (hi - lo)    # sampled, not a constant
  np.testing.assert_array_equal(out[40:], honest)
  with pytest.raises(ValueError, match="b > 1"):
    attacks.fang_trimmed_mean(jax.random.key(0, impl="rbg"), updates, mask, b=1.0)


@pytest.mark.parametrize("rule", ["trimmed_mean", "coordinate_median"])
def test_fang_trimmed_mean_pushes_the_rule_against_the_honest_direction(rule):
  n, f, d = 12, 3, 64
  updates = 0.3 + jnp.asarray(np.random.default_rng(1).normal(size=(n, d)), jnp.float32)
  mask = jnp.arange(n) < f
  honest_direction = np.sign(np.asarray(updates)[f:].mean(0))
  aggregate = ((lambda u: agg.trimmed_mean(u, num_trim=f)) if rule == "trimmed_mean"
               else agg.coordinate_median)
  clean = np.asarray(aggregate(updates))
  attacked = attacks.fang_trimmed_mean(jax.random.key(2, impl="rbg"), updates, mask)
  poisoned = np.asarray(aggregate(attacked))
  shift = (poisoned - clean) * honest_direction
  assert shift.mean() < 0
  assert (shift < 0).mean() > 0.8


def test_fang_krum_scores_match_brute_force():
  x = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
  for f in (0, 1, 3):
    np.testing.assert_allclose(attacks.fang_krum_scores(jnp.asarray(x), f), _np_krum_scores(x, f),
                               rtol=1e-5)


def _spread_example(n=11, f=3, d=40, seed=0):
  updates = 0.2 + jnp.asarray(np.random.default_rng(seed).normal(size=(n, d)), jnp.float32)
  mask = jnp.zeros(n, bool).at[jnp.array([2, 5, 9][:f])].set(True)
  return updates, mask


@pytest.mark.parametrize("epsilon", [0.0, 0.01])
def test_fang_krum_makes_krum_select_a_byzantine_row(epsilon):
  updates, mask = _spread_example()
  honest_direction = np.sign(np.asarray(updates)[~np.asarray(mask)].mean(0))
  poisoned = np.asarray(
      attacks.fang_krum(jax.random.key(0, impl="rbg"), updates, mask, epsilon=epsilon))
  selected = np.asarray(agg.krum(jnp.asarray(poisoned), num_byzantine=3))
  assert any(np.array_equal(selected, poisoned[i]) for i in np.flatnonzero(mask))
  # The aggregate now opposes the honest direction.
  assert selected @ honest_direction < 0
  # The crafted row is -lambda * s with lambda > 0: it opposes the honest direction.
  first = poisoned[2]
  lam = -first @ honest_direction / (honest_direction @ honest_direction)
  assert lam > 0
  np.testing.assert_allclose(first, -lam * honest_direction, rtol=1e-5, atol=1e-6)
  if epsilon > 0:
    radius = epsilon * lam * np.sqrt(updates.shape[1])
    for i in (5, 9):
      gap = np.linalg.norm(poisoned[i] - first)
      assert 0 < gap <= radius * (1 + 1e-5)


def _np_lambda_upper_bound(x, mask, f):
  n, d = x.shape
  honest = x[~mask]
  dist = np.sqrt(((honest[:, None] - honest[None]) ** 2).sum(-1))
  sums = [np.sort(np.delete(dist[i], i))[: n - f - 2].sum() for i in range(len(honest))]
  largest_norm = np.linalg.norm(honest, axis=1).max()
  return min(sums) / ((n - 2 * f - 1) * np.sqrt(d)) + largest_norm / np.sqrt(d)


def test_fang_krum_lambda_is_the_largest_halving_of_the_bound_that_krum_selects():
  n, f, d = 11, 3, 40
  updates, mask = _spread_example(n, f, d, seed=3)
  # Shifted away from the origin, the bound itself fails and the search
  # halves three times.
  updates = updates + 0.6
  x, m = np.asarray(updates, np.float64), np.asarray(mask)
  s = np.sign(x[~m].mean(0))
  poisoned = np.asarray(
      attacks.fang_krum(jax.random.key(0, impl="rbg"), updates, mask, epsilon=0.0))
  lam = -poisoned[2] @ s / (s @ s)
  upper = _np_lambda_upper_bound(x, m, f)
  halvings = np.log2(upper / lam)
  assert halvings == pytest.approx(round(halvings), abs=1e-3)
  assert round(halvings) == 3

  def krum_selects_byzantine(lam_value):
    trial = x.copy()
    trial[m] = -lam_value * s
    return m[np.argmin(_np_krum_scores(trial, f))]

  assert krum_selects_byzantine(lam)
  assert not krum_selects_byzantine(2 * lam)


def test_fang_krum_validates_static_num_byzantine():
  updates, mask = _spread_example()
  with pytest.raises(ValueError, match="n > 2f \\+ 2; got n=11, f=5"):
    attacks.fang_krum(jax.random.key(0, impl="rbg"), updates, mask, num_byzantine=5)
  out = attacks.fang_krum(jax.random.key(0, impl="rbg"), updates, mask, num_byzantine=3)
  np.testing.assert_allclose(out, attacks.fang_krum(jax.random.key(0, impl="rbg"), updates, mask),
                             rtol=1e-6)


def test_fang_deviation_is_minus_lambda_sign_with_the_stated_scale():
  from robustfl_jax import attacks
  rng = np.random.default_rng(0)
  u = jnp.asarray(rng.normal(size=(5, 16)), jnp.float32)
  byz = jnp.array([True, False, False, False, False])
  out = attacks.fang_deviation(None, u, byz, lambda_scale=3.0)
  honest = np.asarray(u[1:])
  lam = 3.0 * np.linalg.norm(honest, axis=1).max() / np.sqrt(16)
  np.testing.assert_allclose(out[0], -lam * np.sign(honest.mean(0)),
                             rtol=1e-5)
  np.testing.assert_array_equal(out[1:], u[1:])
  with pytest.raises(ValueError, match="lambda_scale"):
    attacks.fang_deviation(None, u, byz, lambda_scale=0.0)
