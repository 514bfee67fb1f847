"""Adversarial-training objectives as local TrainLoss functions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import adversarial as adv


def _problem(trained_mlp):
  logits_fn, params, x, y = trained_mlp
  x, y = x[:48], y[:48]
  mask = jnp.arange(48) < 40
  return logits_fn, params, x, y, mask


@pytest.mark.parametrize("method", ["pgd", "mix", "trades", "gaussian"])
def test_padding_is_ignored_and_loss_finite(method, trained_mlp):
  logits_fn, params, x, y, mask = _problem(trained_mlp)
  loss_fn = adv.make_train_loss(method, epsilon=0.1, num_steps=3, sigma=0.25)
  key = jax.random.PRNGKey(0)
  jitted = jax.jit(functools.partial(loss_fn, logits_fn))
  loss = jitted(params, x, y, mask, key, None)
  assert np.isfinite(float(loss)) and float(loss) > 0
  # Garbage in the padded rows changes nothing.
  x_bad = x.at[40:].set(0.77)
  y_bad = y.at[40:].set(3)
  loss_bad = jitted(params, x_bad, y_bad, mask, key, None)
  np.testing.assert_allclose(float(loss_bad), float(loss), rtol=1e-5)


def test_madry_loss_is_ce_at_pgd_points_without_differentiating_the_attack(
    trained_mlp):
  logits_fn, params, x, y, mask = _problem(trained_mlp)
  key = jax.random.PRNGKey(1)
  loss_fn = adv.make_train_loss("pgd", epsilon=0.1, num_steps=5)
  x_adv = adv.pgd(logits_fn, params, x, y, key, epsilon=0.1, num_steps=5)

  def reference(p):
    ce = adv.cross_entropy(logits_fn(p, x_adv), y)
    return jnp.sum(ce * mask) / jnp.sum(mask)

  value, grad = jax.jit(jax.value_and_grad(
      lambda p: loss_fn(logits_fn, p, x, y, mask, key, None)))(params)
  ref_value, ref_grad = jax.jit(jax.value_and_grad(reference))(params)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               grad, ref_grad)
  # The PGD points are harder than the clean ones.
  clean = jnp.sum(adv.cross_entropy(logits_fn(params, x), y) * mask) / 40
  assert float(value) > float(clean)


def test_mix_is_the_average_of_clean_and_madry(trained_mlp):
  logits_fn, params, x, y, mask = _problem(trained_mlp)
  key = jax.random.PRNGKey(2)
  mix = adv.make_train_loss("mix", epsilon=0.1, num_steps=4)
  madry = adv.make_train_loss("pgd", epsilon=0.1, num_steps=4)
  clean = jnp.sum(adv.cross_entropy(logits_fn(params, x), y) * mask) / 40
  want = 0.5 * clean + 0.5 * madry(logits_fn, params, x, y, mask, key, None)
  got = mix(logits_fn, params, x, y, mask, key, None)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_trades_beta_zero_is_clean_ce_and_kl_is_nonnegative(trained_mlp):
  logits_fn, params, x, y, mask = _problem(trained_mlp)
  key = jax.random.PRNGKey(3)
  clean = jnp.sum(adv.cross_entropy(logits_fn(params, x), y) * mask) / 40
  @functools.partial(jax.jit, static_argnums=0)
  def trades(beta):
    loss_fn = adv.make_train_loss("trades", epsilon=0.1, num_steps=3,
                                  beta=beta)
    return loss_fn(logits_fn, params, x, y, mask, key, None)

  np.testing.assert_allclose(trades(0.0), clean, rtol=1e-5)
  assert float(trades(6.0)) > float(clean)


def test_make_train_loss_choices_and_errors():
  assert adv.make_train_loss("none") is None
  with pytest.raises(ValueError, match="client.adversarial_training.method"):
    adv.make_train_loss("fgsm_training")
  with pytest.raises(ValueError, match="client.adversarial_training.epsilon"):
    adv.make_train_loss("pgd", epsilon=0.0)
  with pytest.raises(ValueError, match="client.adversarial_training.norm"):
    adv.make_train_loss("trades", norm="l1")
  with pytest.raises(ValueError, match="client.adversarial_training.sigma"):
    adv.make_train_loss("gaussian", sigma=0.0)
  with pytest.raises(ValueError, match="client.adversarial_training.steps"):
    adv.make_train_loss("mix", num_steps=0)
