"""Strategic adversaries of arXiv:2402.13700: distance-bounded and validation-evading.

Two adversaries that know the defence and stay inside its acceptance region:

* :func:`distance_bounded` against distance-based rules (mean, median,
  trimmed mean, Krum, geometric median, centered clipping): every Byzantine
  row stays within the honest updates' spread around the reference point (the
  ball of radius ``budget * R`` around the honest mean, ``R`` the largest
  distance of an honest update to it), and inside that ball the rows maximise
  the distance of the rule's output from the honest mean by projected
  gradient ascent through a differentiable form of the rule
  (:func:`robustfl_jax.attacks.gradient_attack`).
* :func:`validation_evading` against behaviour-based defences (the GAN
  filter, FLTrust) -- or, with no probe, against the distance ball: it trains a
  targeted poison (the target class relabelled, the other classes kept) from
  the honest mean, then sends the farthest point on the segment from the
  honest mean towards (and past) the poison whose defence score is still
  accepted and no lower than the lowest honest score.

References:
  On the Conflict of Robustness and Learning in Collaborative Machine
  Learning. arXiv:2402.13700 (2024).
  Cao, X. et al.: FLTrust. NDSS (2021) -- adaptive attacks that know the root
  set.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from robustfl_jax import aggregators
from robustfl_jax.attacks import _adaptive
from robustfl_jax.attacks import _common
from robustfl_jax.attacks._registry import register_factory

Array = jax.Array
Rule = Callable[[Array], Array]

DISTANCE_RULES = aggregators.DIFFERENTIABLE_RULES


OBJECTIVES = ("distance", "targeted")


def poison_objective(apply_fn: Callable, params_template: Any,
                       x_attack: Any, y_attack: Any, target_class: int,
                       flip_to: int) -> Callable[..., Array]:
  """The targeted objective: ``-CE`` of ``w + aggregate`` on the poison set.

  The poison set is the attacker's data with ``target_class`` relabelled
  ``flip_to`` (the other classes keep their labels), as in
  :func:`validation_evading`; maximising ``-CE`` (minimising the poison
  loss) maximises the loss of ``target_class`` under its true label while
  keeping the other classes. ``objective(aggregate, mean, *, global_params)``.
  """
  if target_class == flip_to:
    raise ValueError("distance_bounded (targeted) needs target != source; "
                     f"got both {target_class}.")
  x_attack = jnp.asarray(x_attack, jnp.float32)
  labels = jnp.where(jnp.asarray(y_attack) == target_class, flip_to,
                     jnp.asarray(y_attack)).astype(jnp.int32)
  _, unravel = jax.flatten_util.ravel_pytree(params_template)

  def objective(aggregate, mean, *, global_params):
    del mean
    flat = jnp.asarray(global_params, aggregate.dtype) + aggregate
    logits = apply_fn({"params": unravel(flat)}, x_attack, train=False)
    return -jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  return objective


def distance_bounded(rule: Any, rule_hparams: Optional[dict] = None,
                     budget: Any = 1.0, num_steps: int = 30,
                     step_size: Any = 0.1,
                     objective: Optional[Callable[..., Array]] = None
                     ) -> Callable:
  """Builds the distance-bounded adversary against a distance-based rule.

  Maximises ``|rule(updates with Byzantine rows Y) - honest mean|^2`` over
  ``Y`` with every Byzantine row inside the ball of radius ``budget * R``
  around the honest mean (``R``: the largest distance from an honest update
  to the honest mean; ``budget = 1`` is "no farther than some honest
  client"), by ``num_steps`` projected gradient steps through the rule
  (:func:`robustfl_jax.attacks.gradient_attack`). With ``objective`` (e.g.
  :func:`poison_objective`) the ascent maximises
  ``objective(rule(...), mean, global_params=w)`` instead, under the same
  bound: the strategic adversary of arXiv:2402.13700 pursuing a target class.

  Args:
    rule: a name from :data:`DISTANCE_RULES` (built with
      :func:`robustfl_jax.aggregators.differentiable_rule` and ``rule_hparams``) or a differentiable
      callable ``rule(updates) -> [d]``.
    rule_hparams: keyword arguments of :func:`robustfl_jax.aggregators.differentiable_rule`
      (``num_byzantine``, ``num_trim``, ``radius``, ``num_iters``,
      ``max_iter``); keys it does not take are ignored.
    budget: the ball radius relative to ``R``, >= 0.
    num_steps: projected ascent steps.
    step_size: step length as a fraction of the radius.
    objective: None (the distance) or ``objective(aggregate, mean, *,
      global_params) -> scalar`` to maximise.

  Returns:
    ``attack(key, updates, byzantine_mask)``, or with ``objective``
    ``attack(key, updates, byzantine_mask, *, global_params)``.

  Guarantees: every Byzantine row is within ``budget * R`` of the honest mean
  (up to float rounding; tested); honest rows are returned unchanged.
  """
  if isinstance(rule, str):
    hp = dict(rule_hparams or {})
    known = ("num_byzantine", "num_trim", "radius", "num_iters", "max_iter")
    hp = {k: v for k, v in hp.items() if k in known and v is not None}
    rule_fn = aggregators.differentiable_rule(rule, **hp)
    name = rule
  else:
    rule_fn, name = rule, getattr(rule, "__name__", "rule")
  attack = _adaptive.gradient_attack(rule_fn, budget=budget,
                                     num_steps=num_steps, step_size=step_size,
                                     relative=True, objective=objective)

  if objective is None:
    def distance_bounded_attack(key, updates, byzantine_mask):
      if key is None:
        key = jax.random.PRNGKey(0)
      return attack(key, updates, byzantine_mask)
  else:
    def distance_bounded_attack(key, updates, byzantine_mask, *,
                                global_params):
      if key is None:
        key = jax.random.PRNGKey(0)
      return attack(key, updates, byzantine_mask,
                    global_params=global_params)

  distance_bounded_attack.__doc__ = f"distance_bounded attack against {name}."
  return distance_bounded_attack


@register_factory("distance_bounded")
def _distance_bounded_against_rule(*, rule_name: str,
                                   rule_hparams: Optional[dict] = None,
                                   apply_fn: Optional[Callable] = None,
                                   params: Any = None, dataset: Any = None,
                                   seed: int = 0,
                                   budget: float = 1.0, num_steps: int = 30,
                                   step_size: float = 0.1,
                                   objective: str = "distance",
                                   source: int = 6, target: int = 3,
                                   attacker_per_class: int = 20) -> Callable:
  """:func:`distance_bounded` against the experiment's rule (by its name).

  ``objective="targeted"`` maximises the poison objective of
  :func:`poison_objective` (class ``source`` pushed to ``target``) on
  ``attacker_per_class`` training examples per class (the validation-evading
  adversary's data, same draw) under the same distance bound.
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"objective={objective!r} is not known; choose one of "
                     f"{OBJECTIVES}.")
  fn = None
  if objective == "targeted":
    if apply_fn is None or params is None or dataset is None:
      raise ValueError("objective='targeted' needs the model and the data "
                       "set (an experiment supplies them).")
    x_attack, y_attack = attacker_sample(dataset.x_train, dataset.y_train,
                                         attacker_per_class,
                                         dataset.num_classes, seed + 1)
    fn = poison_objective(apply_fn, params, x_attack, y_attack, source,
                            target)
  return distance_bounded(rule_name, rule_hparams, budget=budget,
                          num_steps=num_steps, step_size=step_size,
                          objective=fn)


def honest_ball(updates: Array, byzantine_mask: Array) -> tuple[Array, Array]:
  """``(honest mean [d], R)``: the reference point and the honest spread."""
  x = updates.astype(_common.compute_dtype(updates.dtype))
  rows = _common.reference_mask(byzantine_mask)
  mean = _common.masked_mean(x, rows)
  return mean, _adaptive._honest_radius(x, rows, mean)  # pylint: disable=protected-access


def validation_evading(*, apply_fn: Callable, params_template: Any,
                       x_attack: Any, y_attack: Any, target_class: int,
                       flip_to: int, probe: Any = None, poison_steps: int = 20,
                       poison_lr: float = 0.5, num_candidates: int = 9,
                       max_scale: float = 4.0) -> Callable:
  """Builds the validation-evading adversary.

  Each round, from the global parameters ``w`` and the honest mean ``mu``:

  1. *poison*: ``poison_steps`` full-batch gradient steps from ``w + mu`` on
     the cross-entropy of the attacker's data with ``target_class`` relabelled
     ``flip_to`` (the other classes keep their labels, so the model stays good
     on them), giving ``p`` (as an update);
  2. *evade*: candidates ``mu + a (p - mu)`` for ``a`` in ``[0, max_scale]``
     (``num_candidates`` evenly spaced; ``a > 1`` boosts the poison); the
     adversary sends the largest ``a`` whose candidate, sent by every
     Byzantine client, is accepted by the defence (``probe.accept``) and
     scores no lower than the lowest honest client (``probe.score``). With
     ``probe=None`` the acceptance region is the distance ball of
     :func:`distance_bounded` (radius ``R`` around ``mu``), solved exactly.
     When no candidate passes, the honest mean is sent.

  The adversary knows the defence (white box, Kerckhoffs): it calls the
  probe with its own key, so against the GAN filter it draws its own synthetic
  set from the server's generator but not the server's draw; against FLTrust
  it knows the root set, as in Cao et al.'s adaptive attack.

  Args:
    apply_fn: the model's flax ``apply``.
    params_template: example parameters (fixes the flattening).
    x_attack: ``[A, ...]`` the attacker's data.
    y_attack: ``int[A]`` its labels.
    target_class: the class to poison.
    flip_to: the label its samples are pushed to.
    probe: a :class:`robustfl_jax.defenses.BehaviourProbe`, or None.
    poison_steps: static number of poison steps.
    poison_lr: their SGD step size.
    num_candidates: static number of scales tried, >= 2.
    max_scale: the largest scale, > 0.

  Returns:
    ``attack(key, updates, byzantine_mask, *, global_params)``: it reads the
    flat global parameters from the round's context.

  Raises:
    ValueError: out-of-range settings or a class outside the labels.
  """
  poison_steps = _common.static_int("validation_evading", "poison_steps", poison_steps)
  num_candidates = _common.static_int("validation_evading", "num_candidates",
                                      num_candidates, minimum=2)
  _common.check_positive("validation_evading", "poison_lr", poison_lr)
  _common.check_positive("validation_evading", "max_scale", max_scale)
  x_attack = jnp.asarray(x_attack, jnp.float32)
  y_attack = jnp.asarray(y_attack, jnp.int32)
  if target_class == flip_to:
    raise ValueError("validation_evading needs flip_to != target_class; got "
                     f"both {target_class}.")
  _, unravel = jax.flatten_util.ravel_pytree(params_template)
  labels = jnp.where(y_attack == target_class, flip_to, y_attack)
  scales = jnp.linspace(0.0, max_scale, num_candidates)

  def poison_loss(flat):
    logits = apply_fn({"params": unravel(flat)}, x_attack, train=False)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  def attack(key, updates, byzantine_mask, *, global_params):
    updates, byzantine_mask = _common.check_inputs("validation_evading", updates,
                                                   byzantine_mask)
    if key is None:
      key = jax.random.PRNGKey(0)
    ct = _common.compute_dtype(updates.dtype)
    x = updates.astype(ct)
    mean, radius = honest_ball(x, byzantine_mask)
    w = jnp.asarray(global_params, ct)

    def step(_, flat):
      return flat - poison_lr * jax.grad(poison_loss)(flat)

    poisoned = jax.lax.fori_loop(0, poison_steps, step, w + mean) - w
    direction = poisoned - mean
    if probe is None:
      norm = jnp.linalg.norm(direction)
      scale = jnp.minimum(max_scale, radius / jnp.where(norm > 0, norm, 1))
      return _common.replace_rows(updates, byzantine_mask, mean + scale * direction)
    candidates = mean[None, :] + scales[:, None] * direction[None, :]
    honest = _common.reference_mask(byzantine_mask)
    finite = jnp.all(jnp.isfinite(x), axis=1)
    rows = jnp.where(finite[:, None], x, 0)
    ref = probe.reference(w, key)
    own = probe.score(ref, w, rows)
    cand = probe.score(ref, w, candidates)
    floor = jnp.min(jnp.where(honest & finite, own, jnp.inf))

    def passes(s):
      scores = jnp.where(byzantine_mask, s, own)
      kept = probe.accept(ref, scores, finite | byzantine_mask)
      return jnp.all(jnp.where(byzantine_mask, kept, True)) & (s >= floor)

    ok = jax.vmap(passes)(cand)
    best = jnp.max(jnp.where(ok, jnp.arange(num_candidates), -1))
    chosen = jnp.where(best >= 0, candidates[jnp.maximum(best, 0)], mean)
    return _common.replace_rows(updates, byzantine_mask, chosen)

  attack.__name__ = "validation_evading"
  return attack


def attacker_sample(x: Any, y: Any, per_class: int, num_classes: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Up to ``per_class`` examples of each class: the adversary's own data."""
  x, y = np.asarray(x), np.asarray(y)
  rng = np.random.default_rng(seed)
  idx = np.concatenate([
      rng.choice(np.flatnonzero(y == c), min(per_class, int(np.sum(y == c))),
                 replace=False) for c in range(num_classes)])
  return x[np.sort(idx)], y[np.sort(idx)]


@register_factory("validation_evading")
def _validation_evading_from_data(*, apply_fn: Callable, params: Any,
                                  dataset: Any, seed: int = 0,
                                  probe: Any = None, source: int = 6,
                                  target: int = 3, attacker_per_class: int = 20,
                                  poison_steps: int = 20,
                                  poison_lr: float = 0.5,
                                  num_candidates: int = 9,
                                  max_scale: float = 4.0) -> Callable:
  """:func:`validation_evading` for an experiment: class ``source`` is
  poisoned towards ``target``, with ``attacker_per_class`` training examples
  of each class as the adversary's data, against the defense's ``probe``
  (the distance ball when the defense has none)."""
  x_attack, y_attack = attacker_sample(dataset.x_train, dataset.y_train,
                                       attacker_per_class, dataset.num_classes,
                                       seed + 1)
  return validation_evading(
      apply_fn=apply_fn, params_template=params, x_attack=x_attack,
      y_attack=y_attack, target_class=source, flip_to=target, probe=probe,
      poison_steps=poison_steps, poison_lr=poison_lr,
      num_candidates=num_candidates, max_scale=max_scale)
