"""Shared helpers for model-poisoning attacks.

Every attack in this package is a pure function
``attack(key, updates, byzantine_mask, **hparams) -> updates`` over stacked
client updates ``updates: [n, d]`` (row ``i`` is client ``i``) and a boolean
``byzantine_mask: [n]``. Three conventions hold for all of them:

* Only rows where ``byzantine_mask`` is ``True`` change; honest rows come back
  bit-identical, and the output keeps the input's shape and dtype. The mask may
  be a traced array, so the code selects rows with ``jnp.where`` and computes
  statistics with masked sums, never with Python indexing.
* "Honest statistics" (mean, standard deviation, distances) are taken over the
  rows with ``byzantine_mask == False``. When every row is Byzantine there are
  no honest rows; the statistics are then taken over all rows, i.e. over the
  attacker's own updates, which is exactly what a non-omniscient attacker sees
  (the setting of Baruch et al. 2019). The result is finite and documented in
  each attack.
* Low-precision inputs (bfloat16, float16) are processed in float32 and cast
  back, so searches and square roots do not run in 8 bits of mantissa.
"""

from __future__ import annotations

import numbers
import operator
from typing import Any, Optional

import jax
import jax.numpy as jnp

Array = jax.Array


def check_inputs(name: str, updates: Any, byzantine_mask: Any) -> tuple[Array, Array]:
  """Validates shapes and dtypes eagerly; returns ``(updates, bool mask)``."""
  updates = jnp.asarray(updates)
  byzantine_mask = jnp.asarray(byzantine_mask)
  if updates.ndim != 2:
    raise ValueError(
        f"{name} needs updates of shape [n, d]; got shape {tuple(updates.shape)}.")
  if not jnp.issubdtype(updates.dtype, jnp.floating):
    raise ValueError(
        f"{name} needs floating-point updates; got dtype {updates.dtype}.")
  if byzantine_mask.shape != (updates.shape[0],):
    raise ValueError(
        f"{name} needs byzantine_mask of shape [n] = [{updates.shape[0]}]; "
        f"got shape {tuple(byzantine_mask.shape)}.")
  return updates, byzantine_mask.astype(bool)


def compute_dtype(dtype: Any) -> Any:
  """float32 for low-precision inputs, the input dtype otherwise."""
  return jnp.promote_types(dtype, jnp.float32)


def static_int(name: str, arg: str, value: Any, minimum: int = 0) -> int:
  """Validates a shape-deciding hyper-parameter as a Python int >= minimum."""
  try:
    value = operator.index(value)
  except TypeError:
    raise ValueError(
        f"{name} needs {arg} to be a Python int (it decides shapes or loop "
        f"lengths); got {value!r}.") from None
  if value < minimum:
    raise ValueError(f"{name} needs {arg} >= {minimum}; got {arg}={value}.")
  return value


def is_python_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(name: str, arg: str, value: Any, strict: bool = True) -> None:
  """Checks a Python-number hyper-parameter; traced values pass unchecked."""
  if is_python_number(value):
    if strict and not value > 0:
      raise ValueError(f"{name} needs {arg} > 0; got {arg}={value}.")
    if not strict and not value >= 0:
      raise ValueError(f"{name} needs {arg} >= 0; got {arg}={value}.")


def check_choice(name: str, arg: str, value: Any, choices: tuple[str, ...]) -> str:
  if value not in choices:
    raise ValueError(
        f"{name} needs {arg} to be one of {', '.join(map(repr, choices))}; "
        f"got {value!r}.")
  return value


def reference_mask(byzantine_mask: Array) -> Array:
  """Rows the honest statistics are taken over (all rows if none is honest)."""
  honest = ~byzantine_mask
  return jnp.where(jnp.any(honest), honest, jnp.ones_like(honest))


def masked_mean(x: Array, rows: Array) -> Array:
  """Mean of the selected rows of ``x: [n, d]``; ``rows`` must select >= 1 row.

  ``jnp.where`` (not a 0/1 weight product) keeps NaN or Inf in unselected rows
  from leaking into the result.
  """
  count = jnp.maximum(jnp.sum(rows), 1).astype(x.dtype)
  return jnp.sum(jnp.where(rows[:, None], x, 0), axis=0) / count


def masked_std(x: Array, rows: Array, mean: Optional[Array] = None) -> Array:
  """Population (ddof=0) standard deviation of the selected rows, per column."""
  if mean is None:
    mean = masked_mean(x, rows)
  count = jnp.maximum(jnp.sum(rows), 1).astype(x.dtype)
  sq = jnp.where(rows[:, None], jnp.square(x - mean), 0)
  return jnp.sqrt(jnp.sum(sq, axis=0) / count)


def honest_mean_and_std(x: Array, byzantine_mask: Array) -> tuple[Array, Array]:
  rows = reference_mask(byzantine_mask)
  mean = masked_mean(x, rows)
  return mean, masked_std(x, rows, mean)


def sq_distances_to(x: Array, point: Array) -> Array:
  """Squared Euclidean distance of every row of ``x`` to ``point``: ``[n]``."""
  return jnp.sum(jnp.square(x - point), axis=-1)


def direct_pairwise_sq_distances(x: Array) -> Array:
  """``[n, n]`` squared distances by direct differences, one row at a time.

  Direct differences (not the Gram form of
  :func:`robustfl_jax.aggregators.pairwise_sq_distances`) keep small distances between large
  rows exact in float32, which the searches below compare against thresholds;
  the diagonal is exactly zero.
  """
  return jax.lax.map(lambda row: sq_distances_to(x, row), x)


def replace_rows(updates: Array, byzantine_mask: Array, poisoned: Array) -> Array:
  """Byzantine rows from ``poisoned`` (``[n, d]`` or ``[d]``), others unchanged."""
  poisoned = jnp.broadcast_to(poisoned, updates.shape).astype(updates.dtype)
  return jnp.where(byzantine_mask[:, None], poisoned, updates)


def poison_direction(kind: str, mean: Array, std: Array) -> Array:
  """The perturbation directions of Shejwalkar & Houmansadr (NDSS 2021).

  ``"unit"``: ``-mean / ||mean||`` (zero if the mean is zero); ``"std"``:
  ``-std``; ``"sign"``: ``-sign(mean)``.
  """
  if kind == "unit":
    norm = jnp.linalg.norm(mean)
    return jnp.where(norm > 0, -mean / jnp.where(norm > 0, norm, 1), 0)
  if kind == "std":
    return -std
  if kind == "sign":
    return -jnp.sign(mean)
  raise ValueError(
      f"direction must be one of 'unit', 'std', 'sign'; got {kind!r}.")


DIRECTIONS = ("unit", "std", "sign")
