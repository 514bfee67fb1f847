"""Aggregator-aware search, gradient attack through a rule, and stealth."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import aggregators as agg
from robustfl_jax import attacks

N, F, D = 10, 3, 8


def _example(seed=0):
  updates = 0.4 + jnp.asarray(np.random.default_rng(seed).normal(size=(N, D)), jnp.float32)
  mask = jnp.zeros(N, bool).at[jnp.array([0, 3, 7])].set(True)
  return updates, mask


def _honest_stats(updates, mask):
  honest = np.asarray(updates, np.float64)[~np.asarray(mask)]
  mean = honest.mean(0)
  radius = np.sqrt(((honest - mean) ** 2).sum(1)).max()
  return mean, radius


def _deviation(rule, updates, mean):
  return float(np.linalg.norm(np.asarray(rule(jnp.asarray(updates, jnp.float32))) - mean))


# The sort form differentiates and compiles fast (the sorting-network form of
# the CPU default is slow to differentiate); both give the same values.
_trimmed = functools.partial(agg.trimmed_mean, num_trim=F, method="sort")
_median = functools.partial(agg.coordinate_median, method="sort")


def test_aggregator_aware_against_the_mean_takes_the_largest_scale():
  updates, mask = _example()
  out = np.asarray(attacks.aggregator_aware(agg.mean, max_scale=4.0)(None, updates, mask))
  mean, radius = _honest_stats(updates, mask)
  unit = -mean / np.linalg.norm(mean)
  np.testing.assert_allclose(out[0], mean + 4.0 * radius * unit, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("direction", ["unit", "std", "sign"])
def test_aggregator_aware_beats_its_grid_and_no_attack(direction):
  updates, mask = _example(seed=1)
  rule = _median
  attack = attacks.aggregator_aware(rule, direction=direction, max_scale=5.0, num_grid=11)
  out = np.asarray(attack(None, updates, mask))
  m = np.asarray(mask)
  mean, radius = _honest_stats(updates, mask)
  honest = np.asarray(updates, np.float64)[~m]
  p = {"unit": -mean, "std": -honest.std(0), "sign": -np.sign(mean)}[direction]
  p = p / np.linalg.norm(p)
  grid_best = 0.0
  for t in np.linspace(0, 5.0, 11):
    trial = np.asarray(updates, np.float64).copy()
    trial[m] = mean + t * radius * p
    grid_best = max(grid_best, _deviation(rule, trial, mean))
  achieved = _deviation(rule, out, mean)
  assert achieved >= grid_best - 1e-5
  assert achieved > _deviation(rule, updates, mean) + 1e-3


@pytest.mark.parametrize("rule_name", ["trimmed_mean", "coordinate_median"])
def test_gradient_attack_moves_the_rule_and_respects_the_budget(rule_name):
  rule = _trimmed if rule_name == "trimmed_mean" else _median
  updates, mask = _example(seed=2)
  mean, radius = _honest_stats(updates, mask)
  out = np.asarray(attacks.gradient_attack(rule, budget=1.0, num_steps=30)(
      jax.random.key(0, impl="rbg"), updates, mask))
  m = np.asarray(mask)
  np.testing.assert_array_equal(out[~m], np.asarray(updates)[~m])
  distances = np.linalg.norm(out[m] - mean, axis=1)
  assert np.all(distances <= radius * (1 + 1e-5))
  assert _deviation(rule, out, mean) > 1.5 * _deviation(rule, updates, mean)


def test_gradient_attack_reaches_the_optimum_against_the_mean():
  """Against the mean the best rows sit on the ball's boundary, all in the same
  direction, moving the mean by f / n * radius."""
  updates, mask = _example(seed=3)
  mean, _ = _honest_stats(updates, mask)
  budget = 2.0
  out = np.asarray(attacks.gradient_attack(agg.mean, budget=budget, relative=False)(
      jax.random.key(0, impl="rbg"), updates, mask))
  assert np.all(np.linalg.norm(out[np.asarray(mask)] - mean, axis=1) <= budget * (1 + 1e-5))
  assert _deviation(agg.mean, out, mean) == pytest.approx(F / N * budget, rel=1e-2)


def test_gradient_attack_with_zero_budget_sends_the_mean():
  updates, mask = _example()
  mean, _ = _honest_stats(updates, mask)
  out = np.asarray(attacks.gradient_attack(agg.mean, budget=0.0, num_steps=2)(
      jax.random.key(0, impl="rbg"), updates, mask))
  np.testing.assert_allclose(out[np.asarray(mask)], np.broadcast_to(mean, (F, D)), atol=1e-5)
  with pytest.raises(ValueError, match="step_size > 0"):
    attacks.gradient_attack(agg.mean, step_size=0.0)


def test_stealth_interpolates_between_own_update_and_poison():
  updates, mask = _example()
  key = jax.random.key(0, impl="rbg")
  poison = attacks.get("alie")
  np.testing.assert_array_equal(
      attacks.stealth(poison, alpha=1.0)(key, updates, mask), poison(key, updates, mask))
  nan_attack = attacks.get("non_finite")
  np.testing.assert_array_equal(
      attacks.stealth(nan_attack, alpha=0.0)(key, updates, mask), updates)
  mixed = np.asarray(attacks.stealth(poison, alpha=0.25)(key, updates, mask))
  expected = 0.75 * np.asarray(updates) + 0.25 * np.asarray(poison(key, updates, mask))
  m = np.asarray(mask)
  np.testing.assert_allclose(mixed[m], expected[m], rtol=1e-6)
  np.testing.assert_array_equal(mixed[~m], np.asarray(updates)[~m])
  with pytest.raises(ValueError, match="0 <= alpha <= 1"):
    attacks.stealth(poison, alpha=1.5)


def test_factories_are_reachable_by_name():
  updates, mask = _example()
  key = jax.random.key(0, impl="rbg")
  by_name = attacks.get("stealth", attack=attacks.get("ipm", epsilon=2.0), alpha=0.5)
  from_config = attacks.get("stealth", attack="ipm", attack_hparams={"epsilon": 2.0}, alpha=0.5)
  direct = attacks.stealth(functools.partial(attacks.ipm, epsilon=2.0), 0.5)
  np.testing.assert_array_equal(by_name(key, updates, mask), direct(key, updates, mask))
  np.testing.assert_array_equal(from_config(key, updates, mask), direct(key, updates, mask))
  aware = attacks.get("aggregator_aware", rule=agg.mean, max_scale=1.0)
  np.testing.assert_allclose(
      aware(key, updates, mask),
      attacks.aggregator_aware(agg.mean, max_scale=1.0)(key, updates, mask))
