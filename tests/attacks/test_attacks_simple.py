"""Hand-computed cases for the own-update attacks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import attacks

UPDATES = jnp.array([[1.0, -2.0], [3.0, 4.0], [-5.0, 6.0]])
MASK = jnp.array([True, False, True])


def test_sign_flip_negates_byzantine_rows():
  out = attacks.sign_flip(None, UPDATES, MASK)
  np.testing.assert_array_equal(out, [[-1.0, 2.0], [3.0, 4.0], [5.0, -6.0]])


def test_scaling_multiplies_by_factor():
  np.testing.assert_array_equal(
      attacks.scaling(None, UPDATES, MASK),
      [[100.0, -200.0], [3.0, 4.0], [-500.0, 600.0]])
  np.testing.assert_array_equal(
      attacks.scaling(None, UPDATES, MASK, factor=-0.5),
      [[-0.5, 1.0], [3.0, 4.0], [2.5, -3.0]])


def test_zero_and_non_finite_fill_rows():
  np.testing.assert_array_equal(
      attacks.zero(None, UPDATES, MASK), [[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
  for value, check in (("nan", np.isnan), ("inf", np.isposinf), ("-inf", np.isneginf)):
    out = np.asarray(attacks.non_finite(None, UPDATES, MASK, value=value))
    assert check(out[[0, 2]]).all()
    np.testing.assert_array_equal(out[1], [3.0, 4.0])
  with pytest.raises(ValueError, match="value to be one of"):
    attacks.non_finite(None, UPDATES, MASK, value="NaN!")


def test_gaussian_noise_is_additive_with_the_requested_std():
  n, d = 4, 20000
  updates = jnp.tile(jnp.arange(n, dtype=jnp.float32)[:, None], (1, d))
  mask = jnp.array([True, False, True, False])
  out = np.asarray(attacks.gaussian_noise(jax.random.key(0), updates, mask, std=3.0))
  noise = out - np.asarray(updates)
  for row in (0, 2):
    assert abs(noise[row].mean()) < 0.1
    assert abs(noise[row].std() - 3.0) < 0.1
  np.testing.assert_array_equal(noise[[1, 3]], 0.0)
  # Different rows get different noise; std=0 is the identity.
  assert not np.allclose(noise[0], noise[2])
  np.testing.assert_array_equal(
      attacks.gaussian_noise(jax.random.key(0), updates, mask, std=0.0), updates)
  with pytest.raises(ValueError, match="std >= 0"):
    attacks.gaussian_noise(jax.random.key(0), updates, mask, std=-1.0)


def test_random_replaces_rows_with_standard_normal_noise():
  d = 20000
  updates = jnp.full((3, d), 50.0)
  mask = jnp.array([False, True, True])
  out = np.asarray(attacks.random(jax.random.key(1), updates, mask))
  for row in (1, 2):
    assert abs(out[row].mean()) < 0.05 and abs(out[row].std() - 1.0) < 0.05
  np.testing.assert_array_equal(out[0], 50.0)
  # A replacement ignores the row's own value.
  other = np.asarray(attacks.random(jax.random.key(1), -updates, mask))
  np.testing.assert_array_equal(out[1:], other[1:])


def test_model_replacement_boosts_by_n_over_server_lr():
  np.testing.assert_array_equal(
      attacks.model_replacement(None, UPDATES, MASK),
      [[3.0, -6.0], [3.0, 4.0], [-15.0, 18.0]])
  np.testing.assert_array_equal(
      attacks.model_replacement(None, UPDATES, MASK, server_lr=0.5),
      [[6.0, -12.0], [3.0, 4.0], [-30.0, 36.0]])
  np.testing.assert_array_equal(
      attacks.model_replacement(None, UPDATES, MASK, boost=2.0),
      [[2.0, -4.0], [3.0, 4.0], [-10.0, 12.0]])
  with pytest.raises(ValueError, match="server_lr > 0"):
    attacks.model_replacement(None, UPDATES, MASK, server_lr=0.0)


def test_model_replacement_replaces_the_fedavg_model():
  """Bagdasaryan et al.'s claim: with honest updates near zero (a converged
  model), FedAvg with server lr eta after boosting lands on the attacker's
  update."""
  n, eta = 5, 0.5
  target = jnp.array([1.0, -2.0, 3.0])
  honest = 1e-4 * jax.random.normal(jax.random.key(0), (n, 3))
  updates = honest.at[0].set(target)
  mask = jnp.arange(n) == 0
  boosted = attacks.model_replacement(None, updates, mask, server_lr=eta)
  new_model_delta = eta * jnp.mean(boosted, axis=0)
  np.testing.assert_allclose(new_model_delta, target, atol=1e-3)
