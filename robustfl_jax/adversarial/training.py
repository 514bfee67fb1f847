"""Adversarial-training objectives for the clients' local training.

Each objective follows :data:`robustfl_jax.fl.local.TrainLoss`,
``train_loss(logits_fn, params, x, y, mask, key, aux) -> scalar``, so it plugs
into ``make_local_train(..., train_loss=)`` / ``make_round_fn(...,
train_loss=)`` and every client of a federated round trains adversarially
inside the one vmapped, jitted round. Padded examples (``mask`` False) are
left out of the loss. The inner maximisation is not differentiated through
(its result passes ``stop_gradient``), as in Madry et al. and TRADES.

* ``pgd`` (Madry et al.): the cross-entropy of PGD examples.
* ``mix`` (the seed tutorial): ``0.5 CE(clean) + 0.5 CE(PGD)``.
* ``trades`` (Zhang et al.): ``CE(clean) + beta * KL(p(clean) || p(adv))``,
  ``adv`` maximising that KL by sign-gradient steps from ``x + 0.001 N(0, I)``.
* ``gaussian`` (Cohen et al.): the cross-entropy of ``x + N(0, sigma^2 I)``,
  the training that makes randomized smoothing certify large radii.

The attack inside training runs the model through ``logits_fn``, i.e. in
training mode (for models with dropout the attack sees dropout too).

References:
  Madry, A. et al.: Towards deep learning models resistant to adversarial
  attacks. ICLR (2018).
  Zhang, H. et al.: Theoretically principled trade-off between robustness and
  accuracy. ICML (2019) -- TRADES.
  Cohen, J., Rosenfeld, E., Kolter, Z.: Certified adversarial robustness via
  randomized smoothing. ICML (2019).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from robustfl_jax.adversarial import evasion

Array = jax.Array

METHODS = ("none", "pgd", "mix", "trades", "gaussian")


def _masked_mean(values: Array, mask: Array) -> Array:
  weights = mask.astype(values.dtype)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _pgd_examples(logits_fn, params, x, y, key, epsilon, step_size, num_steps,
                  norm, clip_min, clip_max):
  frozen = jax.lax.stop_gradient(params)
  x_adv = evasion.pgd(logits_fn, frozen, x, y, key, epsilon=epsilon,
                          step_size=step_size, num_steps=num_steps, norm=norm,
                          clip_min=clip_min, clip_max=clip_max)
  return jax.lax.stop_gradient(x_adv)


def madry_loss(logits_fn: Callable, params: Any, x: Array, y: Array,
               mask: Array, key: Array, aux: Any = None, *, epsilon: float,
               step_size: Optional[float] = None, num_steps: int = 10,
               norm: str = "linf", clip_min: float = 0.0,
               clip_max: float = 1.0) -> Array:
  """Madry et al.: mean cross-entropy on PGD examples (random start)."""
  del aux
  x_adv = _pgd_examples(logits_fn, params, x, y, key, epsilon, step_size,
                        num_steps, norm, clip_min, clip_max)
  return _masked_mean(evasion.cross_entropy(logits_fn(params, x_adv), y),
                      mask)


def mix_loss(logits_fn: Callable, params: Any, x: Array, y: Array,
             mask: Array, key: Array, aux: Any = None, *, epsilon: float,
             step_size: Optional[float] = None, num_steps: int = 10,
             norm: str = "linf", clip_min: float = 0.0, clip_max: float = 1.0,
             adversarial_weight: float = 0.5) -> Array:
  """The seed's ``0.5 * CE(clean) + 0.5 * CE(PGD(x))`` (weight adjustable)."""
  del aux
  x_adv = _pgd_examples(logits_fn, params, x, y, key, epsilon, step_size,
                        num_steps, norm, clip_min, clip_max)
  clean = evasion.cross_entropy(logits_fn(params, x), y)
  adv = evasion.cross_entropy(logits_fn(params, x_adv), y)
  return _masked_mean((1.0 - adversarial_weight) * clean
                      + adversarial_weight * adv, mask)


def _kl(p_logits: Array, q_logits: Array) -> Array:
  """Per-example ``KL(softmax(p) || softmax(q))``."""
  log_p = jax.nn.log_softmax(p_logits.astype(jnp.float32))
  log_q = jax.nn.log_softmax(q_logits.astype(jnp.float32))
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def trades_loss(logits_fn: Callable, params: Any, x: Array, y: Array,
                mask: Array, key: Array, aux: Any = None, *, epsilon: float,
                step_size: Optional[float] = None, num_steps: int = 10,
                norm: str = "linf", beta: float = 6.0, clip_min: float = 0.0,
                clip_max: float = 1.0) -> Array:
  """TRADES: ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))``.

  As the authors' code: ``x_adv`` starts at ``x + 0.001 * N(0, I)`` and takes
  ``num_steps`` projected steps (sign of the gradient for L-inf, normalised
  gradient for L2) ascending ``KL(f(x) || f(x_adv))`` with ``f(x)`` held
  fixed; the outer loss differentiates through both ``f(x)`` and
  ``f(x_adv)``. Default step ``2.5 * epsilon / num_steps``.
  """
  del aux
  evasion.check_norm(norm)
  if step_size is None:
    step_size = 2.5 * epsilon / num_steps
  frozen = jax.lax.stop_gradient(params)
  clean_logits_fixed = jax.lax.stop_gradient(logits_fn(frozen, x))

  def kl_sum(xa):
    return jnp.sum(_kl(clean_logits_fixed, logits_fn(frozen, xa)))

  def step(_, xa):
    grad = jax.grad(kl_sum)(xa)
    xa = xa + step_size * evasion.ascent_direction(grad, norm)
    return evasion.project(xa, x, epsilon, norm, clip_min, clip_max)

  x0 = x + 0.001 * jax.random.normal(key, x.shape, x.dtype)
  x0 = evasion.project(x0, x, epsilon, norm, clip_min, clip_max)
  x_adv = jax.lax.stop_gradient(jax.lax.fori_loop(0, num_steps, step, x0))
  clean_logits = logits_fn(params, x)
  natural = evasion.cross_entropy(clean_logits, y)
  robust = _kl(clean_logits, logits_fn(params, x_adv))
  return _masked_mean(natural + beta * robust, mask)


def gaussian_noise_loss(logits_fn: Callable, params: Any, x: Array, y: Array,
                        mask: Array, key: Array, aux: Any = None, *,
                        sigma: float) -> Array:
  """Cohen et al.: cross-entropy on ``x + N(0, sigma^2 I)``.

  The noise is not clipped to the input range, exactly as certification
  samples it (:func:`robustfl_jax.adversarial.smoothing.sample_counts`).
  """
  del aux
  noisy = x + sigma * jax.random.normal(key, x.shape, x.dtype)
  return _masked_mean(optax.softmax_cross_entropy_with_integer_labels(
      logits_fn(params, noisy).astype(jnp.float32), y), mask)


def make_train_loss(method: str, *, epsilon: float = 0.1,
                    step_size: Optional[float] = None, num_steps: int = 10,
                    norm: str = "linf", beta: float = 6.0, sigma: float = 0.25,
                    clip_min: float = 0.0, clip_max: float = 1.0
                    ) -> Optional[Callable]:
  """The local objective of ``method`` (None for ``"none"``: cross-entropy).

  Args:
    method: one of :data:`METHODS`.
    epsilon: attack budget (``pgd``, ``mix``, ``trades``).
    step_size: attack step (default ``2.5 * epsilon / num_steps``).
    num_steps: attack steps.
    norm: ``"linf"`` or ``"l2"``.
    beta: the TRADES trade-off.
    sigma: the Gaussian noise of ``gaussian``.
    clip_min: lower end of the valid input range.
    clip_max: upper end.

  Returns:
    A :data:`robustfl_jax.fl.local.TrainLoss` or None.

  Raises:
    ValueError: unknown method or out-of-range hyper-parameters (messages
      name the ``client.adversarial_training`` field).
  """
  field = "client.adversarial_training"
  if method not in METHODS:
    raise ValueError(f"{field}.method={method!r} is not known; choose one of "
                     f"{METHODS}.")
  if method == "none":
    return None
  if method == "gaussian":
    if not sigma > 0:
      raise ValueError(f"{field}.sigma must be > 0 for method 'gaussian'; "
                       f"got {sigma}.")
    return functools.partial(gaussian_noise_loss, sigma=float(sigma))
  evasion.check_norm(norm, f"{field}.norm")
  if not epsilon > 0:
    raise ValueError(f"{field}.epsilon must be > 0 for method {method!r}; got "
                     f"{epsilon}.")
  if int(num_steps) < 1:
    raise ValueError(f"{field}.steps must be >= 1; got {num_steps}.")
  if step_size is not None and not step_size > 0:
    raise ValueError(f"{field}.step_size must be > 0; got {step_size}.")
  common = dict(epsilon=float(epsilon),
                step_size=None if step_size is None else float(step_size),
                num_steps=int(num_steps), norm=norm, clip_min=clip_min,
                clip_max=clip_max)
  if method == "pgd":
    return functools.partial(madry_loss, **common)
  if method == "mix":
    return functools.partial(mix_loss, **common)
  if not beta >= 0:
    raise ValueError(f"{field}.beta must be >= 0 for TRADES; got {beta}.")
  return functools.partial(trades_loss, beta=float(beta), **common)
