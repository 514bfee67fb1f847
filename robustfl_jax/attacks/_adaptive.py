"""Adaptive attacks that use the aggregation rule itself, and the stealth mix.

The factories here take a rule ``rule(updates) -> [d]`` (any callable, e.g.
``functools.partial(aggregators.trimmed_mean, num_trim=2)``) and return an
attack ``attack(key, updates, byzantine_mask) -> updates`` with the common
contract: pure, jittable, only Byzantine rows change, dtype kept. In a
config the rule is the experiment's own aggregator (the ``rule`` context).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from robustfl_jax.attacks import _common
from robustfl_jax.attacks._registry import (Attack, as_attack, get,
                                            register_factory)

Array = jax.Array
Rule = Callable[[Array], Array]
AttackFn = Callable[[Array, Array, Array], Array]

_GOLDEN = 0.6180339887498949


def _honest_radius(x: Array, rows: Array, mean: Array) -> Array:
  """Largest distance from an honest row to the honest mean."""
  return jnp.sqrt(jnp.max(jnp.where(rows, _common.sq_distances_to(x, mean), 0)))


def _deviation(rule: Rule, x: Array, byzantine_mask: Array, rows_value: Array,
               mean: Array) -> Array:
  """``||rule(poisoned) - mean||`` with NaN mapped to -inf (a failed candidate)."""
  out = rule(jnp.where(byzantine_mask[:, None], rows_value, x)).astype(x.dtype)
  dev = jnp.linalg.norm(out - mean)
  return jnp.where(jnp.isnan(dev), -jnp.inf, dev)


@register_factory()
def aggregator_aware(rule: Rule, direction: str = "unit", max_scale: Any = 10.0,
                     num_grid: int = 33, num_refine: int = 16) -> AttackFn:
  """Builds an attack that tunes ``mean + gamma * p`` against a given rule.

  All Byzantine rows send ``mean + t * R * p / ||p||`` where ``p`` is the
  perturbation direction (``"unit"``: ``-mean / ||mean||``, ``"std"``:
  ``-std``, ``"sign"``: ``-sign(mean)``, as in Shejwalkar & Houmansadr),
  ``R`` is the largest distance from an honest row to the honest mean (so
  ``t`` is scale-free: ``t = 1`` reaches the farthest honest row's distance)
  and ``t`` in ``[0, max_scale]`` maximises ``||rule(poisoned) -
  honest mean||``. The search evaluates ``num_grid`` evenly spaced ``t``
  (``lax.map``), then refines around the best one with ``num_refine``
  golden-section steps (``lax.fori_loop``) and keeps the better of the two.
  This is the AGR-tailored attack of Shejwalkar & Houmansadr with the rule's
  output itself as the objective, for any rule.

  References:
    V. Shejwalkar, A. Houmansadr. Manipulating the Byzantine: Optimizing Model
    Poisoning Attacks and Defenses for Federated Learning. NDSS 2021
    (Section IV-B, AGR-tailored attacks).

  Args:
    rule: ``rule(updates: [n, d]) -> [d]``, jittable.
    direction: ``"unit"``, ``"std"`` or ``"sign"``.
    max_scale: largest ``t`` tried, > 0.
    num_grid: static number of grid points, >= 2.
    num_refine: static number of golden-section steps, >= 0.

  Returns:
    ``attack(key, updates, byzantine_mask) -> updates``.

  Raises:
    ValueError: for an unknown direction or out-of-range search settings.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: statistics over all
    rows. A zero direction (e.g. zero mean with ``"unit"``) or identical honest
    rows (``R = 0``) give the honest mean. If the rule returns NaN for a
    candidate, that candidate counts as the worst.
  """
  _common.check_choice("aggregator_aware", "direction", direction, _common.DIRECTIONS)
  _common.check_positive("aggregator_aware", "max_scale", max_scale)
  num_grid = _common.static_int("aggregator_aware", "num_grid", num_grid, minimum=2)
  num_refine = _common.static_int("aggregator_aware", "num_refine", num_refine)

  def attack(key, updates, byzantine_mask):
    del key
    updates, byzantine_mask = _common.check_inputs("aggregator_aware", updates, byzantine_mask)
    ct = _common.compute_dtype(updates.dtype)
    x = updates.astype(ct)
    rows = _common.reference_mask(byzantine_mask)
    mean, std = _common.honest_mean_and_std(x, byzantine_mask)
    p = _common.poison_direction(direction, mean, std)
    p_norm = jnp.linalg.norm(p)
    unit = jnp.where(p_norm > 0, p / jnp.where(p_norm > 0, p_norm, 1), 0)
    step = _honest_radius(x, rows, mean) * unit

    def objective(t):
      return _deviation(rule, x, byzantine_mask, mean + t * step, mean)

    grid = jnp.linspace(0, jnp.asarray(max_scale, ct), num_grid, dtype=ct)
    values = jax.lax.map(objective, grid)
    best = jnp.argmax(values)
    lo = grid[jnp.maximum(best - 1, 0)]
    hi = grid[jnp.minimum(best + 1, num_grid - 1)]

    def golden(_, bounds):
      a, b = bounds
      c = b - _GOLDEN * (b - a)
      e = a + _GOLDEN * (b - a)
      keep_left = objective(c) >= objective(e)
      return jnp.where(keep_left, a, c), jnp.where(keep_left, e, b)

    a, b = jax.lax.fori_loop(0, num_refine, golden, (lo, hi))
    refined = (a + b) / 2
    t = jnp.where(objective(refined) > values[best], refined, grid[best])
    return _common.replace_rows(updates, byzantine_mask, mean + t * step)

  attack.__name__ = "aggregator_aware"
  attack.__doc__ = f"aggregator_aware attack against {getattr(rule, '__name__', rule)!s}."
  return jax.jit(attack)


@register_factory()
def gradient_attack(rule: Rule, budget: Any = 1.0, num_steps: int = 50,
                    step_size: Any = 0.1, relative: bool = True,
                    objective: Optional[Callable[..., Array]] = None
                    ) -> AttackFn:
  """Builds a gradient-based attack through a differentiable rule.

  The Byzantine rows ``Y`` maximise ``||rule(updates with Y) - mean||^2`` by
  projected gradient ascent (``jax.grad`` through ``rule``): each step moves
  every Byzantine row by ``step_size * radius`` along its normalised gradient,
  then projects it back into the ball of radius ``radius`` around the honest
  mean, where ``radius = budget * R`` with ``R`` the largest distance from an
  honest row to the honest mean (``relative=True``: the adversary looks no
  farther from the centre than some honest client) or ``radius = budget``
  (``relative=False``, an absolute radius). The rows start at
  ``mean + radius * (-mean / ||mean||)`` plus a small random jitter from
  ``key`` (so colluders can separate) and the best iterate is returned. This
  is the strategic adversary of arXiv:2402.13700, who stays within a distance
  of a reference point that distance-based rules accept.

  References:
    On the Conflict of Robustness and Learning in Collaborative Machine
    Learning. arXiv:2402.13700 (2024).

  Args:
    rule: ``rule(updates: [n, d]) -> [d]``, differentiable with ``jax.grad``
      (sort-based median/trimmed mean, Krum-weighted means, fixed-iteration
      clipping work; a rule built on ``lax.while_loop`` does not support
      reverse-mode differentiation).
    budget: ball radius, relative to ``R`` or absolute, >= 0.
    num_steps: static number of ascent steps, >= 0.
    step_size: step length as a fraction of the radius, > 0.
    relative: whether ``budget`` is relative to ``R``.
    objective: ``objective(aggregate [d], honest_mean [d], **context) ->
      scalar`` to maximise instead of ``||aggregate - mean||^2``; the
      context keywords given to the attack are passed on (e.g. a targeted
      loss reads ``global_params``).

  Returns:
    ``attack(key, updates, byzantine_mask, **context) -> updates``.

  Raises:
    ValueError: for negative ``budget``, non-positive ``step_size`` or a
      non-int ``num_steps``.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: mean and ``R`` over all
    rows. ``budget=0``: the Byzantine rows send the honest mean. A zero
    gradient leaves a row where it is.
  """
  _common.check_positive("gradient_attack", "budget", budget, strict=False)
  _common.check_positive("gradient_attack", "step_size", step_size)
  num_steps = _common.static_int("gradient_attack", "num_steps", num_steps)

  def attack(key, updates, byzantine_mask, **context):
    updates, byzantine_mask = _common.check_inputs("gradient_attack", updates, byzantine_mask)
    ct = _common.compute_dtype(updates.dtype)
    x = updates.astype(ct)
    rows = _common.reference_mask(byzantine_mask)
    mean = _common.masked_mean(x, rows)
    scale = _honest_radius(x, rows, mean) if relative else jnp.ones((), ct)
    radius = jnp.asarray(budget, ct) * scale

    def project(y):
      offset = y - mean
      norm = jnp.linalg.norm(offset, axis=1, keepdims=True)
      shrink = jnp.where(norm > radius, radius / jnp.where(norm > 0, norm, 1), 1)
      return mean + offset * shrink

    def value(y):
      out = rule(jnp.where(byzantine_mask[:, None], y, x)).astype(ct)
      if objective is None:
        return jnp.sum(jnp.square(out - mean))
      return jnp.asarray(objective(out, mean, **context), ct)

    grad_fn = jax.value_and_grad(value)
    start = mean + radius * _common.poison_direction("unit", mean, mean)
    jitter_scale = 0.01 * radius / jnp.sqrt(jnp.asarray(x.shape[1], ct))
    jitter = jax.random.normal(key, x.shape, ct) * jitter_scale
    y0 = project(jnp.broadcast_to(start, x.shape) + jitter)

    def step(_, state):
      y, best_y, best_value = state
      value, grad = grad_fn(y)
      better = value > best_value
      best_y = jnp.where(better, y, best_y)
      best_value = jnp.where(better, value, best_value)
      grad = jnp.where(byzantine_mask[:, None], grad, 0)
      norm = jnp.linalg.norm(grad, axis=1, keepdims=True)
      direction = grad / jnp.where(norm > 0, norm, 1)
      y = project(y + jnp.asarray(step_size, ct) * radius * direction)
      return y, best_y, best_value

    init = (y0, y0, jnp.asarray(-jnp.inf, ct))
    y, best_y, best_value = jax.lax.fori_loop(0, num_steps, step, init)
    last_value = value(y)
    best_y = jnp.where(last_value > best_value, y, best_y)
    return _common.replace_rows(updates, byzantine_mask, best_y)

  attack.__name__ = "gradient_attack"
  attack.__doc__ = f"gradient_attack against {getattr(rule, '__name__', rule)!s}."
  return jax.jit(attack)


def stealth(attack: Any, alpha: Any = 0.5) -> Attack:
  """Builds a stealthier attack: ``(1 - alpha) * own update + alpha * poison``.

  Romoa's stealth factor ``alpha_t`` in ``[0, 1]`` lowers the poison dosage:
  the adversary's goal ``(1 - alpha) theta^a + alpha O^b`` mixes its own
  (honest) model with the poisoned one; ``alpha = 1`` is the full attack and
  ``alpha = 0`` no attack. Applied here on Byzantine rows of the updates;
  what the attack does to training or data is kept as it is.

  References:
    Y. Mao, X. Yuan, X. Zhao, S. Zhong. Romoa: Robust Model Aggregation for
    the Resistance of Federated Learning to Model Poisoning Attacks. ESORICS
    2021 (Section 3, "Stealth Factor").

  Args:
    attack: an attack function ``attack(key, updates, byzantine_mask) ->
      updates`` or an :class:`~robustfl_jax.attacks.Attack` (e.g. from
      :func:`robustfl_jax.attacks.get`).
    alpha: the stealth factor in ``[0, 1]``.

  Returns:
    An :class:`~robustfl_jax.attacks.Attack`, called as ``attack(key,
    updates, byzantine_mask, **context) -> updates``.

  Raises:
    ValueError: if ``alpha`` is a Python number outside ``[0, 1]``.

  Edge cases:
    ``alpha = 0`` returns the input exactly (even if the poison is NaN) and
    ``alpha = 1`` returns the poison exactly. No Byzantine rows: unchanged.
  """
  if _common.is_python_number(alpha) and not 0 <= alpha <= 1:
    raise ValueError(f"stealth needs 0 <= alpha <= 1; got alpha={alpha}.")
  inner = as_attack(attack)

  def mixed(key, updates, byzantine_mask, **context):
    updates, byzantine_mask = _common.check_inputs("stealth", updates, byzantine_mask)
    poison = jnp.asarray(inner(key, updates, byzantine_mask, **context))
    ct = _common.compute_dtype(updates.dtype)
    a = jnp.asarray(alpha, ct)
    own, bad = updates.astype(ct), poison.astype(ct)
    mixed = jnp.where(a == 1, bad, jnp.where(a == 0, own, (1 - a) * own + a * bad))
    return _common.replace_rows(updates, byzantine_mask, mixed)

  return dataclasses.replace(inner, name=f"stealth({inner.name})", update=mixed)


@register_factory("stealth", configurable=False)
def _stealth_by_name(*, attack: Any, alpha: Any = 0.5,
                     attack_hparams: Optional[dict] = None) -> Attack:
  """``stealth`` for configs: the inner attack may be a name with hparams."""
  if isinstance(attack, str):
    attack = get(attack, **(attack_hparams or {}))
  return stealth(attack, alpha)
