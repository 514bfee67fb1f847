"""Norm clipping: static clipping, adaptive robust clipping and centered clipping."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp
from jax import lax

from robustfl_jax.aggregators import base, columns
from robustfl_jax.aggregators._registry import register, register_pre_aggregator
from robustfl_jax.aggregators._coordinatewise import weighted_row_sum

Array = jax.Array


def _clip_factor(norms: Array, max_norm) -> Array:
  """``min(1, max_norm / norm)``, and 1 for a zero norm (nothing to clip)."""
  safe = jnp.where(norms > 0, norms, 1)
  return jnp.where(norms > max_norm, max_norm / safe, 1)


def mark_excluded(updates: Array, valid: Array) -> Array:
  """Pre-aggregator output convention: excluded rows become NaN rows."""
  return jnp.where(valid[:, None], updates, jnp.asarray(jnp.nan, updates.dtype))


@register_pre_aggregator("clip_by_norm", row_wise=True)
def clip_by_norm(updates: Array, max_norm: float, mask: Optional[Array] = None) -> Array:
  """Pre-aggregator: scales each row to L2 norm at most ``max_norm``.

  Args:
    updates: ``[n, d]`` client updates.
    max_norm: clipping radius, ``>= 0``.
    mask: optional ``bool[n]``; False rows are returned as NaN rows so that
      the next rule excludes them.

  Returns:
    ``[n, d]``: ``u_i * min(1, max_norm / |u_i|)``; zero rows stay zero;
    non-finite rows stay non-finite (excluded downstream).
  """
  updates = base.as_updates(updates, "clip_by_norm")
  if not max_norm >= 0:
    raise ValueError(f"clip_by_norm: max_norm must be >= 0; got {max_norm}.")
  valid = base.valid_rows(updates, mask)
  factor = _clip_factor(base.row_norms_of(base.zero_invalid, updates, valid), max_norm)
  return mark_excluded((updates * factor[:, None].astype(updates.dtype)), valid)


def check_arc(n: int, num_byzantine) -> int:
  f = base.check_int(num_byzantine, "num_byzantine", "arc")
  if 2 * f >= n:
    raise ValueError(f"arc needs n > 2f; got n={n}, f={f}.")
  return f


@register_pre_aggregator("arc", rows_check=check_arc, row_wise=True)
def arc(updates: Array, num_byzantine: int, mask: Optional[Array] = None) -> Array:
  """Adaptive Robust Clipping (ARC), a pre-aggregator (Allouah et al. 2025).

  With ``k = floor(2 (f/n) (n - f))``, every row is clipped to the norm of the
  ``(k+1)``-th largest row norm, i.e. the ``k`` largest rows are scaled down
  to that norm and the others are unchanged.

  Guarantees: composed with an (f, kappa)-robust rule the result stays
  (f, O(kappa))-robust, and the largest honest norms bound the Byzantine ones.

  Args:
    updates: ``[n, d]`` client updates.
    num_byzantine: static int ``f``, ``n > 2f``.
    mask: optional ``bool[n]``; excluded rows come back as NaN rows.

  Returns:
    ``[n, d]`` clipped updates.

  Edge cases: ``f = 0`` clips nothing. Excluded rows do not enter the norm
  ranking; ``k`` is computed from the full ``n`` and clamped to the number of
  valid rows minus one.

  References:
    Allouah, Guerraoui, Gupta, Pinot, Rizk, "Boosting Robustness by Clipping
    Gradients in Distributed Learning", ICLR 2025 (arXiv:2405.14432).
  """
  updates = base.as_updates(updates, "arc")
  n = updates.shape[0]
  f = check_arc(n, num_byzantine)
  num_clipped = int((2 * f * (n - f)) // n)
  valid = base.valid_rows(updates, mask)
  norms = base.row_norms_of(base.zero_invalid, updates, valid)
  sorted_desc = -jnp.sort(-jnp.where(valid, norms, -jnp.inf))
  k = jnp.minimum(num_clipped, jnp.maximum(jnp.sum(valid) - 1, 0))
  threshold = sorted_desc[k]
  factor = _clip_factor(norms, threshold)
  return mark_excluded(updates * factor[:, None].astype(updates.dtype), valid)


def _centered_clipping(updates, center=None, radius=10.0, num_iters=1, mask=None):
  updates = base.as_updates(updates, "centered_clipping")
  num_iters = base.check_int(num_iters, "num_iters", "centered_clipping", minimum=1)
  if not radius > 0:
    raise ValueError(f"centered_clipping: radius must be > 0; got {radius}.")
  n, d = updates.shape
  dtype = base.compute_dtype(updates.dtype)
  valid = base.valid_rows(updates, mask)
  values = updates  # not zeroed (a copy): every pass excludes invalid rows
  if center is None:
    center = jnp.zeros((d,), dtype)
  center = jnp.asarray(center, dtype)
  if center.shape != (d,):
    raise ValueError(f"centered_clipping: center must have shape [d]=({d},); got "
                     f"{center.shape}.")
  center = jnp.where(jnp.isfinite(center), center, 0)
  count = jnp.maximum(jnp.sum(valid), 1).astype(dtype)

  def step(_, v):
    diff_norms = columns.row_norms(
        lambda u, c: jnp.where(valid[:, None], u.astype(dtype) - c, 0),
        values, v)
    factor = jnp.where(valid, _clip_factor(diff_norms, radius), 0) / count
    # v + sum_i c_i (u_i - v) = (1 - sum_i c_i) v + sum_i c_i u_i: one matmul.
    return (1 - jnp.sum(factor)) * v + columns.map_columns(
        lambda u: weighted_row_sum(u.astype(dtype), factor, valid), values)

  out = lax.fori_loop(0, num_iters, step, center)
  out = jnp.where(jnp.any(valid), out, center)
  return out.astype(updates.dtype), {}


def centered_clipping(updates: Array, center: Optional[Array] = None,
                      radius: float = 10.0, num_iters: int = 1,
                      mask: Optional[Array] = None) -> Array:
  """Centered clipping (Karimireddy, He, Jaggi 2021).

  Starting from ``v_0 = center``, iterates
  ``v_{l+1} = v_l + (1/k) sum_i (u_i - v_l) min(1, radius / |u_i - v_l|)``
  over the ``k`` valid rows. In the paper the center is the previous round's
  aggregate (worker momentum makes it a good guess); the stateful version is
  ``aggregators.get("centered_clipping")``, whose state carries it.

  Guarantees: each Byzantine row moves the output by at most
  ``radius / k`` per iteration, whatever its value.

  Args:
    updates: ``[n, d]`` client updates.
    center: ``[d]`` starting point (zeros if None).
    radius: clipping radius ``tau > 0``.
    num_iters: static number of iterations ``L >= 1``.
    mask: optional ``bool[n]``; False rows are excluded.

  Returns:
    ``[d]`` aggregate; ``center`` if no row is valid.

  Edge cases: a row equal to the current center has distance 0 and factor 1
  (no division by zero); a non-finite center is replaced by zeros.

  References:
    Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust
    Optimization", ICML 2021.
  """
  return _centered_clipping(updates, center, radius, num_iters, mask)[0]


class CenteredClippingState(NamedTuple):
  """State of stateful centered clipping: the previous aggregate."""
  center: Array


@register("centered_clipping")
def centered_clipping_aggregator(*, radius: float = 10.0, num_iters: int = 1
                                 ) -> base.Aggregator:
  """Centered clipping whose center is the previous round's aggregate.

  The stateful form of :func:`centered_clipping` that Karimireddy et al. run:
  the state carries the last aggregate (zeros before the first round).

  Args:
    radius: clipping radius ``tau > 0``.
    num_iters: static number of iterations ``L >= 1``.

  Returns:
    ``Aggregator(init, update)`` with :class:`CenteredClippingState`.

  Raises:
    ValueError: ``radius <= 0`` or ``num_iters < 1``.
  """
  _centered_clipping(jnp.zeros((1, 1)), None, radius, num_iters)  # validates

  def init(params: Any) -> CenteredClippingState:
    flat = (params if isinstance(params, jax.Array) and params.ndim == 1
            else jax.flatten_util.ravel_pytree(params)[0])
    return CenteredClippingState(jnp.zeros_like(flat))

  def update(updates, state, *, key=None, mask=None, weights=None, **context):
    del key, weights, context
    out, extra = _centered_clipping(updates, state.center, radius, num_iters,
                                    mask)
    return out, CenteredClippingState(out.astype(state.center.dtype)), extra

  return base.Aggregator(init, update)
