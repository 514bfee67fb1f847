"""Randomized smoothing: Clopper-Pearson, PREDICT, CERTIFY (Cohen et al.)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from robustfl_jax import adversarial as adv


def test_clopper_pearson_matches_scipy_beta_ppf():
  cases = [(0, 10), (1, 10), (5, 10), (10, 10), (37, 100), (99, 100),
           (100, 100), (50_000, 100_000), (99_000, 100_000),
           (99_990, 100_000), (100_000, 100_000), (1, 100_000)]
  k = np.array([c[0] for c in cases])
  n = np.array([c[1] for c in cases])
  for alpha in (0.001, 0.05):
    want = np.where(k == 0, 0.0, stats.beta.ppf(alpha, np.maximum(k, 1),
                                                n - k + 1))
    # float64 (how certify calls it): agrees to ~1e-12.
    with jax.enable_x64(True):
      got64 = np.asarray(jax.jit(adv.clopper_pearson_lower)(k, n, alpha))
    assert got64.dtype == np.float64
    np.testing.assert_allclose(got64, want, atol=1e-10, rtol=1e-9)
    # Default float32: limited by float32's incomplete beta (~1e-5 at n=1e5).
    got32 = np.asarray(jax.jit(adv.clopper_pearson_lower)(k, n, alpha))
    np.testing.assert_allclose(got32, want, atol=2e-5, rtol=2e-2)
    assert np.all(got64 <= k / n)  # a lower bound of the point estimate


def test_binomial_pvalue_matches_scipy():
  for k, n in [(0, 0), (5, 10), (7, 10), (10, 10), (0, 10), (60, 100),
               (540, 1000), (51_000, 100_000)]:
    with jax.enable_x64(True):
      got = float(adv.binomial_two_sided_pvalue(k, n))
    want = 1.0 if n == 0 else stats.binomtest(k, n, 0.5).pvalue
    assert got == pytest.approx(want, rel=1e-8, abs=1e-12), (k, n)


def _half_plane(params, x):
  """Two classes split by the hyperplane w . x + b = 0 (class 1 above)."""
  score = x.reshape(x.shape[0], -1) @ params["w"] + params["b"]
  return jnp.stack([-score, score], axis=-1)


def test_certify_abstains_when_pa_is_one_half():
  """At a point on the boundary, p_A = 1/2 exactly: CERTIFY abstains."""
  params = {"w": jnp.asarray([1.0, 0.0, 0.0]), "b": jnp.asarray(0.0)}
  x = jnp.zeros((3, 3))
  cert = adv.certify(_half_plane, params, x, jax.random.PRNGKey(0), sigma=0.5,
                     n0=100, n=20_000)
  np.testing.assert_array_equal(cert.prediction, adv.ABSTAIN)
  np.testing.assert_array_equal(cert.radius, 0.0)
  assert np.all(np.asarray(cert.p_lower) < 0.5)
  pred = adv.smoothed_predict(_half_plane, params, x, jax.random.PRNGKey(1),
                              sigma=0.5, num_samples=20_000)
  np.testing.assert_array_equal(pred, adv.ABSTAIN)


def test_constant_classifier_gets_the_largest_certifiable_radius():
  """All n draws hit: p_A_lower = alpha^(1/n), radius sigma Phi^-1 of it."""
  const = lambda params, x: jnp.tile(params, (x.shape[0], 1))
  params = jnp.asarray([0.0, 3.0, 1.0])
  sigma, n, alpha = 0.5, 100_000, 0.001
  cert = adv.certify(const, params, jnp.zeros((2, 4)), jax.random.PRNGKey(0),
                     sigma=sigma, n=n, alpha=alpha, batch_size=4096)
  np.testing.assert_array_equal(cert.prediction, 1)
  np.testing.assert_array_equal(cert.count, n)
  want = sigma * stats.norm.ppf(alpha ** (1 / n))
  np.testing.assert_allclose(cert.radius, want, rtol=1e-9)


def test_linear_classifier_certifies_its_exact_radius():
  """f(x) = 1[w.x + b > 0] under N(0, s^2 I): p_A = Phi(|w.x + b| / (s |w|)),
  so g's true radius is the distance |w.x + b| / |w| to the hyperplane."""
  rng = np.random.default_rng(0)
  w = rng.normal(size=8).astype(np.float32)
  sigma, n, alpha = 0.5, 100_000, 0.001
  params = {"w": jnp.asarray(w), "b": jnp.asarray(0.1, jnp.float32)}
  # Points at known signed distances 0.35 .. 1.0 from the hyperplane, so
  # p_A is in [0.76, 0.98] (the n0 = 100 selection then never errs).
  z = rng.normal(size=(6, 8)) * 0.2
  unit = w / np.linalg.norm(w)
  signed = np.linspace(0.35, 1.0, 6) * np.array([1, -1, 1, -1, 1, -1])
  z = z - ((z @ w + 0.1) / np.linalg.norm(w))[:, None] * unit[None]
  x = jnp.asarray(z + signed[:, None] * unit[None], jnp.float32)
  score = np.asarray(x @ w + 0.1)
  np.testing.assert_allclose(score / np.linalg.norm(w), signed, atol=1e-5)
  distance = np.abs(score) / np.linalg.norm(w)
  p_a = stats.norm.cdf(distance / sigma)
  cert = adv.certify(_half_plane, params, x, jax.random.PRNGKey(3),
                     sigma=sigma, n=n, alpha=alpha, batch_size=5000)
  count = np.asarray(cert.count)
  # The certificate is exactly sigma * Phi^-1(CP lower bound of the counts).
  want_lower = stats.beta.ppf(alpha, count, n - count + 1)
  np.testing.assert_allclose(cert.p_lower, want_lower, atol=1e-10)
  certified = want_lower >= 0.5
  np.testing.assert_array_equal(np.asarray(cert.prediction) >= 0, certified)
  np.testing.assert_array_equal(np.asarray(cert.prediction)[certified],
                                (score > 0).astype(int)[certified])
  np.testing.assert_allclose(np.asarray(cert.radius)[certified],
                             sigma * stats.norm.ppf(want_lower[certified]),
                             rtol=1e-8)
  # The counts estimate p_A (binomial, 5 sd) and the bound stays below it.
  assert np.all(np.abs(count / n - p_a)
                <= 5 * np.sqrt(p_a * (1 - p_a) / n) + 1e-6)
  assert np.all(np.asarray(cert.radius) <= distance + 1e-6)
  # And close to the truth: within the CP slack of about 3.1 + 5 sd.
  slack = 9 * np.sqrt(p_a * (1 - p_a) / n)
  floor = sigma * stats.norm.ppf(np.clip(p_a - slack, 0.5, 1))
  assert np.all(np.asarray(cert.radius)[p_a > 0.6] >= floor[p_a > 0.6] - 1e-4)


def test_sample_counts_batches_and_total():
  const = lambda params, x: jnp.tile(params, (x.shape[0], 1))
  counts = adv.sample_counts(const, jnp.asarray([0.0, 1.0]), jnp.zeros(3),
                             jax.random.PRNGKey(0), sigma=1.0,
                             num_samples=1234, batch_size=500, num_classes=2)
  np.testing.assert_array_equal(counts, [0, 1234])


def test_certified_accuracy_counts_correct_and_large_enough():
  cert = adv.Certificate(prediction=jnp.asarray([0, 1, -1, 2]),
                         radius=jnp.asarray([0.5, 1.0, 0.0, 2.0]),
                         p_lower=jnp.zeros(4), count=jnp.zeros(4, jnp.int32))
  acc = adv.certified_accuracy(cert, [0, 1, 2, 0], [0.0, 0.5, 0.75, 1.5])
  np.testing.assert_allclose(acc, [0.5, 0.5, 0.25, 0.0])


def test_bad_arguments():
  const = lambda params, x: jnp.tile(params, (x.shape[0], 1))
  with pytest.raises(ValueError, match="sigma"):
    adv.certify(const, jnp.zeros(2), jnp.zeros((1, 2)), jax.random.PRNGKey(0),
                sigma=0.0)
  with pytest.raises(ValueError, match="alpha"):
    adv.certify(const, jnp.zeros(2), jnp.zeros((1, 2)), jax.random.PRNGKey(0),
                sigma=1.0, alpha=1.5)
