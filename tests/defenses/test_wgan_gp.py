"""The WGAN-GP penalty in closed form, GAN training, sample diversity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import defenses


def _batch(seed, b=6, d=5):
  rng = np.random.default_rng(seed)
  real = jnp.asarray(rng.uniform(size=(b, d)), jnp.float32)
  fake = jnp.asarray(rng.uniform(size=(b, d)), jnp.float32)
  eps = jnp.asarray(rng.uniform(size=(b,)), jnp.float32)
  return real, fake, eps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_penalty_of_a_linear_critic_is_lambda_times_norm_minus_one_squared(seed):
  real, fake, eps = _batch(seed)
  w = jnp.asarray(np.random.default_rng(seed + 10).normal(size=5), jnp.float32)
  critic = lambda x: x @ w + 3.0
  got = defenses.gradient_penalty(critic, real, fake, eps, weight=10.0)
  expected = 10.0 * (np.linalg.norm(np.asarray(w, np.float64)) - 1.0) ** 2
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_penalty_of_a_unit_gradient_critic_is_zero():
  real, fake, eps = _batch(3)
  w = jnp.ones(5) / jnp.sqrt(5.0)
  assert float(defenses.gradient_penalty(lambda x: x @ w, real, fake, eps)) < 1e-8


def test_penalty_of_a_quadratic_critic_uses_the_interpolates():
  # D(x) = |x|^2 / 2 has gradient x: the penalty is taken at xh = e r + (1-e) f.
  real, fake, eps = _batch(4)
  critic = lambda x: 0.5 * jnp.sum(x * x, axis=1)
  r, f, e = (np.asarray(a, np.float64) for a in (real, fake, eps))
  xh = e[:, None] * r + (1 - e[:, None]) * f
  expected = 10.0 * np.mean((np.linalg.norm(xh, axis=1) - 1.0) ** 2)
  got = defenses.gradient_penalty(critic, real, fake, eps)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)
  # eps = 1 takes the gradient at the real samples.
  at_real = defenses.gradient_penalty(critic, real, fake, jnp.ones(6), weight=1.0)
  np.testing.assert_allclose(float(at_real),
                             np.mean((np.linalg.norm(r, axis=1) - 1) ** 2), rtol=1e-5)


def test_train_wgan_gp_runs_and_samples_in_range():
  # One compile only (the plain GAN is trained by the benchmark test and by
  # scripts/conflict.py): the WGAN-GP step holds the double backward pass.
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(20, 4)).astype(np.float32)
  y = np.arange(20) % 2
  gan = defenses.train_gan(jax.random.PRNGKey(0), x, y, 2, num_steps=2,
                           batch_size=8, latent_dim=3, hidden=(8,))
  assert gan.losses.shape == (2, 2) and np.all(np.isfinite(gan.losses))
  s = np.asarray(defenses.sample(gan, jax.random.PRNGKey(1), jnp.array([0, 1, 1])))
  assert s.shape == (3, 4) and s.min() >= 0.0 and s.max() <= 1.0


def test_train_gan_rejects_bad_settings():
  x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int32)
  with pytest.raises(ValueError, match="kind"):
    defenses.train_gan(jax.random.PRNGKey(0), x, y, 2, kind="vae")
  with pytest.raises(ValueError, match="critic_steps"):
    defenses.train_gan(jax.random.PRNGKey(0), x, y, 2, critic_steps=0)
  with pytest.raises(ValueError, match="gp_weight"):
    defenses.train_gan(jax.random.PRNGKey(0), x, y, 2, gp_weight=-1.0)


def test_sample_diversity_is_the_mean_within_class_pairwise_distance():
  samples = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0], [9.0, 9.0]])
  labels = np.array([0, 0, 1, 1, 2])  # class 2 has one sample: skipped
  # class 0: one pair at distance 5; class 1: identical (collapsed) -> 0.
  assert defenses.sample_diversity(samples, labels, 3) == pytest.approx(2.5)


def test_shared_sample_is_stratified_and_validates_fraction():
  y = np.repeat(np.arange(3), [100, 10, 1])
  x = np.arange(len(y))[:, None].astype(np.float32)
  xs, ys = defenses.shared_sample(x, y, 0.05, 3)
  assert np.bincount(ys, minlength=3).tolist() == [5, 1, 1]
  np.testing.assert_array_equal(y[xs[:, 0].astype(int)], ys)
  with pytest.raises(ValueError, match=r"shared_fraction=0.0 must be in \(0, 1\]"):
    defenses.shared_sample(x, y, 0.0, 3)


def test_shared_sample_validation_split_is_disjoint_and_deterministic():
  y = np.repeat(np.arange(3), [100, 10, 1])
  gan, val = defenses.shared_sample_indices(y, 0.2, 3, seed=4, validation_split=0.5)
  assert np.intersect1d(gan, val).size == 0
  # Indices into the training labels only (the test set is never read).
  assert gan.min() >= 0 and max(gan.max(), val.max()) < len(y)
  # Per class: round(0.2 n_c), at least 2 (one on each side); half held out.
  assert np.bincount(y[gan], minlength=3).tolist() == [10, 1, 1]
  assert np.bincount(y[val], minlength=3).tolist() == [10, 1, 0]
  again = defenses.shared_sample_indices(y, 0.2, 3, seed=4, validation_split=0.5)
  np.testing.assert_array_equal(gan, again[0])
  np.testing.assert_array_equal(val, again[1])
  # Without a split: shared_sample's draw and an empty validation split.
  whole, none = defenses.shared_sample_indices(y, 0.2, 3, seed=4)
  assert none.size == 0
  x = np.arange(len(y))[:, None].astype(np.float32)
  np.testing.assert_array_equal(x[whole], defenses.shared_sample(x, y, 0.2, 3, seed=4)[0])
  with pytest.raises(ValueError, match="validation_split=1.0"):
    defenses.shared_sample_indices(y, 0.2, 3, validation_split=1.0)


@pytest.mark.benchmark
def test_wgan_gp_is_more_diverse_than_a_plain_gan_on_digits():
  from robustfl_jax import data
  ds = data.load_digits()
  xs, ys = defenses.shared_sample(ds.x_train, ds.y_train, 0.1, 10)
  labels = defenses.balanced_labels(10, 50)
  div = {}
  for kind in ("wgan_gp", "gan"):
    gan = defenses.train_gan(jax.random.PRNGKey(0), xs, ys, 10, kind=kind, num_steps=1000)
    div[kind] = defenses.sample_diversity(
        defenses.sample(gan, jax.random.PRNGKey(1), labels), labels, 10)
  assert div["wgan_gp"] > 2 * div["gan"]
