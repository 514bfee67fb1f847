"""Mean and the coordinate-wise robust statistics: median, trimmed mean, Meamed.

Excluded rows (``mask`` False or non-finite) are dropped: each rule returns the
statistic of the remaining ``k`` rows, where ``k`` is only known at run time.
The rules are written so that they only need order statistics at *static*
ranks (see :mod:`._order_statistics`):

* the median of ``k`` valid rows is read off three central ranks of the
  ``n`` rows after half of the excluded rows are set to -inf and half to +inf;
* the trimmed mean uses the identity, for sorted ``v`` and
  ``L = v[t]``, ``H = v[k-1-t]``::

      sum_{t <= j < k-t} v[j] = sum_j clip(v[j], L, H) - t * (L + H)

  with ``L`` the ``t``-th rank after excluded rows are set to +inf and ``H``
  the ``t``-th rank from the top after they are set to -inf;
* Meamed's ``m`` values closest to the median are those whose distance to it
  is below the ``m``-th smallest distance (ties at that distance share the
  remaining slots equally, which keeps the rule permutation invariant).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from robustfl_jax.aggregators import base, columns
from robustfl_jax.aggregators._registry import register_rule
from robustfl_jax.aggregators._order_statistics import (
    callback_trimmed_sum, order_statistics, resolve_method)

Array = jax.Array


def weighted_row_sum(updates: Array, weights: Array, valid: Array) -> Array:
  """``sum_i weights[i] * updates[i]`` over valid rows, as one matmul.

  ``0 * NaN`` is NaN, so excluded rows must be zeroed before the matmul; the
  zeroing pass is only paid when some row is actually excluded.
  """
  dtype = base.compute_dtype(updates.dtype)
  weights = jnp.where(valid, weights, 0).astype(dtype)

  def plain(u):
    return jnp.matmul(weights, u.astype(dtype), precision=lax.Precision.HIGHEST)

  def zeroed(u):
    return plain(base.zero_invalid(u, valid))

  return lax.cond(jnp.all(valid), plain, zeroed, updates)


def _fill_invalid(updates: Array, valid: Array, fill) -> Array:
  return jnp.where(valid[:, None], updates, jnp.asarray(fill, updates.dtype))


def _sum_rows(values: Array, valid: Array, fn, method: str):
  """``sum_i [valid_i] fn(values[i])`` per coordinate; ``fn`` is elementwise.

  ``fn`` usually closes over per-coordinate order statistics. XLA on CPU
  fuses such a statistic into any ``[n, d]`` consumer and recomputes the
  whole comparator network once per row (measured: 7.8 s instead of 0.1 s
  for the trimmed mean at 64 x 2**20). Summing ``[d]`` rows keeps every
  consumer ``[d]``-shaped, so the network runs once per coordinate. This is
  a lowering device over the rows of one array, not per-client logic.
  """
  method = resolve_method(method, values.shape[0])
  if method == "network":
    return _unrolled_row_sum(values, valid, fn, range(values.shape[0]))
  if method == "callback":
    return _blocked_row_sum(values, valid, fn)
  terms = fn(values)
  return jax.tree.map(lambda t: jnp.sum(jnp.where(valid[:, None], t, 0), axis=0), terms)


def _unrolled_row_sum(values, valid, fn, rows, start=None):
  """``sum_{i in rows} [valid_i] fn(values[start + i])`` as one fused loop."""
  total = None
  for i in rows:
    if start is None:
      row, ok = values[i], valid[i]
    else:
      row = lax.dynamic_index_in_dim(values, start + i, keepdims=False)
      ok = lax.dynamic_index_in_dim(valid, start + i, keepdims=False)
    term = jax.tree.map(lambda t, ok=ok: jnp.where(ok, t, 0), fn(row))
    total = term if total is None else jax.tree.map(jnp.add, total, term)
  return total


# Rows per step of the blocked row sum: each step is one fused loop over the
# coordinates, so the program stays small for any row count.
_ROW_BLOCK = 64


def _blocked_row_sum(values, valid, fn):
  """:func:`_sum_rows` past the network's size: a loop over blocks of rows.

  On CPU, ``jnp.sum(axis=0)`` of an ``[n, d]`` term is a slow column
  reduction (measured at 256 x 1e5: 6x slower than summing unrolled rows,
  3x slower than a matmul by the mask); fully unrolling 1,000 rows makes the
  compile slow. Blocks of :data:`_ROW_BLOCK` unrolled rows in a ``fori_loop``
  keep both small.
  """
  n = values.shape[0]
  blocks, rest = divmod(n, _ROW_BLOCK)
  total = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(fn, values[0]))
  if blocks:
    def body(b, acc):
      part = _unrolled_row_sum(values, valid, fn, range(_ROW_BLOCK), b * _ROW_BLOCK)
      return jax.tree.map(jnp.add, acc, part)
    total = lax.fori_loop(0, blocks, body, total)
  if rest:
    part = _unrolled_row_sum(values, valid, fn, range(blocks * _ROW_BLOCK, n))
    total = jax.tree.map(jnp.add, total, part)
  return total


@register_rule("mean")
@columns.columnwise
def _mean(updates, weights=None, mask=None):
  updates = base.as_updates(updates, "mean")
  n = updates.shape[0]
  dtype = base.compute_dtype(updates.dtype)
  w = jnp.ones((n,), dtype) if weights is None else jnp.asarray(weights, dtype)
  if w.shape != (n,):
    raise ValueError(f"mean: weights must have shape [n]=({n},); got {w.shape}.")
  w = jnp.where(jnp.isfinite(w) & (w > 0), w, 0)
  mask = base.check_mask(mask, n)
  if mask is not None:
    w = jnp.where(mask, w, 0)

  def normalised(wv):
    total = jnp.sum(wv)
    return jnp.where(total > 0, wv / jnp.where(total > 0, total, 1), 0)

  # Fast path: one matmul; only if a non-finite row had weight does the
  # result go non-finite, and then the rows are checked and excluded.
  p = normalised(w)
  fast = jnp.matmul(p, updates.astype(dtype), precision=lax.Precision.HIGHEST)

  def slow(_):
    valid = base.valid_rows(updates) & (w > 0)
    return weighted_row_sum(updates, normalised(jnp.where(valid, w, 0)), valid)

  out = lax.cond(jnp.all(jnp.isfinite(fast)), lambda _: fast, slow, None)
  used = normalised(jnp.where(base.valid_rows(updates), w, 0))
  return out.astype(updates.dtype), {"weights": used, "selected": used > 0}


def mean(updates: Array, weights: Optional[Array] = None,
         mask: Optional[Array] = None) -> Array:
  """(Weighted) mean of the valid rows.

  Not robust: one Byzantine row moves it arbitrarily far (breakdown point 0).
  It still never propagates non-finite values: NaN/Inf rows are dropped.

  Args:
    updates: ``[n, d]`` client updates.
    weights: optional ``[n]`` non-negative weights (e.g. sample counts);
      non-finite or negative weights count as 0.
    mask: optional ``bool[n]``; False rows are excluded.

  Returns:
    ``[d]``: ``sum_i w_i u_i / sum_i w_i`` over valid rows; zeros if none.

  Edge cases: all rows excluded -> zeros. Fast path is a single matmul
  (``jnp.sum(axis=0)`` is slow on CPU); excluded rows cost one extra pass.
  """
  return _mean(updates, weights, mask)[0]


def _median_from_valid(updates: Array, valid: Array, method: str = "auto") -> Array:
  """Coordinate median of the valid rows (average of the two middle values)."""
  n = updates.shape[0]
  invalid = ~valid
  num_invalid = jnp.sum(invalid)
  # The first floor(num_invalid / 2) excluded rows go to -inf, the rest to +inf.
  rank_among_invalid = jnp.cumsum(invalid) - 1
  to_low = invalid & (rank_among_invalid < num_invalid // 2)
  fill = jnp.where(to_low, -jnp.inf, jnp.inf).astype(updates.dtype)
  ranks = (max(n // 2 - 1, 0), (n - 1) // 2, n // 2)

  def middle(values):
    return tuple(order_statistics(values, ranks, method))

  def filled():
    return middle(jnp.where(valid[:, None], updates, fill[:, None]))

  if resolve_method(method, n) == "callback":
    # The host reads XLA's buffer of the input itself when no row is
    # excluded (the common case): no filled [n, d] copy is written.
    lo, mid, hi = lax.cond(jnp.all(valid), lambda: middle(updates), filled)
  else:
    lo, mid, hi = filled()
  odd = (num_invalid % 2) == 1
  a = jnp.where(odd, lo, mid).astype(base.compute_dtype(updates.dtype))
  b = jnp.where(odd, mid, hi).astype(a.dtype)
  med = 0.5 * a + 0.5 * b
  return jnp.where(jnp.any(valid), med, 0).astype(updates.dtype)


def _weighted_sorted(updates: Array, weights: Array, valid: Array):
  dtype = base.compute_dtype(updates.dtype)
  w = jnp.where(valid & jnp.isfinite(weights) & (weights > 0), weights, 0).astype(dtype)
  values = jnp.where(valid[:, None], updates, 0).astype(dtype)
  w_b = jnp.broadcast_to(w[:, None], values.shape)
  sorted_values, sorted_w = lax.sort((values, w_b), dimension=0, num_keys=1)
  cum = jnp.cumsum(sorted_w, axis=0)
  return sorted_values, sorted_w, cum, cum[-1]


def _weighted_median(updates: Array, weights: Array, valid: Array) -> Array:
  v, w, cum, total = _weighted_sorted(updates, weights, valid)
  half = 0.5 * total
  big = jnp.asarray(jnp.inf, v.dtype)
  lo = jnp.min(jnp.where((w > 0) & (cum >= half), v, big), axis=0)
  hi = jnp.min(jnp.where((w > 0) & (cum > half), v, big), axis=0)
  hi = jnp.where(jnp.isfinite(hi), hi, lo)
  med = 0.5 * lo + 0.5 * hi
  return jnp.where(total > 0, med, 0).astype(updates.dtype)


@register_rule("coordinate_median", aliases=("median",))
@columns.columnwise
def _coordinate_median(updates, weights=None, mask=None, method: str = "auto"):
  updates = base.as_updates(updates, "coordinate_median")
  valid = base.valid_rows(updates, mask)
  if weights is None:
    return _median_from_valid(updates, valid, method), {}
  weights = jnp.asarray(weights)
  if weights.shape != (updates.shape[0],):
    raise ValueError("coordinate_median: weights must have shape [n]; got "
                     f"{weights.shape}.")
  return _weighted_median(updates, weights, valid), {}


def coordinate_median(updates: Array, weights: Optional[Array] = None,
                      mask: Optional[Array] = None, method: str = "auto") -> Array:
  """Coordinate-wise median (Yin et al. 2018).

  Guarantees: with ``f < k/2`` Byzantine rows among ``k`` valid ones, every
  coordinate lies within the honest rows' range for that coordinate, however
  extreme the Byzantine values (breakdown point 1/2).

  Args:
    updates: ``[n, d]`` client updates.
    weights: optional ``[n]`` sample-count weights: the weighted median, the
      midpoint of the minimisers of ``sum_i w_i |x_i - m|``; equal weights
      give the ordinary median. Weights must come from a trusted source: a
      Byzantine client that reports a huge weight controls the result.
    mask: optional ``bool[n]``; False rows are excluded.
    method: ``"auto"``, ``"network"`` or ``"sort"`` (identical results).

  Returns:
    ``[d]``: per coordinate, the middle valid value (the average of the two
    middle values when the valid count is even); zeros if no valid row.

  References:
    Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning:
    Towards Optimal Statistical Rates", ICML 2018.
  """
  return _coordinate_median(updates, weights, mask, method)[0]


def _trimmed_mean_from_valid(updates, valid, num_trim, method="auto"):
  n = updates.shape[0]
  dtype = base.compute_dtype(updates.dtype)
  k = jnp.sum(valid)

  def bounds_all_valid(_):
    return tuple(order_statistics(updates, (num_trim, n - 1 - num_trim), method))

  def bounds_some_excluded(_):
    low, = order_statistics(_fill_invalid(updates, valid, jnp.inf), (num_trim,), method)
    high, = order_statistics(_fill_invalid(updates, valid, -jnp.inf),
                             (n - 1 - num_trim,), method)
    return low, high

  def clipped_total():
    # One network serves both bounds when no row is excluded (the common
    # case); the cond also materialises them, as the row sums need.
    low, high = lax.cond(jnp.all(valid), bounds_all_valid, bounds_some_excluded, None)
    low, high = low.astype(dtype), high.astype(dtype)
    total = _sum_rows(updates, valid, lambda x: jnp.clip(x.astype(dtype), low, high), method)
    return total - num_trim * (low + high)

  def host_total():
    # The callback sorts each block of columns anyway: the trimmed sum comes
    # off the sorted block (256 x 1e5: 40 ms for the bounds, 27 ms more for
    # the clipped sum in XLA, measured).
    return callback_trimmed_sum(updates.astype(dtype), num_trim)[2]

  def trimmed(_):
    if resolve_method(method, n) == "callback":
      total = lax.cond(jnp.all(valid), host_total, clipped_total)
    else:
      total = clipped_total()
    kept = jnp.maximum(k - 2 * num_trim, 1).astype(dtype)
    return (total / kept).astype(updates.dtype)

  def median(_):
    # Fewer than 2t+1 valid rows: trimming as much as possible is the median.
    return _median_from_valid(updates, valid, method)

  if num_trim == 0:
    return trimmed(None)
  return lax.cond(k > 2 * num_trim, trimmed, median, None)


def _weighted_trimmed_mean(updates, weights, valid, num_trim):
  n = updates.shape[0]
  v, w, cum, total = _weighted_sorted(updates, weights, valid)
  trim_mass = total * (num_trim / n)
  start = cum - w
  overlap = jnp.clip(jnp.minimum(cum, total - trim_mass) - jnp.maximum(start, trim_mass),
                     0, None)
  kept = total - 2 * trim_mass
  out = jnp.sum(overlap * v, axis=0) / jnp.where(kept > 0, kept, 1)
  return jnp.where(kept > 0, out, 0).astype(updates.dtype)


def check_trimmed_mean(n: int, num_trim) -> int:
  num_trim = base.check_int(num_trim, "num_trim", "trimmed_mean")
  if 2 * num_trim >= n:
    raise ValueError(f"trimmed_mean needs 2*num_trim < n; got n={n}, num_trim={num_trim}.")
  return num_trim


@register_rule("trimmed_mean", rows_check=check_trimmed_mean)
@columns.columnwise
def _trimmed_mean(updates, num_trim: int, weights=None, mask=None,
                  method: str = "auto"):
  updates = base.as_updates(updates, "trimmed_mean")
  num_trim = check_trimmed_mean(updates.shape[0], num_trim)
  valid = base.valid_rows(updates, mask)
  if weights is None:
    return _trimmed_mean_from_valid(updates, valid, num_trim, method), {}
  return _weighted_trimmed_mean(updates, jnp.asarray(weights), valid, num_trim), {}


def trimmed_mean(updates: Array, num_trim: int, weights: Optional[Array] = None,
                 mask: Optional[Array] = None, method: str = "auto") -> Array:
  """Coordinate-wise trimmed mean (Yin et al. 2018).

  Per coordinate, drops the ``num_trim`` smallest and ``num_trim`` largest
  valid values and averages the rest.

  Guarantees: with at most ``num_trim`` Byzantine rows the output lies within
  the honest rows' range per coordinate (breakdown ``num_trim / n``).

  Args:
    updates: ``[n, d]`` client updates.
    num_trim: static int, values dropped at each end; needs ``2*num_trim < n``.
    weights: optional ``[n]`` sample-count weights: trims the weight mass
      ``num_trim/n * sum(w)`` from each tail (values straddling the cut count
      partially); equal weights give the unweighted rule. Weights must be
      trusted (see :func:`coordinate_median`).
    mask: optional ``bool[n]``; False rows are excluded.
    method: ``"auto"``, ``"network"`` or ``"sort"`` (same result up to
      rounding: only the order statistics differ in how they are found).

  Returns:
    ``[d]`` trimmed mean of the valid rows. ``num_trim=0`` is the mean.

  Raises:
    ValueError: if ``2*num_trim >= n`` or ``num_trim`` is not a static int.

  Edge cases: excluded rows are dropped before trimming; if fewer than
  ``2*num_trim + 1`` valid rows remain, the median of the valid rows is
  returned (the limit of trimming); no valid rows -> zeros.

  References:
    Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning:
    Towards Optimal Statistical Rates", ICML 2018.
  """
  return _trimmed_mean(updates, num_trim, weights, mask, method)[0]


def mean_of_nearest(updates: Array, valid: Array, center: Array, *,
                    num_keep: Optional[int] = None,
                    num_drop: Optional[int] = None, method: str = "auto") -> Array:
  """Per coordinate, the mean of the valid values closest to ``center``.

  Exactly one of ``num_keep`` (keep ``m`` values) or ``num_drop`` (keep
  ``k - num_drop`` values, ``k`` = valid count) is given; both static. Ties at
  the cut-off distance share the remaining slots equally. Falls back to
  ``center`` where fewer than one value would be kept.
  """
  n = updates.shape[0]
  dtype = base.compute_dtype(updates.dtype)
  k = jnp.sum(valid)
  center_c = center.astype(dtype)
  fill = jnp.inf if num_keep is not None else -jnp.inf
  if resolve_method(method, n) == "network":
    dist = [jnp.where(valid[i], jnp.abs(updates[i].astype(dtype) - center_c), fill)
            for i in range(n)]
  else:
    dist = jnp.where(valid[:, None], jnp.abs(updates.astype(dtype) - center_c[None, :]), fill)
  if num_keep is not None:
    keep = jnp.asarray(num_keep)
    cutoff, = order_statistics(dist, (num_keep - 1,), method)
  else:
    keep = k - num_drop
    cutoff, = order_statistics(dist, (n - 1 - num_drop,), method)

  def terms(x):
    x = x.astype(dtype)
    dx = jnp.abs(x - center_c)
    below, tied = dx < cutoff, dx == cutoff
    return (below.astype(dtype), jnp.where(below, x, 0),
            tied.astype(dtype), jnp.where(tied, x, 0))

  count_below, sum_below, count_tied, sum_tied = _sum_rows(updates, valid, terms, method)
  mean_tied = sum_tied / jnp.maximum(count_tied, 1)
  keep_f = keep.astype(dtype)
  out = (sum_below + (keep_f - count_below) * mean_tied) / jnp.maximum(keep_f, 1)
  return jnp.where((keep >= 1) & (k >= keep), out, center_c).astype(updates.dtype)


def check_meamed(n: int, num_byzantine) -> int:
  f = base.check_int(num_byzantine, "num_byzantine", "meamed")
  if 2 * f >= n:
    raise ValueError(f"meamed needs n > 2f; got n={n}, f={f}.")
  return f


@register_rule("meamed", rows_check=check_meamed)
@columns.columnwise
def _meamed(updates, num_byzantine: int, mask=None, method: str = "auto"):
  updates = base.as_updates(updates, "meamed")
  f = check_meamed(updates.shape[0], num_byzantine)
  valid = base.valid_rows(updates, mask)
  med = _median_from_valid(updates, valid, method)
  return mean_of_nearest(updates, valid, med, num_drop=f, method=method), {}


def meamed(updates: Array, num_byzantine: int, mask: Optional[Array] = None,
           method: str = "auto") -> Array:
  """Mean around the median (Meamed; Xie, Koyejo, Gupta 2018).

  Per coordinate, the mean of the ``k - f`` valid values closest to the
  coordinate median (``k`` valid rows, ``f = num_byzantine``).

  Guarantees: for ``f < n/2`` Byzantine rows the median ``m`` lies inside
  the honest range, and every kept value is within ``r = max_honest |h - m|``
  of it (``k - f`` honest values exist, so the ``(k-f)``-th smallest distance
  is at most ``r``); the output is therefore within ``r`` of ``m``, however
  extreme the Byzantine values. Unlike the median it can leave the honest
  range: honest {0, 1} and a Byzantine 1.9 (n=3, f=1) give median 1, keep
  {1, 1.9} and return 1.45 (tested).

  Args:
    updates: ``[n, d]`` client updates.
    num_byzantine: static int ``f``, needs ``n > 2f``.
    mask: optional ``bool[n]``; False rows are excluded.
    method: order-statistics method (identical results).

  Returns:
    ``[d]`` Meamed aggregate; zeros if no valid rows; the median if
    ``k <= f``.

  Edge cases: ties at the cut-off distance (e.g. ``median - r`` and
  ``median + r``) share the remaining slots equally, so the rule is
  permutation invariant even with ties. ``f = 0`` is the mean.

  References:
    Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", arXiv:1802.10116.
  """
  return _meamed(updates, num_byzantine, mask, method)[0]
