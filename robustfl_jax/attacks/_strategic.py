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

import functools
from typing import Any, Callable, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax

from robustfl_jax.attacks import _adaptive
from robustfl_jax.attacks import _common

Array = jax.Array
Rule = Callable[[Array], Array]

DISTANCE_RULES = ("mean", "median", "coordinate_median", "trimmed_mean", "krum",
                  "geometric_median", "centered_clipping")


def _weiszfeld(updates: Array, max_iter: int, smoothing: float) -> Array:
  """Smoothed Weiszfeld with a fixed step count (``fori_loop``: differentiable)."""
  x = updates.astype(jnp.float32)

  def step(_, z):
    dist = jnp.sqrt(jnp.sum(jnp.square(x - z), axis=1) + smoothing ** 2)
    beta = 1.0 / dist
    return (beta / jnp.sum(beta)) @ x

  return jax.lax.fori_loop(0, max_iter, step, jnp.mean(x, axis=0))


def _sorted_rows(updates: Array, lo: int, hi: int) -> Array:
  """Rows ``lo..hi-1`` of the column-wise sort, differentiable as a gather.

  The order is computed without gradient and the values gathered with
  ``take_along_axis``, whose transpose is a cheap scatter (reverse-mode
  through ``jnp.sort`` on ``[n, d]`` is much slower on CPU). Assumes finite
  rows (the attack's and the honest ones are).
  """
  x = updates.astype(jnp.float32)
  order = jnp.argsort(jax.lax.stop_gradient(x), axis=0)[lo:hi]
  return jnp.take_along_axis(x, order, axis=0)


def _median(updates: Array) -> Array:
  n = updates.shape[0]
  rows = _sorted_rows(updates, (n - 1) // 2, n // 2 + 1)
  return 0.5 * (rows[0] + rows[-1])


def _trimmed_mean(updates: Array, num_trim: int) -> Array:
  n = updates.shape[0]
  if not 0 <= 2 * num_trim < n:
    raise ValueError(f"distance_bounded: trimmed_mean needs 0 <= 2 num_trim < n;"
                     f" got num_trim={num_trim}, n={n}.")
  return jnp.mean(_sorted_rows(updates, num_trim, n - num_trim), axis=0)


def differentiable_rule(name: str, *, num_byzantine: int = 0,
                        num_trim: Optional[int] = None, radius: float = 10.0,
                        num_iters: int = 1, max_iter: int = 10,
                        center: Optional[Array] = None) -> Rule:
  """A reverse-differentiable ``rule(updates [n, d]) -> [d]`` by name.

  The coordinate median and trimmed mean as gathers of the column-wise
  order statistics (equal to the library's on finite rows); Krum as the
  library computes it (the gradient reaches the selected row); the geometric
  median as ``max_iter`` smoothed Weiszfeld steps in a ``fori_loop`` (the
  library's ``while_loop`` form has no reverse-mode derivative; with enough
  steps both agree); centered clipping around ``center`` (zeros when None:
  the attacker does not see the server's previous aggregate).

  Raises:
    ValueError: an unknown name (one of :data:`DISTANCE_RULES`).
  """
  from robustfl_jax import aggregators as agg  # pylint: disable=import-outside-toplevel
  if name == "mean":
    return agg.mean
  if name in ("median", "coordinate_median"):
    return _median
  if name == "trimmed_mean":
    trim = num_byzantine if num_trim is None else num_trim
    return functools.partial(_trimmed_mean, num_trim=int(trim))
  if name == "krum":
    return functools.partial(agg.krum, num_byzantine=num_byzantine)
  if name == "geometric_median":
    return functools.partial(_weiszfeld, max_iter=max_iter, smoothing=1e-5)
  if name == "centered_clipping":
    return functools.partial(agg.centered_clipping, center=center,
                             radius=radius, num_iters=num_iters)
  raise ValueError(f"distance_bounded: rule={name!r} is not a distance rule it "
                   f"knows; choose one of {DISTANCE_RULES} or pass a callable.")


def distance_bounded(rule: Any, rule_hparams: Optional[dict] = None,
                     budget: Any = 1.0, num_steps: int = 30,
                     step_size: Any = 0.1) -> Callable:
  """Builds the distance-bounded adversary against a distance-based rule.

  Maximises ``|rule(updates with Byzantine rows Y) - honest mean|^2`` over
  ``Y`` with every Byzantine row inside the ball of radius ``budget * R``
  around the honest mean (``R``: the largest distance from an honest update
  to the honest mean; ``budget = 1`` is "no farther than some honest
  client"), by ``num_steps`` projected gradient steps through the rule
  (:func:`robustfl_jax.attacks.gradient_attack`).

  Args:
    rule: a name from :data:`DISTANCE_RULES` (built with
      :func:`differentiable_rule` and ``rule_hparams``) or a differentiable
      callable ``rule(updates) -> [d]``.
    rule_hparams: keyword arguments of :func:`differentiable_rule`
      (``num_byzantine``, ``num_trim``, ``radius``, ``num_iters``,
      ``max_iter``); keys it does not take are ignored.
    budget: the ball radius relative to ``R``, >= 0.
    num_steps: projected ascent steps.
    step_size: step length as a fraction of the radius.

  Returns:
    ``attack(key, updates, byzantine_mask) -> updates``.

  Guarantees: every Byzantine row is within ``budget * R`` of the honest mean
  (up to float rounding; tested); honest rows are returned unchanged.
  """
  if isinstance(rule, str):
    hp = dict(rule_hparams or {})
    known = ("num_byzantine", "num_trim", "radius", "num_iters", "max_iter")
    hp = {k: v for k, v in hp.items() if k in known and v is not None}
    rule_fn = differentiable_rule(rule, **hp)
    name = rule
  else:
    rule_fn, name = rule, getattr(rule, "__name__", "rule")
  attack = _adaptive.gradient_attack(rule_fn, budget=budget,
                                     num_steps=num_steps, step_size=step_size,
                                     relative=True)

  def distance_bounded_attack(key, updates, byzantine_mask):
    if key is None:
      key = jax.random.PRNGKey(0)
    return attack(key, updates, byzantine_mask)

  distance_bounded_attack.__doc__ = f"distance_bounded attack against {name}."
  return distance_bounded_attack


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
    ``attack(key, updates, byzantine_mask, *, global_params)``; the function
    has ``needs_global_params = True`` (the round passes the flat global
    parameters to such attacks).

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

  attack.needs_global_params = True
  attack.__name__ = "validation_evading"
  return attack
