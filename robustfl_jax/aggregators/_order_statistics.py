"""Exact per-coordinate order statistics over the client axis.

Coordinate-wise rules (median, trimmed mean, Meamed, Bulyan) only need a few
order statistics per coordinate, never the whole sorted array. On CPU, XLA's
generic sort along the client axis is slow (for ``[64, 2**20]`` float32,
``jnp.sort(axis=0)`` is ~7x slower than NumPy), but a comparator network of
elementwise ``min``/``max`` fuses into one loop over the coordinates. We build
Batcher's odd-even merge sort for the padded client count and keep only the
comparators that feed the requested ranks (pruned in Python, so the traced
program is small). On GPU/TPU ``jnp.sort`` is fast and is used instead.

Past 64 rows the network costs more than it saves: its compile time explodes
(2.6 s at 128 rows, over 200 s at 256), and at 128 rows the rules that sum
terms depending on a statistic (Meamed, Bulyan's coordinate phase, the
geometric median's median start) ran 30 s to 220 s at 128 x 1e5 (XLA
recomputes the network inside each row's term), and XLA's sort along the client axis on CPU is 3-30x slower
than NumPy. There, on a single CPU device, ``"auto"`` selects ``"callback"``:
a :func:`jax.experimental.buffer_callback` (NumPy views of XLA's own
buffers, no copies) into NumPy's SIMD sort over blocks of columns run on a
thread pool (NumPy releases the GIL while it sorts). It keeps ``jit`` and ``vmap`` working, and a custom JVP (the
tangent of the input element that holds each selected value) keeps ``grad``
working. With several devices (a sharded aggregation, several processes) the
callback would gather the matrix onto one host, so ``"auto"`` keeps the XLA
methods there.

Both methods return exactly the same values: order statistics are elements of
the input, no arithmetic is involved. Callers must replace NaN before calling
(``min``/``max`` propagate NaN); the rules fill excluded rows with +-inf.
"""

from __future__ import annotations

import functools
import os
from concurrent import futures
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import buffer_callback

from robustfl_jax.aggregators import base

Array = jax.Array

# Beyond this many clients the network is not used: its compile time
# explodes (2.6 s for the median at 128 rows, over 200 s at 256 rows) and at
# 128 rows Meamed took 29.8 s and Bulyan 221 s at d = 1e5 through it
# (docs/results/benchmark.md of 2026-12-03, before this limit moved from 128).
MAX_NETWORK_ROWS = 64


@functools.lru_cache(maxsize=None)
def _batcher_comparators(size: int) -> tuple[tuple[int, int], ...]:
  """Batcher's odd-even merge sort network for ``size`` (a power of two)."""
  pairs = []
  p = 1
  while p < size:
    k = p
    while k >= 1:
      for j in range(k % p, size - k, 2 * k):
        for i in range(min(k, size - j - k)):
          if (i + j) // (2 * p) == (i + j + k) // (2 * p):
            pairs.append((i + j, i + j + k))
      k //= 2
    p *= 2
  return tuple(pairs)


@functools.lru_cache(maxsize=None)
def _pruned_network(size: int, ranks: tuple[int, ...]):
  """Comparators of the sorting network that feed the outputs ``ranks``.

  Returns a list of ``(lo_wire, hi_wire, need_lo, need_hi)`` in execution
  order: a comparator whose min (or max) output is never read is emitted as a
  single ``max`` (or ``min``).
  """
  needed = set(ranks)
  kept = []
  for lo, hi in reversed(_batcher_comparators(size)):
    need_lo, need_hi = lo in needed, hi in needed
    if need_lo or need_hi:
      kept.append((lo, hi, need_lo, need_hi))
      needed.add(lo)
      needed.add(hi)
  kept.reverse()
  return tuple(kept)


def _network_order_statistics(rows: list[Array], ranks: tuple[int, ...]) -> list[Array]:
  n = len(rows)
  size = 1 << max(0, (n - 1).bit_length())
  rows = list(rows)
  if size > n:
    # +inf padding sorts to the end and leaves ranks < n unchanged.
    pad = jnp.full(rows[0].shape, jnp.inf, rows[0].dtype)
    rows += [pad] * (size - n)
  for lo, hi, need_lo, need_hi in _pruned_network(size, ranks):
    a, b = rows[lo], rows[hi]
    if need_lo:
      rows[lo] = jnp.minimum(a, b)
    if need_hi:
      rows[hi] = jnp.maximum(a, b)
  return [rows[r] for r in ranks]


# Elements per task of the callback's thread pool (a block of columns of about
# 1 MiB of float32): it stays in cache while it is transposed and sorted.
_CALLBACK_BLOCK_ELEMENTS = 2**18


@functools.lru_cache(maxsize=1)
def _pool() -> futures.ThreadPoolExecutor:
  return futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                    thread_name_prefix="robustfl_order_statistics")


def numpy_order_statistics(values: np.ndarray, ranks: Sequence[int],
                           out: Optional[np.ndarray] = None,
                           middle: Optional[tuple[int, int]] = None) -> np.ndarray:
  """``[len(ranks), *rest]`` order statistics of ``values`` along axis 0 in NumPy.

  With ``middle = (a, b)`` one more row follows the statistics: the sum of
  the order statistics of ranks ``a .. b - 1`` (a trimmed sum), taken from
  the same sorted block.

  Per block of columns: a transposed, contiguous copy sorted along its rows
  by ``np.sort``, whose SIMD quicksort (x86-simd-sort in NumPy 2) beats
  ``np.partition`` with several ``kth`` (introselect) and column-strided
  access (measured at 256 x 1e5 float32: sort of the transposed copy 0.31 s,
  ``np.partition`` at two ranks 2.3 s, on one loaded core). Blocks run on a
  thread pool (NumPy releases the GIL while it sorts). Exact: the values
  returned are elements of the input. ``out`` (optional) receives the result.
  """
  values = np.asarray(values)
  n, rest = values.shape[0], values.shape[1:]
  flat = values.reshape(n, -1)
  cols = flat.shape[1]
  num_out = len(ranks) + (middle is not None)
  if out is None:
    out = np.empty((num_out,) + rest, values.dtype)
  flat_out = np.reshape(out, (num_out, cols), copy=False)  # a view: writes land
  pick = list(ranks)
  block = max(1, _CALLBACK_BLOCK_ELEMENTS // max(n, 1))

  def work(lo: int) -> None:
    hi = min(lo + block, cols)
    rows = np.ascontiguousarray(flat[:, lo:hi].T)
    rows.sort(axis=1)
    flat_out[:len(pick), lo:hi] = rows[:, pick].T
    if middle is not None:
      np.sum(rows[:, middle[0]:middle[1]], axis=1, out=flat_out[-1, lo:hi])

  starts = range(0, cols, block)
  if len(starts) == 1:
    work(0)
  else:
    list(_pool().map(work, starts))
  return out


def _callback_host(ctx, out, values, *, ranks: tuple[int, ...], core_ndim: int,
                   middle: Optional[tuple[int, int]] = None) -> None:
  """The host side, on XLA's buffers; ``values`` may carry ``vmap`` batch axes."""
  del ctx
  values, out = np.asarray(values), np.asarray(out)
  batch = values.shape[:values.ndim - core_ndim]
  core = values.reshape((-1,) + values.shape[len(batch):])
  core_out = np.reshape(out, (-1,) + out.shape[len(batch):], copy=False)
  for v, o in zip(core, core_out):
    numpy_order_statistics(v, ranks, out=o, middle=middle)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _callback_order_statistics(values: Array, ranks: tuple[int, ...]) -> Array:
  shape = jax.ShapeDtypeStruct((len(ranks),) + values.shape[1:], values.dtype)
  host = functools.partial(_callback_host, ranks=ranks, core_ndim=values.ndim)
  return buffer_callback.buffer_callback(host, shape, vmap_method="expand_dims")(values)


@_callback_order_statistics.defjvp
def _callback_jvp(ranks, primals, tangents):
  values, = primals
  tangent, = tangents
  stats = _callback_order_statistics(values, ranks)
  return stats, _statistic_tangents(values, tangent, stats)


def _statistic_tangents(values: Array, tangent: Array, stats: Array) -> Array:
  """The tangent of the (first) input element equal to each statistic: a
  valid derivative of an order statistic (ties: a subgradient, as sort)."""
  index = jnp.argmax(values[None] == stats[:, None], axis=1)
  return jnp.take_along_axis(tangent[None], index[:, None], axis=1)[:, 0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def callback_trimmed_sum(values: Array, num_trim: int) -> tuple[Array, Array, Array]:
  """``(low, high, total)`` per coordinate by one NumPy callback.

  ``low`` / ``high`` are the order statistics of ranks ``t`` and
  ``n - 1 - t`` (``t = num_trim``) along axis 0, ``total`` the sum of the
  order statistics of ranks ``t .. n - 1 - t``, read off the same sorted
  block (:func:`numpy_order_statistics` with ``middle``). Ties do not
  matter to the sum: it equals ``sum_i clip(x_i, low, high) - t (low +
  high)``, the formula the network and sort methods use, whose derivative
  is this function's JVP. On the host the sum is NumPy's pairwise float
  summation, so it may differ from theirs in the last bits.

  Args:
    values: ``[n, ...]`` without NaN (+-inf allowed), ``2 t < n``.
    num_trim: static ``t >= 0``.
  """
  n = values.shape[0]
  ranks = (num_trim, n - 1 - num_trim)
  shape = jax.ShapeDtypeStruct((3,) + values.shape[1:], values.dtype)
  host = functools.partial(_callback_host, ranks=ranks, core_ndim=values.ndim,
                           middle=(num_trim, n - num_trim))
  out = buffer_callback.buffer_callback(host, shape, vmap_method="expand_dims")(values)
  return out[0], out[1], out[2]


@callback_trimmed_sum.defjvp
def _callback_trimmed_sum_jvp(num_trim, primals, tangents):
  values, = primals
  tangent, = tangents
  low, high, total = callback_trimmed_sum(values, num_trim)
  d_low, d_high = _statistic_tangents(values, tangent, jnp.stack([low, high]))

  def clipped(v, lo, hi):
    return jnp.sum(jnp.clip(v, lo, hi), axis=0) - num_trim * (lo + hi)

  _, d_total = jax.jvp(clipped, (values, low, high), (tangent, d_low, d_high))
  return (low, high, total), (d_low, d_high, d_total)


def resolve_method(method: str, num_rows: int) -> str:
  """``"auto"`` becomes the faster exact method; other values pass through."""
  return default_method(num_rows) if method == "auto" else method


def default_method(num_rows: int) -> str:
  """The faster exact method for the default backend.

  CPU: the network up to :data:`MAX_NETWORK_ROWS` rows, then the NumPy
  callback on a single device (the sort with several devices, where the
  callback would gather a sharded matrix onto one host). GPU/TPU: the sort.
  """
  if jax.default_backend() != "cpu":
    return "sort"
  if num_rows <= MAX_NETWORK_ROWS:
    return "network"
  return "callback" if base.host_numpy_is_local() else "sort"


def order_statistics(values, ranks: Sequence[int], method: str = "auto") -> list[Array]:
  """Order statistics of ``values`` along axis 0.

  Args:
    values: ``[n, ...]`` array without NaN (+-inf allowed), or a list of
      ``n`` equally shaped rows. Rows computed from other per-coordinate
      statistics should be passed as a list: an ``[n, d]`` intermediate would
      make XLA on CPU recompute those statistics once per row.
    ranks: static 0-based ranks from the bottom (0 = minimum).
    method: ``"network"``, ``"sort"``, ``"callback"`` (NumPy on the host,
      :func:`numpy_order_statistics`) or ``"auto"`` (:func:`default_method`).
      Results are identical.

  Returns:
    One array of shape ``values.shape[1:]`` per rank.
  """
  n = len(values) if isinstance(values, (list, tuple)) else values.shape[0]
  ranks = tuple(int(r) for r in ranks)
  for r in ranks:
    if not 0 <= r < n:
      raise ValueError(f"rank {r} is outside [0, {n}).")
  method = resolve_method(method, n)
  if method == "network":
    rows = values if isinstance(values, (list, tuple)) else [values[i] for i in range(n)]
    return _network_order_statistics(rows, ranks)
  if method not in ("sort", "callback"):
    raise ValueError("method must be 'auto', 'network', 'sort' or 'callback'; "
                     f"got {method!r}.")
  if isinstance(values, (list, tuple)):
    values = jnp.stack(values)
  if method == "sort":
    ordered = jnp.sort(values, axis=0)
    return [ordered[r] for r in ranks]
  stats = _callback_order_statistics(values, ranks)
  return [stats[i] for i in range(len(ranks))]
