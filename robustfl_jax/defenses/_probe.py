"""What behaviour-based defences share: a probe that scores client models.

A behaviour-based defence judges an update by what the model it produces does
(its accuracy on validation data, its agreement with the server's own update),
not by where it lies among the other updates. Each defence here is built on a
:class:`BehaviourProbe`, three pure functions, which the defence's
``Aggregator`` calls every round and which a strategic adversary
(:func:`robustfl_jax.attacks.validation_evading`) can call too, to keep its
poisoned update inside the acceptance region.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from robustfl_jax.aggregators import base

Array = jax.Array


class BehaviourProbe(NamedTuple):
  """The scoring half of a behaviour-based defence.

  Attributes:
    reference: ``(global_params [d], key) -> ref``: per-round data the scores
      need (a synthetic validation set, the server's own update).
    score: ``(ref, global_params [d], updates [m, d]) -> f32[m]``, one score
      per row, each row scored on its own (rows must be finite).
    accept: ``(ref, scores [n], valid bool[n]) -> bool[n]``: the rows the
      defence keeps; statistics (median, clusters) are over the valid rows
      only.
  """

  reference: Callable[[Array, Array], Any]
  score: Callable[[Any, Array, Array], Array]
  accept: Callable[[Any, Array, Array], Array]


def accuracy_of(apply_fn: Callable, unravel: Callable, flat_params: Array,
                x: Array, y: Array) -> Array:
  """Accuracy of the model ``unravel(flat_params)`` on ``(x, y)``."""
  logits = apply_fn({"params": unravel(flat_params)}, x, train=False)
  return jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))


def finite_rows(updates: Array, mask=None) -> tuple[Array, Array]:
  """``(finite bool[n], valid bool[n])``: finite rows, and those also in ``mask``."""
  finite = base.valid_rows(updates)
  mask = base.check_mask(mask, updates.shape[0])
  return finite, finite if mask is None else finite & mask


def round_context(rule: str, global_params, key):
  """The key of a behaviour-based rule's update, after checking its context.

  Raises:
    ValueError: ``global_params`` is missing (the round always passes them).
  """
  if global_params is None:
    raise ValueError(f"{rule} needs the global parameters: call update(..., "
                     "global_params=<flat [d]>) (the round passes them).")
  return jax.random.PRNGKey(0) if key is None else key
