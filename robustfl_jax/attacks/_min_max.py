"""Min-Max and Min-Sum attacks of Shejwalkar & Houmansadr (NDSS 2021).

Both craft one malicious update ``m = mean + gamma * p`` from the honest mean
and a perturbation direction ``p`` (``"unit"``: ``-mean / ||mean||``,
``"std"``: ``-std``, ``"sign"``: ``-sign(mean)``), with the largest ``gamma``
for which ``m`` stays as close to the honest updates as they are to each other:

* Min-Max: ``max_i ||m - u_i||^2 <= max_{i,j} ||u_i - u_j||^2``;
* Min-Sum: ``sum_i ||m - u_i||^2 <= max_i sum_j ||u_i - u_j||^2``

(``i``, ``j`` over honest rows). ``gamma`` is found by the paper's Algorithm 1:
start at ``gamma_init`` with step ``gamma_init / 2``; after each test move up by
the step if the constraint holds (remembering that ``gamma``) and down
otherwise, halving the step, until the last success and the current ``gamma``
differ by at most ``tolerance``. Both constraints are convex in ``gamma`` and
hold at ``gamma = 0`` (the mean lies in the honest convex hull), so the
feasible ``gamma`` form an interval ``[0, gamma*]`` and the search returns
``gamma*`` up to the tolerance, capped at ``2 * gamma_init`` (the farthest
point the halving can reach).
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from robustfl_jax.attacks import _common
from robustfl_jax.attacks._registry import register_attack

Array = jax.Array


def _search(name: str, updates: Array, byzantine_mask: Array, direction: str,
            gamma_init: Any, tolerance: Any, max_iter: int, objective: str) -> Array:
  updates, byzantine_mask = _common.check_inputs(name, updates, byzantine_mask)
  _common.check_choice(name, "direction", direction, _common.DIRECTIONS)
  _common.check_positive(name, "gamma_init", gamma_init)
  _common.check_positive(name, "tolerance", tolerance)
  max_iter = _common.static_int(name, "max_iter", max_iter, minimum=1)

  return _search_impl(updates, byzantine_mask, gamma_init, tolerance,
                      direction=direction, max_iter=max_iter, objective=objective)


@functools.partial(jax.jit, static_argnames=("direction", "max_iter", "objective"))
def _search_impl(updates, byzantine_mask, gamma_init, tolerance, *, direction,
                 max_iter, objective):
  ct = _common.compute_dtype(updates.dtype)
  x = updates.astype(ct)
  rows = _common.reference_mask(byzantine_mask)
  mean, std = _common.honest_mean_and_std(x, byzantine_mask)
  perturbation = _common.poison_direction(direction, mean, std)

  pair = _common.direct_pairwise_sq_distances(x)
  pair = jnp.where(rows[:, None] & rows[None, :], pair, 0)
  if objective == "max":
    bound = jnp.max(pair)
  else:
    bound = jnp.max(jnp.sum(pair, axis=1))

  def feasible(gamma):
    sq = jnp.where(rows, _common.sq_distances_to(x, mean + gamma * perturbation), 0)
    value = jnp.max(sq) if objective == "max" else jnp.sum(sq)
    return value <= bound

  tolerance = jnp.asarray(tolerance, ct)
  gamma_init = jnp.asarray(gamma_init, ct)

  def cond(state):
    gamma, _, succ, i = state
    return (jnp.abs(succ - gamma) > tolerance) & (i < max_iter)

  def body(state):
    gamma, step, succ, i = state
    ok = feasible(gamma)
    succ = jnp.where(ok, gamma, succ)
    gamma = jnp.where(ok, gamma + step, gamma - step)
    return gamma, step / 2, succ, i + 1

  init = (gamma_init, gamma_init / 2, jnp.zeros((), ct), 0)
  _, _, gamma, _ = jax.lax.while_loop(cond, body, init)
  return _common.replace_rows(updates, byzantine_mask, mean + gamma * perturbation)


@register_attack()
def min_max(key: Optional[Array], updates: Array, byzantine_mask: Array,
            direction: str = "unit", gamma_init: Any = 10.0,
            tolerance: Any = 1e-5, max_iter: int = 64) -> Array:
  """Min-Max attack: the farthest ``mean + gamma * p`` no farther from any honest
  update than the two most distant honest updates are from each other.

  See the module docstring for the constraint and the search.

  References:
    V. Shejwalkar, A. Houmansadr. Manipulating the Byzantine: Optimizing Model
    Poisoning Attacks and Defenses for Federated Learning. NDSS 2021
    (Section IV, Algorithm 1, AGR-agnostic Min-Max).

  Args:
    key: unused.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.
    direction: ``"unit"`` (inverse unit vector), ``"std"`` (inverse standard
      deviation) or ``"sign"`` (inverse sign), static.
    gamma_init: the search's starting scale (the paper's 10), > 0; the search
      never exceeds ``2 * gamma_init``.
    tolerance: the search's stopping tolerance ``tau`` (the paper's 1e-5), > 0.
    max_iter: static cap on search steps.

  Returns:
    ``[n, d]`` updates; all Byzantine rows equal ``mean + gamma * p``.

  Raises:
    ValueError: for an unknown ``direction`` or non-positive search settings.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: statistics over all rows.
    One honest row, or identical honest rows: the bound is 0, so only
    ``gamma = 0`` is feasible and the Byzantine rows copy the honest mean. A
    zero mean with ``direction="unit"`` or ``"sign"`` gives ``p = 0``.
  """
  del key
  return _search("min_max", updates, byzantine_mask, direction, gamma_init,
                 tolerance, max_iter, "max")


@register_attack()
def min_sum(key: Optional[Array], updates: Array, byzantine_mask: Array,
            direction: str = "unit", gamma_init: Any = 10.0,
            tolerance: Any = 1e-5, max_iter: int = 64) -> Array:
  """Min-Sum attack: the farthest ``mean + gamma * p`` whose sum of squared
  distances to the honest updates is at most the largest such sum of an
  honest update.

  See the module docstring for the constraint and the search.

  References:
    V. Shejwalkar, A. Houmansadr. Manipulating the Byzantine: Optimizing Model
    Poisoning Attacks and Defenses for Federated Learning. NDSS 2021
    (Section IV, Algorithm 1, AGR-agnostic Min-Sum).

  Args:
    key: unused.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.
    direction: ``"unit"``, ``"std"`` or ``"sign"``, static.
    gamma_init: the search's starting scale, > 0.
    tolerance: the search's stopping tolerance, > 0.
    max_iter: static cap on search steps.

  Returns:
    ``[n, d]`` updates; all Byzantine rows equal ``mean + gamma * p``.

  Raises:
    ValueError: for an unknown ``direction`` or non-positive search settings.

  Edge cases:
    As for :func:`min_max`.
  """
  del key
  return _search("min_sum", updates, byzantine_mask, direction, gamma_init,
                 tolerance, max_iter, "sum")
