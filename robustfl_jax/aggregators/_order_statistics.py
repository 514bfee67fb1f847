"""Exact per-coordinate order statistics over the client axis.

Coordinate-wise rules (median, trimmed mean, Meamed, Bulyan) only need a few
order statistics per coordinate, never the whole sorted array. On CPU, XLA's
generic sort along the client axis is slow (for ``[64, 2**20]`` float32,
``jnp.sort(axis=0)`` is ~7x slower than NumPy), but a comparator network of
elementwise ``min``/``max`` fuses into one loop over the coordinates. We build
Batcher's odd-even merge sort for the padded client count and keep only the
comparators that feed the requested ranks (pruned in Python, so the traced
program is small). On GPU/TPU ``jnp.sort`` is fast and is used instead.

Both methods return exactly the same values: order statistics are elements of
the input, no arithmetic is involved. Callers must replace NaN before calling
(``min``/``max`` propagate NaN); the rules fill excluded rows with +-inf.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

# Beyond this many clients XLA's compile time for the network explodes
# (measured: 2.6 s for the median at 128 rows, over 200 s at 256 rows); the
# sort is used instead.
MAX_NETWORK_ROWS = 128


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


def resolve_method(method: str, num_rows: int) -> str:
  """``"auto"`` becomes the faster exact method; other values pass through."""
  return default_method(num_rows) if method == "auto" else method


def default_method(num_rows: int) -> str:
  """The faster exact method for the default backend."""
  if jax.default_backend() == "cpu" and num_rows <= MAX_NETWORK_ROWS:
    return "network"
  return "sort"


def order_statistics(values, ranks: Sequence[int], method: str = "auto") -> list[Array]:
  """Order statistics of ``values`` along axis 0.

  Args:
    values: ``[n, ...]`` array without NaN (+-inf allowed), or a list of
      ``n`` equally shaped rows. Rows computed from other per-coordinate
      statistics should be passed as a list: an ``[n, d]`` intermediate would
      make XLA on CPU recompute those statistics once per row.
    ranks: static 0-based ranks from the bottom (0 = minimum).
    method: ``"network"``, ``"sort"`` or ``"auto"`` (network on CPU for
      ``n <= 128``, sort otherwise). Results are identical.

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
  if method == "sort":
    if isinstance(values, (list, tuple)):
      values = jnp.stack(values)
    ordered = jnp.sort(values, axis=0)
    return [ordered[r] for r in ranks]
  raise ValueError(f"method must be 'auto', 'network' or 'sort'; got {method!r}.")
