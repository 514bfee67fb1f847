"""Full-knowledge local model poisoning attacks of Fang et al. (USENIX Security 2020).

Fang et al. attack local *models* ``w_i`` around the current global model
``w_Re``; here rows are *updates* ``u_i = w_i - w_Re``, so ``w_Re`` is the
origin. The "change direction" ``s_j`` of global parameter ``j`` without attack
is estimated by the sign of the honest mean update (the aggregate an honest
round would apply), and the attacks push the aggregate against it.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax.scipy import special

from robustfl_jax.attacks import _common
from robustfl_jax.attacks._registry import register_attack

Array = jax.Array


@register_attack()
def fang_trimmed_mean(key: Array, updates: Array, byzantine_mask: Array,
                      b: Any = 2.0) -> Array:
  """Fang et al.'s full-knowledge attack on trimmed mean and coordinate median.

  Per coordinate ``j``, with ``s_j = sign(honest mean_j)`` and ``w_max,j`` /
  ``w_min,j`` the largest / smallest honest values, each Byzantine value is
  drawn uniformly from

  * ``[w_max,j, b * w_max,j]`` (``w_max,j > 0``) or ``[w_max,j, w_max,j / b]``
    (``w_max,j <= 0``) when ``s_j = -1``: just above every honest value, so the
    trimmed mean or median moves up, against the honest direction;
  * ``[w_min,j / b, w_min,j]`` (``w_min,j > 0``) or ``[b * w_min,j, w_min,j]``
    (``w_min,j <= 0``) otherwise (``s_j`` in {0, +1}): just below them.

  The same attack is used against the coordinate-wise median in the paper.

  References:
    M. Fang, X. Cao, J. Jia, N. Gong. Local Model Poisoning Attacks to
    Byzantine-Robust Federated Learning. USENIX Security 2020 (Section 3.4,
    "Attacking Trimmed Mean", full knowledge).

  Args:
    key: PRNG key for the uniform draws (one per Byzantine row and coordinate).
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.
    b: interval scale, > 1 (the paper uses 2).

  Returns:
    ``[n, d]`` updates with Byzantine rows crafted as above.

  Raises:
    ValueError: if ``b`` is a Python number <= 1.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: the extremes and the
    direction are taken over all rows. A coordinate whose honest extreme is 0
    gets the degenerate interval ``[0, 0]``.
  """
  updates, byzantine_mask = _common.check_inputs("fang_trimmed_mean", updates, byzantine_mask)
  if _common.is_python_number(b) and not b > 1:
    raise ValueError(f"fang_trimmed_mean needs b > 1; got b={b}.")
  return _fang_trimmed_mean(key, updates, byzantine_mask, b)


def fang_krum_scores(updates: Array, num_byzantine: Any) -> Array:
  """Krum scores as Fang et al.'s attack evaluates them, from raw updates.

  The sum of the ``n - f - 2`` smallest squared distances from each row to the
  other rows (Blanchard et al. 2017). Unlike
  :func:`robustfl_jax.aggregators.krum_scores` (which scores a precomputed
  distance matrix over candidate rows), ``f`` may be traced, so the attack's
  search over ``lambda`` compiles once; distances are direct differences
  (:func:`direct_pairwise_sq_distances`), exact for nearly equal rows.
  """
  n = updates.shape[0]
  dist = _common.direct_pairwise_sq_distances(updates)
  dist = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, dist)
  nearest = jnp.sort(dist, axis=1)[:, : n - 1]
  k = n - 2 - jnp.asarray(num_byzantine)
  return jnp.sum(jnp.where(jnp.arange(n - 1) < k, nearest, 0), axis=1)


def _lambda_upper_bound(x: Array, rows: Array, num_byzantine: Array) -> Array:
  """Fang et al.'s upper bound on lambda, in update space (``w_Re = 0``):

  ``1 / ((n - 2f - 1) sqrt(d)) * min_{i honest} sum_{l in Gamma_i} D(u_l, u_i)
  + 1 / sqrt(d) * max_{i honest} ||u_i||``, ``Gamma_i`` the ``n - f - 2`` honest
  rows closest to ``u_i`` and ``D`` the Euclidean distance.
  """
  n, d = x.shape
  ct = x.dtype
  dist = jnp.sqrt(_common.direct_pairwise_sq_distances(x))
  pair_ok = rows[:, None] & rows[None, :] & ~jnp.eye(n, dtype=bool)
  nearest = jnp.sort(jnp.where(pair_ok, dist, jnp.inf), axis=1)[:, : n - 1]
  k = n - 2 - num_byzantine
  sums = jnp.sum(jnp.where((jnp.arange(n - 1) < k) & jnp.isfinite(nearest), nearest, 0), axis=1)
  min_sum = jnp.min(jnp.where(rows, sums, jnp.inf))
  denom = jnp.maximum(n - 2 * num_byzantine - 1, 1).astype(ct)
  max_norm = jnp.max(jnp.where(rows, jnp.linalg.norm(x, axis=1), 0))
  sqrt_d = jnp.sqrt(jnp.asarray(d, ct))
  return min_sum / (denom * sqrt_d) + max_norm / sqrt_d


@register_attack()
def fang_krum(key: Array, updates: Array, byzantine_mask: Array,
              num_byzantine: Optional[int] = None, epsilon: Any = 0.01,
              threshold: Any = 1e-5, max_halvings: int = 64) -> Array:
  """Fang et al.'s full-knowledge attack on Krum (the lambda halving search).

  The first Byzantine row becomes ``-lambda * s`` (``s = sign(honest mean)``,
  i.e. ``w'_1 = w_Re - lambda s`` in update space) and every other Byzantine
  row is placed near it, at a random offset of norm at most
  ``epsilon * lambda * sqrt(d)`` (``epsilon`` times the crafted row's norm, so
  the placement is scale-free; ``epsilon=0`` gives exact copies). ``lambda``
  starts at the paper's upper bound (see ``_lambda_upper_bound``) and is halved
  until Krum, run on the poisoned rows, selects a Byzantine row, or until
  ``lambda < threshold`` (the paper's failure exit; the last ``lambda`` is used).

  References:
    M. Fang, X. Cao, J. Jia, N. Gong. Local Model Poisoning Attacks to
    Byzantine-Robust Federated Learning. USENIX Security 2020 (Section 3.3,
    "Attacking Krum", full knowledge).

  Args:
    key: PRNG key for the offsets of the other Byzantine rows.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.
    num_byzantine: static ``f`` used both by the attacked Krum and by the
      bound; ``None`` uses the number of Byzantine rows (may be traced).
    epsilon: relative radius of the other Byzantine rows around the first, >= 0.
    threshold: smallest lambda tried (the paper's ``1e-5``), > 0.
    max_halvings: static cap on the halvings (a safety bound for the loop).

  Returns:
    ``[n, d]`` updates with Byzantine rows crafted as above.

  Raises:
    ValueError: if a static ``num_byzantine`` violates Krum's ``n > 2f + 2``,
      or ``epsilon``/``threshold``/``max_halvings`` are out of range.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: the direction and bound
    come from all rows and Krum trivially selects a Byzantine row, so lambda
    is the upper bound. If Krum never selects a Byzantine row the crafted rows
    end at ``lambda < threshold``, i.e. next to the origin.
  """
  updates, byzantine_mask = _common.check_inputs("fang_krum", updates, byzantine_mask)
  n, d = updates.shape
  if num_byzantine is not None:
    num_byzantine = _common.static_int("fang_krum", "num_byzantine", num_byzantine)
    if n <= 2 * num_byzantine + 2:
      raise ValueError(
          f"fang_krum attacks Krum, which needs n > 2f + 2; got n={n}, f={num_byzantine}.")
  _common.check_positive("fang_krum", "epsilon", epsilon, strict=False)
  _common.check_positive("fang_krum", "threshold", threshold)
  max_halvings = _common.static_int("fang_krum", "max_halvings", max_halvings)

  return _fang_krum(key, updates, byzantine_mask, num_byzantine, epsilon,
                    threshold, max_halvings)


@functools.partial(jax.jit, static_argnames=("num_byzantine", "max_halvings"))
def _fang_krum(key, updates, byzantine_mask, num_byzantine, epsilon, threshold,
               max_halvings):
  n, d = updates.shape
  ct = _common.compute_dtype(updates.dtype)
  x = updates.astype(ct)
  rows = _common.reference_mask(byzantine_mask)
  f = (jnp.sum(byzantine_mask).astype(jnp.int32) if num_byzantine is None
       else jnp.asarray(num_byzantine, jnp.int32))
  direction = jnp.sign(_common.masked_mean(x, rows))

  first = jnp.argmax(byzantine_mask)
  # One draw gives both a uniform direction (first d columns) and a uniform
  # radius in (0, 1) (the normal CDF of the last column).
  draw = jax.random.normal(key, (n, d + 1), ct)
  noise = draw[:, :d] / jnp.maximum(jnp.linalg.norm(draw[:, :d], axis=1, keepdims=True), 1e-30)
  radius = special.ndtr(draw[:, d:])
  offsets = noise * radius * jnp.asarray(epsilon, ct) * jnp.sqrt(jnp.asarray(d, ct))
  offsets = jnp.where((jnp.arange(n) == first)[:, None], 0, offsets)

  def poisoned(lam):
    return jnp.where(byzantine_mask[:, None], lam * (offsets - direction), x)

  def krum_picks_byzantine(lam):
    return byzantine_mask[jnp.argmin(fang_krum_scores(poisoned(lam), f))]

  threshold = jnp.asarray(threshold, ct)

  def cond(state):
    lam, selected, i = state
    return (~selected) & (lam >= threshold) & (i < max_halvings)

  def body(state):
    lam, _, i = state
    lam = lam / 2
    return lam, krum_picks_byzantine(lam), i + 1

  lam0 = _lambda_upper_bound(x, rows, f)
  lam, _, _ = jax.lax.while_loop(cond, body, (lam0, krum_picks_byzantine(lam0), 0))
  return _common.replace_rows(updates, byzantine_mask, poisoned(lam))


@register_attack()
def fang_deviation(key: Array, updates: Array, byzantine_mask: Array,
                   lambda_scale: Any = 10.0) -> Array:
  """Fang et al.'s directed deviation with an unbounded lambda (UPA, eq. 2).

  Every Byzantine row becomes ``-lambda * s`` with ``s = sign(honest mean)``
  (Romoa's eq. 2, ``w' = w_Re - lambda s``, in update space) and
  ``lambda = lambda_scale * max_{i honest} ||u_i|| / sqrt(d)`` (the
  root-mean-square coordinate of the largest honest update). Deviation from
  Fang et al.: no search and no upper bound. Their bound is tailored to Krum
  (:func:`fang_krum`), and their trimmed-mean attack stays inside the honest
  range; against the plain mean, Romoa and RFA neither applies, and eq. 2 of
  Romoa gives no bound, so ``lambda`` is a stated multiple of the honest
  scale (recorded per run by the tables).

  Args:
    key: unused (deterministic).
    updates: ``[n, d]``.
    byzantine_mask: ``bool[n]``.
    lambda_scale: > 0.

  Returns:
    ``[n, d]`` with the Byzantine rows crafted.
  """
  del key
  updates, byzantine_mask = _common.check_inputs("fang_deviation", updates,
                                                 byzantine_mask)
  _common.check_positive("fang_deviation", "lambda_scale", lambda_scale)
  ct = _common.compute_dtype(updates.dtype)
  x = updates.astype(ct)
  rows = _common.reference_mask(byzantine_mask)
  direction = jnp.sign(_common.masked_mean(x, rows))
  norms = jnp.where(rows, jnp.linalg.norm(x, axis=1), 0)
  lam = (jnp.asarray(lambda_scale, ct) * jnp.max(norms)
         / jnp.sqrt(jnp.asarray(x.shape[1], ct)))
  crafted = jnp.broadcast_to(-lam * direction, x.shape)
  return _common.replace_rows(updates, byzantine_mask, crafted)


@jax.jit
def _fang_trimmed_mean(key, updates, byzantine_mask, b):
  ct = _common.compute_dtype(updates.dtype)
  x = updates.astype(ct)
  b = jnp.asarray(b, ct)
  rows = _common.reference_mask(byzantine_mask)
  direction = jnp.sign(_common.masked_mean(x, rows))
  w_max = jnp.max(jnp.where(rows[:, None], x, -jnp.inf), axis=0)
  w_min = jnp.min(jnp.where(rows[:, None], x, jnp.inf), axis=0)
  up_lo, up_hi = w_max, jnp.where(w_max > 0, b * w_max, w_max / b)
  down_lo, down_hi = jnp.where(w_min > 0, w_min / b, b * w_min), w_min
  lo = jnp.where(direction < 0, up_lo, down_lo)
  hi = jnp.where(direction < 0, up_hi, down_hi)
  u = jax.random.uniform(key, x.shape, ct)
  return _common.replace_rows(updates, byzantine_mask, lo + u * (hi - lo))
