"""Pre-aggregators that mix rows before a rule, and ``chain`` to compose them.

A pre-aggregator maps ``[n, d] -> [n', d]``. Rows it excludes (mask False,
non-finite, empty buckets) come out as NaN rows, and every rule treats a
non-finite row as excluded, so exclusion flows through a chain unchanged.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

from robustfl_jax.aggregators import base
from robustfl_jax.aggregators._registry import register_pre_aggregator
from robustfl_jax.aggregators._clipping import mark_excluded
from robustfl_jax.aggregators._krum import pairwise_sq_distances

Array = jax.Array


def check_nnm(n: int, num_byzantine) -> int:
  f = base.check_int(num_byzantine, "num_byzantine", "nnm")
  if f >= n:
    raise ValueError(f"nnm needs f < n; got n={n}, f={f}.")
  return f


@register_pre_aggregator("nnm", rows_check=check_nnm)
def nnm(updates: Array, num_byzantine: int, mask: Optional[Array] = None) -> Array:
  """Nearest Neighbour Mixing (Allouah et al. 2023), a pre-aggregator.

  Each row is replaced by the mean of its ``n - f`` nearest rows (squared
  Euclidean distance, the row itself included).

  Guarantees: composed with an (f, kappa)-robust rule (e.g. Krum, median,
  trimmed mean, geometric median), the result is (f, O(f/n))-robust, which
  fixes those rules under heterogeneous data.

  Args:
    updates: ``[n, d]`` client updates.
    num_byzantine: static int ``f < n``.
    mask: optional ``bool[n]``; excluded rows are never neighbours and come
      back as NaN rows.

  Returns:
    ``[n, d]`` mixed updates. ``f = 0`` gives every row the mean.

  Edge cases: ties among equidistant neighbours go to the lowest index; if
  fewer than ``n - f`` valid rows exist, all valid rows are averaged.

  References:
    Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by Mixing:
    A Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023.
  """
  updates = base.as_updates(updates, "nnm")
  n = updates.shape[0]
  f = check_nnm(n, num_byzantine)
  valid = base.valid_rows(updates, mask)
  dist = pairwise_sq_distances(updates)
  dist = jnp.where(valid[None, :] & valid[:, None], dist, jnp.inf)
  # The row itself (distance 0) ranks first: make it so even when other rows
  # are identical, so that "itself included" holds.
  dist = jnp.where(jnp.eye(n, dtype=bool), -1.0, dist)
  order = jnp.argsort(dist, axis=1, stable=True)
  rank = jnp.zeros((n, n), jnp.int32).at[jnp.arange(n)[:, None], order].set(
      jnp.arange(n, dtype=jnp.int32)[None, :])
  num_keep = jnp.minimum(n - f, jnp.sum(valid))
  dtype = base.compute_dtype(updates.dtype)
  mixing = ((rank < num_keep) & valid[None, :]).astype(dtype)
  mixing = mixing / jnp.maximum(jnp.sum(mixing, axis=1, keepdims=True), 1)
  values = base.zero_invalid(updates, valid).astype(dtype)
  mixed = jnp.matmul(mixing, values, precision=lax.Precision.HIGHEST)
  return mark_excluded(mixed.astype(updates.dtype), valid)


def _num_buckets(n: int, bucket_size: int) -> int:
  return -(-n // bucket_size)


@register_pre_aggregator("bucketing", skip=2, rows_after=_num_buckets)
def bucketing(key: Array, updates: Array, bucket_size: int,
              mask: Optional[Array] = None) -> Array:
  """Bucketing (Karimireddy, He, Jaggi 2022), a pre-aggregator.

  Randomly permutes the rows and averages consecutive groups of
  ``bucket_size``: ``ceil(n / s)`` buckets (the last may be smaller).

  Guarantees: ``f`` Byzantine rows contaminate at most ``f`` of the
  ``ceil(n/s)`` buckets, a fraction of about ``f s / n``; choose ``s`` so that
  this stays below the next rule's breakdown point (the paper's
  ``s <= delta_max / delta``). Averaging shrinks the honest buckets' spread,
  which is what lets distance-based rules work on heterogeneous data. The rule
  after bucketing must be told the number of *buckets* that may be Byzantine.

  Args:
    key: PRNG key for the permutation.
    updates: ``[n, d]`` client updates.
    bucket_size: static int ``s >= 1``.
    mask: optional ``bool[n]``; excluded rows are left out of their bucket's
      mean; a bucket with no valid row is a NaN row.

  Returns:
    ``[ceil(n / s), d]`` bucket means. ``s = 1`` is a permutation of the rows.

  References:
    Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous
    Datasets via Bucketing", ICLR 2022.
  """
  updates = base.as_updates(updates, "bucketing")
  n = updates.shape[0]
  s = base.check_int(bucket_size, "bucket_size", "bucketing", minimum=1)
  num_buckets = -(-n // s)
  valid = base.valid_rows(updates, mask)
  perm = jax.random.permutation(key, n)
  bucket_of_row = jnp.zeros((n,), jnp.int32).at[perm].set(
      jnp.arange(n, dtype=jnp.int32) // s)
  dtype = base.compute_dtype(updates.dtype)
  assign = ((bucket_of_row[None, :] == jnp.arange(num_buckets)[:, None])
            & valid[None, :]).astype(dtype)
  counts = jnp.sum(assign, axis=1)
  assign = assign / jnp.maximum(counts, 1)[:, None]
  values = base.zero_invalid(updates, valid).astype(dtype)
  means = jnp.matmul(assign, values, precision=lax.Precision.HIGHEST)
  return mark_excluded(means.astype(updates.dtype), counts > 0)


def _accepted(fn: Callable) -> tuple[set[str], bool]:
  target = fn.func if isinstance(fn, functools.partial) else fn
  params = inspect.signature(target).parameters
  bound = set(fn.keywords) if isinstance(fn, functools.partial) else set()
  names = {p for p in params if p not in bound}
  var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  return names, var_kw


def call_with_accepted(fn: Callable, updates: Array, *, key=None, mask=None,
                       **hparams) -> Array:
  """Calls ``fn`` with ``updates`` and those of the keywords it accepts."""
  names, var_kw = _accepted(fn)
  kwargs = {k: v for k, v in hparams.items() if var_kw or k in names}
  if mask is not None and ("mask" in names or var_kw):
    kwargs["mask"] = mask
  if "key" in names:
    if key is None:
      raise ValueError(f"{getattr(fn, '__name__', fn)} needs a PRNG key: pass key=.")
    return fn(key=key, updates=updates, **kwargs)
  return fn(updates, **kwargs)


def chain(*stages: Callable) -> Callable:
  """Composes pre-aggregators with a final rule: ``chain(nnm, krum)``.

  Returns ``fn(updates, *, key=None, mask=None, **hparams) -> [d]``. Each
  stage receives the keyword hyper-parameters its signature accepts (so
  ``chain(agg.nnm, agg.krum)(u, num_byzantine=2)`` gives both stages f=2);
  bind stage-specific values with ``functools.partial``. ``key`` is split
  between the stages that take one; ``mask`` goes to the first stage (later
  stages see excluded rows as NaN rows).

  Raises:
    ValueError: if no stage is given.
  """
  if not stages:
    raise ValueError("chain needs at least one stage (the final rule).")

  def fn(updates, *, key=None, mask=None, **hparams):
    keys = list(jax.random.split(key, len(stages))) if key is not None else [None] * len(stages)
    out = updates
    for i, stage in enumerate(stages):
      out = call_with_accepted(stage, out, key=keys[i], mask=mask if i == 0 else None,
                               **hparams)
    return out

  fn.__name__ = "chain(" + ", ".join(getattr(getattr(s, "func", s), "__name__", "?")
                                     for s in stages) + ")"
  return fn
