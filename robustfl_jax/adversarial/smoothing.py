"""Randomized smoothing (Cohen et al. 2019): prediction and L2 certification.

The smoothed classifier is ``g(x) = argmax_c P(f(x + e) = c)``, ``e ~ N(0,
sigma^2 I)``, for a base classifier ``f(x) = argmax logits_fn(params, x)``.
If the top class has probability ``p_A >= 1/2`` (more precisely, a lower
bound ``p_A_lower``), ``g`` is constant within the L2 radius ``sigma *
Phi^-1(p_A_lower)`` (Theorem 1 with ``p_B = 1 - p_A``).

Noise is drawn and classified in fixed batches inside ``lax.scan``: one
jitted function per (batch, number of samples); the 100,000 samples of
:func:`certify` never sit in memory at once. Noise is not clipped to the
input range (as in the paper; the training noise of
:func:`robustfl_jax.adversarial.training.gaussian_noise_loss` matches).

References:
  Cohen, J., Rosenfeld, E., Kolter, Z.: Certified adversarial robustness via
  randomized smoothing. ICML (2019) -- PREDICT and CERTIFY (Sec. 3.2).
  Clopper, C., Pearson, E.: The use of confidence or fiducial limits
  illustrated in the case of the binomial. Biometrika (1934).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betainc, ndtri

Array = jax.Array
ABSTAIN = -1


class Certificate(NamedTuple):
  """What :func:`certify` returns per example.

  Attributes:
    prediction: ``int32[B]`` the smoothed class, or ``-1`` (abstain).
    radius: ``f64[B]`` certified L2 radius (0 where abstaining).
    p_lower: ``f64[B]`` the Clopper-Pearson lower bound of ``p_A``.
    count: ``int64[B]`` estimation samples that hit the selected class.
  """

  prediction: Array
  radius: Array
  p_lower: Array
  count: Array


def clopper_pearson_lower(successes, trials, alpha) -> Array:
  """One-sided ``(1 - alpha)`` Clopper-Pearson lower bound of a binomial p.

  The ``alpha`` quantile of ``Beta(k, n - k + 1)`` (0 when ``k = 0``), i.e.
  ``scipy.stats.beta.ppf(alpha, k, n - k + 1)`` and Cohen et al.'s
  ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]``. Solved by
  64 bisection steps on the regularised incomplete beta function; ``k = n``
  uses the closed form ``alpha^(1/n)``. Works elementwise and under jit /
  vmap, in JAX's default float dtype: float32 normally (the incomplete beta
  is then accurate to about 1e-5 for ``n = 100,000``), float64 under
  ``jax.enable_x64(True)`` (agrees with scipy to about 1e-12), which is how
  :func:`certify` calls it.

  Args:
    successes: ``k``, integer counts (array or scalar).
    trials: ``n >= k``.
    alpha: one-sided error probability in (0, 1).

  Returns:
    The lower bound in the default float dtype.
  """
  dtype = jnp.result_type(float)
  k = jnp.asarray(successes, dtype)
  n = jnp.asarray(trials, dtype)
  alpha = jnp.asarray(alpha, dtype)
  a = jnp.maximum(k, 1.0)
  b = jnp.maximum(n - k + 1.0, 1.0)
  shape = jnp.broadcast_shapes(k.shape, n.shape, alpha.shape)

  def body(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    below = betainc(a, b, mid) < alpha  # the CDF increases in p
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(
      0, 64, body, (jnp.zeros(shape, dtype), jnp.ones(shape, dtype)))
  bound = 0.5 * (lo + hi)
  bound = jnp.where(k >= n, alpha ** (1.0 / jnp.maximum(n, 1.0)), bound)
  return jnp.where(k <= 0, 0.0, bound)


def binomial_two_sided_pvalue(successes, trials) -> Array:
  """Two-sided exact binomial test of ``p = 1/2`` (``scipy.stats.binomtest``).

  For ``p = 1/2`` the distribution is symmetric, so the p-value is
  ``min(1, 2 * P(X <= min(k, n - k)))`` with ``P(X <= m) = I_{1/2}(n - m,
  m + 1)``; 1 when ``k = n / 2`` or ``n = 0``.
  """
  dtype = jnp.result_type(float)
  k = jnp.asarray(successes, dtype)
  n = jnp.asarray(trials, dtype)
  m = jnp.minimum(k, n - k)
  tail = betainc(jnp.maximum(n - m, 1.0), m + 1.0, 0.5)
  p = jnp.minimum(1.0, 2.0 * tail)
  return jnp.where((n <= 0) | (2 * m >= n), 1.0, p)


@functools.partial(jax.jit, static_argnames=(
    "logits_fn", "num_samples", "batch_size", "num_classes"))
def sample_counts(logits_fn: Callable, params: Any, x: Array, key: Array, *,
                  sigma, num_samples: int, batch_size: int = 1000,
                  num_classes: int) -> Array:
  """Class counts of the base classifier on ``num_samples`` noisy copies.

  Args:
    logits_fn: ``logits_fn(params, x) -> [B, K]`` (eval mode).
    params: model parameters.
    x: one example (no batch axis).
    key: PRNG key of the noise.
    sigma: noise standard deviation.
    num_samples: number of noise draws (static).
    batch_size: draws classified per step (static; the last step is masked).
    num_classes: ``K`` (static).

  Returns:
    ``int32[K]`` counts summing to ``num_samples``.
  """
  batch = min(batch_size, num_samples)
  num_batches = -(-num_samples // batch)

  def body(counts, i):
    noise = jax.random.normal(jax.random.fold_in(key, i), (batch,) + x.shape,
                              x.dtype)
    pred = jnp.argmax(logits_fn(params, x[None] + sigma * noise), axis=-1)
    real = (i * batch + jnp.arange(batch)) < num_samples
    hits = jax.nn.one_hot(pred, num_classes, dtype=jnp.int32) * real[:, None]
    return counts + jnp.sum(hits, axis=0), None

  counts, _ = jax.lax.scan(body, jnp.zeros((num_classes,), jnp.int32),
                           jnp.arange(num_batches))
  return counts


def _num_classes(logits_fn, params, x) -> int:
  return int(jax.eval_shape(lambda: logits_fn(params, x[:1])).shape[-1])


def smoothed_predict(logits_fn: Callable, params: Any, x: Array, key: Array, *,
                     sigma: float, num_samples: int = 100_000,
                     alpha: float = 0.001, batch_size: int = 1000) -> Array:
  """Cohen et al.'s PREDICT: the top class, or abstain (-1) if not significant.

  Counts ``num_samples`` noisy predictions; with ``n_A, n_B`` the two largest
  counts, returns the top class when the two-sided binomial test of ``n_A``
  out of ``n_A + n_B`` against 1/2 has p-value ``<= alpha``, else -1. The
  probability of returning a class other than ``g(x)`` is at most ``alpha``.

  Args:
    logits_fn: ``logits_fn(params, x) -> [B, K]``.
    params: model parameters.
    x: examples ``[B, ...]``.
    key: PRNG key.
    sigma: noise level.
    num_samples: noise draws per example.
    alpha: significance level.
    batch_size: draws per jitted step.

  Returns:
    ``int32[B]`` predictions with -1 for abstentions (numpy; the test runs
    in float64 on the host-side counts).
  """
  _check(sigma, num_samples, alpha)
  num_classes = _num_classes(logits_fn, params, x)
  return _predict_batch(logits_fn, params, x, key, sigma, alpha, num_samples,
                        batch_size, num_classes)


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _counts_batch(logits_fn, params, x, key, sigma, num_samples, batch_size,
                  num_classes):
  """``int32[B, K]`` counts of each example (one ``lax.map`` over examples)."""
  def one(args):
    xi, k = args
    return sample_counts(logits_fn, params, xi, k, sigma=sigma,
                         num_samples=num_samples, batch_size=batch_size,
                         num_classes=num_classes)

  keys = jax.random.split(key, x.shape[0])
  return jax.lax.map(one, (x, keys))


@jax.jit
def _cp_radius(count, n, alpha, sigma):
  p_lower = clopper_pearson_lower(count, n, alpha)
  radius = sigma * ndtri(jnp.clip(p_lower, 0.5, 1.0))
  return p_lower, jnp.where(p_lower >= 0.5, radius, 0.0)


_binomial_pvalue = jax.jit(lambda k, n: binomial_two_sided_pvalue(k, n))


def _predict_batch(logits_fn, params, x, key, sigma, alpha, num_samples,
                   batch_size, num_classes):
  counts = np.asarray(_counts_batch(logits_fn, params, x, key, sigma,
                                    num_samples, batch_size, num_classes))
  order = np.argsort(-counts, axis=1, kind="stable")
  n_a = np.take_along_axis(counts, order[:, :1], 1)[:, 0].astype(np.int64)
  n_b = np.take_along_axis(counts, order[:, 1:2], 1)[:, 0].astype(np.int64)
  with jax.enable_x64(True):
    pvalue = np.asarray(_binomial_pvalue(n_a, n_a + n_b))
  return np.where(pvalue <= alpha, order[:, 0], ABSTAIN).astype(np.int32)


def certify(logits_fn: Callable, params: Any, x: Array, key: Array, *,
            sigma: float, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
            batch_size: int = 1000) -> Certificate:
  """Cohen et al.'s CERTIFY on each example of ``x``.

  ``c_A`` = the most frequent class among ``n0`` noisy predictions
  (selection); ``p_A_lower`` = the one-sided ``(1 - alpha)`` Clopper-Pearson
  lower bound of ``c_A``'s frequency among ``n`` fresh ones (estimation);
  abstain if ``p_A_lower < 1/2``, else return ``c_A`` with radius ``sigma *
  Phi^-1(p_A_lower)``. With probability at least ``1 - alpha`` a returned
  class is ``g(x)`` and ``g`` is constant on that L2 ball. Examples run one
  after another (``lax.map``) and each one's noise in batches of
  ``batch_size`` (``lax.scan``), all inside one jitted function.

  Args:
    logits_fn: ``logits_fn(params, x) -> [B, K]`` (eval mode).
    params: model parameters.
    x: examples ``[B, ...]``.
    key: PRNG key.
    sigma: noise level.
    n0: selection samples.
    n: estimation samples.
    alpha: failure probability.
    batch_size: noise draws per step.

  Returns:
    A :class:`Certificate` of ``[B]`` numpy arrays.

  Raises:
    ValueError: ``sigma <= 0``, sample counts < 1 or ``alpha`` outside (0, 1).
  """
  _check(sigma, n, alpha)
  if int(n0) < 1:
    raise ValueError(f"n0 must be >= 1; got {n0}.")
  num_classes = _num_classes(logits_fn, params, x)
  return _certify_batch(logits_fn, params, x, key, sigma, alpha, int(n0),
                        int(n), int(batch_size), num_classes)


def _certify_batch(logits_fn, params, x, key, sigma, alpha, n0, n, batch_size,
                   num_classes):
  select_key, estimate_key = jax.random.split(key)
  counts0 = np.asarray(_counts_batch(logits_fn, params, x, select_key, sigma,
                                     n0, batch_size, num_classes))
  c_a = np.argmax(counts0, axis=1)
  counts = np.asarray(_counts_batch(logits_fn, params, x, estimate_key, sigma,
                                    n, batch_size, num_classes))
  n_a = counts[np.arange(len(c_a)), c_a].astype(np.int64)
  with jax.enable_x64(True):
    p_lower, radius = (np.asarray(v) for v in _cp_radius(
        n_a, np.int64(n), np.float64(alpha), np.float64(sigma)))
  certified = p_lower >= 0.5
  return Certificate(np.where(certified, c_a, ABSTAIN).astype(np.int32),
                     radius.astype(np.float64), p_lower.astype(np.float64),
                     n_a)


def _check(sigma, num_samples, alpha) -> None:
  if not sigma > 0:
    raise ValueError(f"sigma must be > 0; got {sigma}.")
  if int(num_samples) < 1:
    raise ValueError(f"the number of samples must be >= 1; got {num_samples}.")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1); got {alpha}.")


def certified_accuracy(certificate: Certificate, labels, radii) -> Array:
  """Fraction of examples certified correct at each radius in ``radii``.

  An example counts at radius ``r`` when its prediction equals its label and
  its certified radius is ``>= r`` (Cohen et al., Sec. 4); abstentions never
  count.

  Returns:
    ``f32[len(radii)]``.
  """
  labels = jnp.asarray(labels)
  radii = jnp.asarray(radii, jnp.float32)
  correct = certificate.prediction == labels
  ok = correct[None, :] & (certificate.radius[None, :] >= radii[:, None])
  return jnp.mean(ok.astype(jnp.float32), axis=1)
