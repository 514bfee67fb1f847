"""Passes over the columns of the ``[n, d]`` update matrix, whole or in chunks.

A rule touches its ``[n, d]`` input in a few ways only: a per-column
statistic (the coordinate-wise rules, a weighted row sum), a sum over
columns (the ``[n, n]`` Gram of Krum and Bulyan), or per-row norms (the
geometric median, centered clipping). The helpers here run these passes
either on the whole matrix (the default: exactly the plain ``jnp`` code) or,
under :func:`column_plan`, over ``num_chunks`` column chunks in a
``lax.fori_loop``, each chunk first given to ``place``.

Why: with the updates split over clients (as local training leaves them on
``D`` devices), ``place`` reshards one ``[n, d / k]`` chunk at a time to a
split along the parameters (an all-to-all of ``n d / (k D)`` values per
device), so only the input plus one chunk's copy and working buffer are in
flight: per device about ``(1 + c / k) n d 4 / D`` bytes instead of
``(2 + c) n d 4 / D`` for a reshard of the whole matrix (``c`` the rule's
working buffers in units of its input; measured in
tests/fl/test_param_sharding.py and docs/results/benchmark_scaling.md).

Row-local passes (norms of ``u_i - z``) need no reshard: each device holds
whole rows, so they run on the client-split chunk (``place`` is skipped).
Per-column results are the same values in the same order of operations as
on the whole matrix (bit-identical); sums over columns (Gram, norms) add the
chunks' partial sums, which reorders the float additions (within 1e-6
relative).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import buffer_callback

from robustfl_jax.aggregators import base

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ColumnPlan:
  """How the rules traverse the columns of the update matrix.

  Attributes:
    num_chunks: the number of column chunks (1: the whole matrix at once);
      the largest divisor of ``d`` not above it is used.
    place: applied to each ``[n, d / k]`` chunk before a pass that mixes
      rows (e.g. a ``with_sharding_constraint`` to a parameter split);
      None leaves it where it is.
  """

  num_chunks: int = 1
  place: Optional[Callable[[Array], Array]] = None


_PLAN = contextvars.ContextVar("column_plan", default=ColumnPlan())


@contextlib.contextmanager
def column_plan(num_chunks: int, place: Optional[Callable] = None):
  """Within the block, rules traced traverse their columns in chunks.

  A tracing-time setting (like ``jax.sharding.use_mesh``): wrap the call
  that traces the aggregation (``aggregator.update`` inside the jitted
  round).

  Args:
    num_chunks: static int >= 1.
    place: see :class:`ColumnPlan`.

  Raises:
    ValueError: ``num_chunks`` is not an int >= 1.
  """
  num_chunks = base.check_int(num_chunks, "num_chunks", "column_plan",
                              minimum=1)
  token = _PLAN.set(ColumnPlan(num_chunks, place))
  try:
    yield
  finally:
    _PLAN.reset(token)


def current_plan() -> ColumnPlan:
  return _PLAN.get()


def _chunking(dim: int) -> tuple[int, int]:
  """(number of chunks, width): the largest divisor of ``dim`` up to the plan's."""
  k = max(1, min(_PLAN.get().num_chunks, dim))
  while dim % k:
    k -= 1
  return k, dim // k


def is_chunked(updates: Array) -> bool:
  """Whether passes over ``updates`` run in more than one chunk."""
  return _chunking(updates.shape[1])[0] > 1


@contextlib.contextmanager
def _whole():
  token = _PLAN.set(ColumnPlan())
  try:
    yield
  finally:
    _PLAN.reset(token)


def _chunk(updates: Array, index, width: int, place: bool) -> Array:
  chunk = lax.dynamic_slice_in_dim(updates, index * width, width, axis=1)
  placer = _PLAN.get().place
  return placer(chunk) if (place and placer is not None) else chunk


def map_columns(fn: Callable[..., Any], updates: Array, *vectors: Array,
                rows_out: bool = False) -> Any:
  """``fn(updates, *vectors)`` for a per-column ``fn``, chunk by chunk.

  Args:
    fn: ``fn(chunk [n, w], *vector_chunks [w]) -> pytree of [w] arrays``
      (with ``rows_out``: a pair ``(columns pytree, rows pytree)``, the
      latter not depending on the chunk, e.g. a rule's ``info``).
    updates: ``[n, d]``.
    *vectors: ``[d]`` arrays sliced along with the columns (a center).
    rows_out: see ``fn``.

  Returns:
    ``fn``'s output with the ``[w]`` leaves assembled to ``[d]`` (and the
    rows pytree of the last chunk).
  """
  k, width = _chunking(updates.shape[1])
  if k == 1:
    return fn(updates, *vectors)
  with _whole():
    spec = jax.eval_shape(
        fn, jax.ShapeDtypeStruct((updates.shape[0], width), updates.dtype),
        *(jax.ShapeDtypeStruct((width,), v.dtype) for v in vectors))
  cols_spec, rows_spec = spec if rows_out else (spec, None)
  init = (jax.tree.map(lambda s: jnp.zeros((k,) + s.shape, s.dtype), cols_spec),
          jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), rows_spec))
  chunks = [v.reshape(k, width) for v in vectors]

  def body(index, carry):
    cols, _ = carry
    with _whole():
      out = fn(_chunk(updates, index, width, place=True),
               *(c[index] for c in chunks))
    new_cols, rows = out if rows_out else (out, None)
    cols = jax.tree.map(lambda buf, v: buf.at[index].set(v), cols, new_cols)
    return cols, rows

  cols, rows = lax.fori_loop(0, k, body, init)
  cols = jax.tree.map(lambda c: c.reshape((k * width,) + c.shape[2:]), cols)
  return (cols, rows) if rows_out else cols


def _reduce_columns(fn, updates, vectors, place: bool, combine) -> Any:
  k, width = _chunking(updates.shape[1])
  if k == 1:
    return fn(updates, *vectors)
  chunks = [v.reshape(k, width) for v in vectors]

  def term(index):
    with _whole():
      return fn(_chunk(updates, index, width, place),
                *(c[index] for c in chunks))

  return lax.fori_loop(1, k, lambda i, acc: jax.tree.map(combine, acc, term(i)),
                       term(0))


def sum_columns(fn: Callable[..., Any], updates: Array, *vectors: Array,
                place: bool = True) -> Any:
  """``sum over chunks of fn(chunk, *vector_chunks)`` (``fn(updates)`` whole).

  Args:
    fn: ``fn(chunk [n, w], *vector_chunks [w]) -> pytree`` whose leaves
      add over the columns (partial Grams, partial squared norms).
    updates: ``[n, d]``.
    *vectors: ``[d]`` arrays sliced along with the columns.
    place: give each chunk to the plan's ``place`` (False for row-local
      passes, which need no reshard).
  """
  return _reduce_columns(fn, updates, vectors, place, jnp.add)


def max_columns(fn: Callable[..., Array], updates: Array, *vectors: Array
                ) -> Array:
  """Like :func:`sum_columns` (row-local) with ``max`` instead of a sum."""
  return _reduce_columns(fn, updates, vectors, False, jnp.maximum)


# The BLAS Gram is used from this many products (n * n * d) and up to this
# many rows. Below, the host round trip costs more than it saves (16 x 1e5:
# XLA 1.03 ms, BLAS 1.42 ms; 32 x 1e5: XLA 4.2 ms, BLAS 3.6 ms; 64 x 2**20:
# XLA 241 ms, BLAS 104 ms, measured in one run); above the row limit XLA's
# dot has enough rows to run at BLAS speed (both 0.10 s at 256 x 1e5).
HOST_GRAM_MIN_PRODUCTS = 2**26
HOST_GRAM_MAX_ROWS = 128


def _host_gram(ctx, out, x) -> None:
  """``out = x @ x.T`` in NumPy, on XLA's buffers (no copies)."""
  del ctx
  x, out = np.asarray(x), np.asarray(out)
  np.matmul(x, np.swapaxes(x, -1, -2), out=out)


@jax.custom_jvp
def _callback_gram(u: Array) -> Array:
  n = u.shape[0]
  return buffer_callback.buffer_callback(
      _host_gram, jax.ShapeDtypeStruct((n, n), u.dtype), vmap_method="expand_dims")(u)


@_callback_gram.defjvp
def _callback_gram_jvp(primals, tangents):
  u, = primals
  t, = tangents
  cross = jnp.matmul(t, u.T, precision=lax.Precision.HIGHEST)
  return _callback_gram(u), cross + cross.T


def gram_method(num_rows: int, num_coords: int) -> str:
  """``"blas"`` (NumPy's BLAS through a callback) or ``"xla"`` for the Gram.

  On one CPU device XLA's ``dot`` of ``[n, d] x [d, n]`` with a huge ``d``
  runs at half the speed of the BLAS SYRK NumPy calls for ``u @ u.T``
  (measured at 64 x 2**20: 0.27 s against 0.11 s; XLA's YNNPACK, XNNPACK,
  oneDNN and blocked/batched forms were no faster). The BLAS path is a
  :func:`jax.experimental.buffer_callback`, which hands NumPy views of XLA's
  own buffers (a :func:`jax.pure_callback` copies the ``[n, d]`` input, which
  costs more than the product saves). With several devices
  (a parameter-sharded aggregation) or on GPU/TPU the XLA ``dot`` is kept;
  see :data:`HOST_GRAM_MIN_PRODUCTS` and :data:`HOST_GRAM_MAX_ROWS` for the
  shapes.
  """
  if (base.host_numpy_is_local()
      and num_rows * num_rows * num_coords >= HOST_GRAM_MIN_PRODUCTS
      and num_rows <= HOST_GRAM_MAX_ROWS):
    return "blas"
  return "xla"


def gram(updates: Array) -> Array:
  """``updates @ updates.T`` (HIGHEST precision), summed over chunks.

  Whole (no plan) on one CPU device, NumPy's BLAS computes it
  (:func:`gram_method`); differentiable either way (the BLAS path has a JVP
  in XLA).
  """
  if not is_chunked(updates) and gram_method(*updates.shape) == "blas":
    return _callback_gram(updates)
  return sum_columns(
      lambda u: jnp.matmul(u, u.T, precision=lax.Precision.HIGHEST), updates)


def row_norms(fn: Callable[..., Array], updates: Array, *vectors: Array
              ) -> Array:
  """:func:`base.row_norms` of ``fn(updates, *vectors)`` without building it.

  ``fn`` is elementwise per chunk (e.g. ``lambda u, z: u - z``). As
  :func:`base.row_norms`: one row-local pass of plain squares, and only when
  one overflows or underflows two more: the rows' largest magnitude, then
  the sum of squares scaled by it.
  """
  if not is_chunked(updates):
    return base.row_norms_of(fn, updates, *vectors)

  def plain(u, *v):
    values = fn(u, *v)
    return jnp.sum(jnp.square(values.astype(base.compute_dtype(values.dtype))), axis=1)

  def nonzero_in(rows):
    def magnitude(u, *v):
      return jnp.max(jnp.where(rows[:, None], jnp.abs(fn(u, *v)), 0), axis=1)
    return jnp.any(max_columns(magnitude, updates, *vectors) != 0)

  squares = sum_columns(plain, updates, *vectors, place=False)
  return lax.cond(base.plain_norms_exact(squares, nonzero_in),
                  lambda: jnp.sqrt(squares),
                  lambda: _scaled_row_norms(fn, updates, *vectors))


def _scaled_row_norms(fn, updates, *vectors):
  """:func:`base.scaled_row_norms` of ``fn(updates, *vectors)``, by chunks."""
  def magnitude(u, *v):
    values = fn(u, *v)
    return jnp.max(jnp.abs(values.astype(base.compute_dtype(values.dtype))),
                   axis=1, initial=0)

  scale = max_columns(magnitude, updates, *vectors)
  safe = jnp.where(scale > 0, scale, 1)

  def squares(u, *v):
    values = fn(u, *v)
    values = values.astype(base.compute_dtype(values.dtype))
    return jnp.sum(jnp.square(values / safe[:, None]), axis=1)

  return scale * jnp.sqrt(sum_columns(squares, updates, *vectors, place=False))


def columnwise(impl: Callable) -> Callable:
  """Makes a per-column rule ``impl(updates, ..., mask=None, ...) ->
  (aggregate, info)`` run chunk by chunk under a :func:`column_plan`.

  Each chunk receives ``mask`` = the rows valid over the *whole* matrix
  (finite and not masked), so a row non-finite in another chunk is excluded
  everywhere, as on the whole matrix; with that mask every row-level
  quantity of the rule (and its ``info``) is the same in every chunk.
  """
  signature = inspect.signature(impl)

  @functools.wraps(impl)
  def chunked(*args, **kwargs):
    bound = signature.bind(*args, **kwargs)
    updates = bound.arguments[next(iter(signature.parameters))]
    if not isinstance(updates, jax.Array) or not is_chunked(updates):
      return impl(*args, **kwargs)
    bound.arguments["mask"] = base.valid_rows(updates,
                                              bound.arguments.get("mask"))
    def on_chunk(chunk):
      bound.arguments[next(iter(signature.parameters))] = chunk
      return impl(*bound.args, **bound.kwargs)
    return map_columns(on_chunk, updates, rows_out=True)

  return chunked
