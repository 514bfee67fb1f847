"""Evasion attacks on a classifier: FGSM, PGD, APGD and the seed's AutoAttack.

Every attack works on a batch and takes the model as
``logits_fn(params, x) -> logits`` (the signature local training hands to a
:data:`robustfl_jax.fl.local.TrainLoss`), so the same code generates the
adversarial examples of evaluation and of adversarial training. Attacks are
jitted (``logits_fn`` and the shape-deciding settings are static), clip to the
valid input range ``[clip_min, clip_max]`` (``[0, 1]`` for every data set of
the library) and stay inside the ``epsilon`` ball of their ``norm``
(``"linf"`` or ``"l2"``, per example). Projection onto the ball is followed by
clipping to the box: since the clean point lies in the box, clipping never
moves a point out of the ball.

Untargeted attacks maximise the loss of the true label ``y``; given
``target`` (an ``int[B]`` of target labels) an attack minimises the loss of
the target instead (for the cross-entropy: ascends ``-CE(target)``).

Example:
  >>> logits_fn = lambda p, x: model.apply({"params": p}, x, train=False)
  >>> x_adv = pgd(logits_fn, params, x, y, key, epsilon=0.1, num_steps=20)

References:
  Goodfellow, I., Shlens, J., Szegedy, C.: Explaining and harnessing
  adversarial examples. ICLR (2015) -- FGSM.
  Madry, A. et al.: Towards deep learning models resistant to adversarial
  attacks. ICLR (2018) -- PGD with random start.
  Croce, F., Hein, M.: Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks. ICML (2020) -- APGD, the DLR
  loss, AutoAttack.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array
LogitsFn = Callable[[Any, Array], Array]

NORMS = ("linf", "l2")
LOSSES = ("ce", "dlr")
_TINY = 1e-12


def check_norm(norm: str, field: str = "norm") -> None:
  """Raises ``ValueError`` unless ``norm`` is ``"linf"`` or ``"l2"``."""
  if norm not in NORMS:
    raise ValueError(f"{field}={norm!r} is not known; choose one of {NORMS}.")


def _check(epsilon, num_steps: Optional[int], norm: str) -> None:
  check_norm(norm)
  if num_steps is not None and int(num_steps) < 1:
    raise ValueError(f"num_steps must be >= 1; got {num_steps}.")
  try:
    negative = not np.all(np.asarray(epsilon) >= 0)
  except Exception:  # pylint: disable=broad-except  (traced: checked by caller)
    negative = False
  if negative:
    raise ValueError(f"epsilon must be >= 0; got {epsilon}.")


def _jit_checked(*static_argnames):
  """``jax.jit`` with static ``static_argnames``, plus eager argument checks.

  ``epsilon`` is a traced argument (a new budget does not recompile), so its
  sign is checked here, before tracing, whenever it is concrete; norm and
  step counts are checked too. The jitted function is the wrapper's
  ``jitted`` attribute.
  """
  def decorate(fn):
    jitted = jax.jit(fn, static_argnames=static_argnames)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      _check(kwargs.get("epsilon", 0.0), kwargs.get("num_steps"),
             kwargs.get("norm", "linf"))
      return jitted(*args, **kwargs)

    wrapper.jitted = jitted
    return wrapper

  return decorate


def _per_example_norm(v: Array, norm: str) -> Array:
  """``[B, ...] -> [B, 1, ...]`` L-inf or L2 norm of each example."""
  axes = tuple(range(1, v.ndim))
  if norm == "linf":
    out = jnp.max(jnp.abs(v), axis=axes, keepdims=True)
  else:
    out = jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))
  return out


def project(x_adv: Array, x: Array, epsilon, norm: str, clip_min: float = 0.0,
            clip_max: float = 1.0) -> Array:
  """Projects ``x_adv`` onto the ``epsilon`` ball around ``x``, then the box."""
  delta = x_adv - x
  if norm == "linf":
    delta = jnp.clip(delta, -epsilon, epsilon)
  else:
    length = _per_example_norm(delta, "l2")
    delta = delta * jnp.minimum(1.0, epsilon / jnp.maximum(length, _TINY))
  return jnp.clip(x + delta, clip_min, clip_max)


def ascent_direction(grad: Array, norm: str) -> Array:
  """Steepest-ascent direction of unit norm: sign (L-inf) or ``g/||g||_2``."""
  if norm == "linf":
    return jnp.sign(grad)
  return grad / jnp.maximum(_per_example_norm(grad, "l2"), _TINY)


def random_start(key: Array, x: Array, epsilon, norm: str) -> Array:
  """A uniform draw from the ``epsilon`` ball around ``x`` (not yet clipped).

  L-inf: each coordinate uniform in ``[-eps, eps]`` (Madry et al.); L2:
  uniform in the ball (a Gaussian direction, radius ``eps * u^(1/dim)``).
  """
  if norm == "linf":
    return x + jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * epsilon
  dir_key, radius_key = jax.random.split(key)
  direction = jax.random.normal(dir_key, x.shape, x.dtype)
  direction = direction / jnp.maximum(_per_example_norm(direction, "l2"), _TINY)
  dim = int(np.prod(x.shape[1:]))
  u = jax.random.uniform(radius_key, (x.shape[0],) + (1,) * (x.ndim - 1),
                         x.dtype)
  return x + direction * epsilon * u ** (1.0 / dim)


def cross_entropy(logits: Array, labels: Array) -> Array:
  """Per-example softmax cross-entropy ``[B]``."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)


def dlr_loss(logits: Array, labels: Array) -> Array:
  """Per-example Difference of Logits Ratio loss (Croce & Hein 2020, eq. 6).

  ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``pi`` the logits sorted
  in decreasing order; needs at least 3 classes. Invariant to shifting and
  rescaling the logits.
  """
  logits = logits.astype(jnp.float32)
  srt = jnp.sort(logits, axis=-1)[:, ::-1]
  z_y = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  is_top = srt[:, 0] == z_y
  best_other = jnp.where(is_top, srt[:, 1], srt[:, 0])
  return -(z_y - best_other) / (srt[:, 0] - srt[:, 2] + _TINY)


def targeted_dlr_loss(logits: Array, labels: Array, target: Array) -> Array:
  """Per-example targeted DLR loss (Croce & Hein 2020, eq. 7); >= 4 classes.

  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``: maximising it pushes the
  target logit above the true one.
  """
  logits = logits.astype(jnp.float32)
  srt = jnp.sort(logits, axis=-1)[:, ::-1]
  z_y = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  z_t = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
  return -(z_y - z_t) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + _TINY)


def attack_loss(logits: Array, y: Array, target: Optional[Array],
                loss: str = "ce") -> Array:
  """The per-example loss an attack ascends.

  ``ce``: ``CE(y)`` untargeted, ``-CE(target)`` targeted. ``dlr``: DLR
  untargeted, targeted DLR (which needs ``y`` too) targeted.
  """
  if loss == "ce":
    return cross_entropy(logits, y) if target is None else -cross_entropy(
        logits, target)
  if loss == "dlr":
    return dlr_loss(logits, y) if target is None else targeted_dlr_loss(
        logits, y, target)
  raise ValueError(f"loss={loss!r} is not known; choose one of {LOSSES}.")


def _loss_and_grad(logits_fn, params, x_adv, y, target, loss):
  def total(xa):
    per_example = attack_loss(logits_fn(params, xa), y, target, loss)
    return jnp.sum(per_example), per_example

  (_, per_example), grad = jax.value_and_grad(total, has_aux=True)(x_adv)
  return per_example, grad


@_jit_checked("logits_fn", "norm", "loss", "clip_min", "clip_max")
def fgsm(logits_fn: LogitsFn, params: Any, x: Array, y: Array, *,
         epsilon, norm: str = "linf", target: Optional[Array] = None,
         loss: str = "ce", clip_min: float = 0.0,
         clip_max: float = 1.0) -> Array:
  """Fast Gradient (Sign) Method: one step of length ``epsilon``.

  L-inf: ``x + eps * sign(grad)`` (Goodfellow et al.); L2: ``x + eps *
  grad / ||grad||`` (the "fast gradient method"). Clipped to the box.

  Args:
    logits_fn: ``logits_fn(params, x) -> [B, K]``.
    params: model parameters.
    x: clean inputs ``[B, ...]``.
    y: true labels ``int[B]``.
    epsilon: perturbation budget (a scalar or ``[B]``).
    norm: ``"linf"`` or ``"l2"``.
    target: target labels for a targeted attack (None: untargeted).
    loss: ``"ce"`` or ``"dlr"``.
    clip_min: lower end of the valid input range.
    clip_max: upper end.

  Returns:
    Adversarial inputs, same shape and dtype as ``x``.
  """
  _check(epsilon, None, norm)
  epsilon = _broadcast_eps(epsilon, x)
  _, grad = _loss_and_grad(logits_fn, params, x, y, target, loss)
  x_adv = x + epsilon * ascent_direction(grad, norm)
  return project(x_adv, x, epsilon, norm, clip_min, clip_max).astype(x.dtype)


def _broadcast_eps(epsilon, x: Array) -> Array:
  eps = jnp.asarray(epsilon, x.dtype)
  if eps.ndim == 1:
    eps = eps.reshape((-1,) + (1,) * (x.ndim - 1))
  return eps


def pgd_step(logits_fn: LogitsFn, params: Any, x_adv: Array, x: Array,
             y: Array, *, epsilon, step_size, norm: str = "linf",
             target: Optional[Array] = None, loss: str = "ce",
             clip_min: float = 0.0, clip_max: float = 1.0) -> Array:
  """One projected steepest-ascent step (the body of :func:`pgd`)."""
  epsilon = _broadcast_eps(epsilon, x)
  _, grad = _loss_and_grad(logits_fn, params, x_adv, y, target, loss)
  x_next = x_adv + step_size * ascent_direction(grad, norm)
  return project(x_next, x, epsilon, norm, clip_min, clip_max)


@_jit_checked("logits_fn", "num_steps", "norm", "rand_init", "loss",
              "clip_min", "clip_max", "unroll")
def pgd(logits_fn: LogitsFn, params: Any, x: Array, y: Array,
        key: Optional[Array] = None, *, epsilon, step_size=None,
        num_steps: int = 10, norm: str = "linf", rand_init: bool = True,
        target: Optional[Array] = None, loss: str = "ce",
        clip_min: float = 0.0, clip_max: float = 1.0,
        unroll: int | bool = 1) -> Array:
  """Projected gradient descent (Madry et al. 2018), the last iterate.

  ``x_{t+1} = Proj(x_t + step_size * dir(grad))`` for ``num_steps`` steps,
  from a uniform point of the ball (``rand_init``) or from ``x``. The whole
  loop is one ``lax.fori_loop`` inside one jitted function.

  Args:
    logits_fn: ``logits_fn(params, x) -> [B, K]``.
    params: model parameters.
    x: clean inputs ``[B, ...]``.
    y: true labels ``int[B]``.
    key: PRNG key of the random start (needed when ``rand_init``).
    epsilon: budget (scalar or ``[B]``).
    step_size: step length; default ``2.5 * epsilon / num_steps`` (Madry et
      al.), which can cross the whole ball.
    num_steps: number of steps (static, >= 1).
    norm: ``"linf"`` or ``"l2"``.
    rand_init: start from a uniform point of the ball.
    target: target labels (None: untargeted).
    loss: ``"ce"`` or ``"dlr"``.
    clip_min: lower end of the valid input range.
    clip_max: upper end.
    unroll: the ``lax.fori_loop`` unroll factor (static; True unrolls all
      steps). Rolled is the default: on a CPU, unrolling PGD-10 was no faster
      for the Romoa CNN and slower for the MLP.

  Returns:
    Adversarial inputs in the ball and the box.

  Raises:
    ValueError: bad norm, ``num_steps < 1``, negative epsilon, or
      ``rand_init`` without a key.
  """
  _check(epsilon, num_steps, norm)
  epsilon = _broadcast_eps(epsilon, x)
  if step_size is None:
    step_size = 2.5 * epsilon / num_steps
  step_size = _broadcast_eps(step_size, x)
  if rand_init:
    if key is None:
      raise ValueError("pgd with rand_init=True needs a PRNG key.")
    x_adv = project(random_start(key, x, epsilon, norm), x, epsilon, norm,
                    clip_min, clip_max)
  else:
    x_adv = x

  def body(_, xa):
    return pgd_step(logits_fn, params, xa, x, y, epsilon=epsilon,
                    step_size=step_size, norm=norm, target=target, loss=loss,
                    clip_min=clip_min, clip_max=clip_max)

  return jax.lax.fori_loop(0, num_steps, body, x_adv,
                           unroll=unroll).astype(x.dtype)


def apgd_checkpoints(num_steps: int) -> np.ndarray:
  """Iterations after which APGD checks its step size, and each window length.

  As the reference implementation of Croce & Hein: the first window has
  ``max(int(0.22 N), 1)`` iterations and each next one is shorter by
  ``max(int(0.03 N), 1)``, down to ``max(int(0.06 N), 1)``; equivalently
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` with ``p_1 = 0.22``.

  Returns:
    ``int[num_steps]``: the window length ending at each iteration that is a
    checkpoint, 0 elsewhere.
  """
  window = max(int(0.22 * num_steps), 1)
  min_window = max(int(0.06 * num_steps), 1)
  decrease = max(int(0.03 * num_steps), 1)
  out = np.zeros(num_steps, np.int32)
  counter = 0
  for i in range(num_steps):
    counter += 1
    if counter == window:
      out[i] = window
      window = max(window - decrease, min_window)
      counter = 0
  return out


@_jit_checked("logits_fn", "num_steps", "norm", "loss", "clip_min",
              "clip_max")
def apgd(logits_fn: LogitsFn, params: Any, x: Array, y: Array,
         key: Optional[Array] = None, *, epsilon, num_steps: int = 100,
         norm: str = "linf", loss: str = "ce", target: Optional[Array] = None,
         rho: float = 0.75, momentum: float = 0.75, clip_min: float = 0.0,
         clip_max: float = 1.0) -> Array:
  """Auto-PGD (Croce & Hein 2020, Algorithm 1): step size from the budget.

  Per example: the step size starts at ``2 * epsilon``; each step is
  ``z = P(x_k + eta * dir(grad))``, ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)
  (x_k - x_{k-1}))`` with momentum ``a = 0.75`` (``a = 1`` on the first step).
  At each checkpoint of :func:`apgd_checkpoints` the step size is halved and
  the iterate restarts from the best point so far when (1) the loss rose on at
  most ``rho`` of the window's steps, or (2) the step size was not halved at
  the previous checkpoint and the best loss has not improved since. Returns
  the point of highest loss found (the first iterate is the random start).

  Choices where the paper leaves room (made as the reference code does): the
  start is a random point of the ball scaled to its surface for L-inf
  (``x + eps * t / max|t|``) and Gaussian-normal for L2; the step counts of
  condition (1) compare each iterate's loss with the previous iterate's.

  Args:
    logits_fn: ``logits_fn(params, x) -> [B, K]``.
    params: model parameters.
    x: clean inputs ``[B, ...]``.
    y: true labels ``int[B]``.
    key: PRNG key of the random start (None: start at ``x``).
    epsilon: budget (scalar or ``[B]``).
    num_steps: iterations ``N`` (static, >= 1; the paper uses 100).
    norm: ``"linf"`` or ``"l2"``.
    loss: ``"ce"`` (APGD-CE) or ``"dlr"`` (APGD-DLR; with ``target`` the
      targeted DLR of APGD-T).
    target: target labels (None: untargeted).
    rho: fraction of increasing steps below which the step size is halved.
    momentum: ``a`` in the update.
    clip_min: lower end of the valid input range.
    clip_max: upper end.

  Returns:
    Adversarial inputs in the ball and the box.

  References:
    Croce, F., Hein, M.: Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks. ICML (2020), Sec. 3.
  """
  _check(epsilon, num_steps, norm)
  epsilon = _broadcast_eps(epsilon, x)
  batch = x.shape[0]
  bshape = (batch,) + (1,) * (x.ndim - 1)
  proj = lambda v: project(v, x, epsilon, norm, clip_min, clip_max)
  if key is None:
    x0 = x
  elif norm == "linf":
    t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    x0 = proj(x + epsilon * t / jnp.maximum(_per_example_norm(t, "linf"),
                                            _TINY))
  else:
    t = jax.random.normal(key, x.shape, x.dtype)
    x0 = proj(x + epsilon * t / jnp.maximum(_per_example_norm(t, "l2"), _TINY))
  loss0, grad0 = _loss_and_grad(logits_fn, params, x0, y, target, loss)
  windows = jnp.asarray(apgd_checkpoints(num_steps))
  per_ex = lambda m: m.reshape(bshape)

  def body(i, carry):
    (x_k, x_prev, grad, loss_prev, eta, x_best, loss_best, grad_best,
     increases, reduced_last, best_at_last_check) = carry
    a = jnp.where(i == 0, 1.0, momentum)
    z = proj(x_k + per_ex(eta) * ascent_direction(grad, norm))
    x_next = proj(x_k + a * (z - x_k) + (1.0 - a) * (x_k - x_prev))
    loss_next, grad_next = _loss_and_grad(logits_fn, params, x_next, y, target,
                                          loss)
    increases = increases + (loss_next > loss_prev).astype(jnp.int32)
    better = loss_next > loss_best
    x_best = jnp.where(per_ex(better), x_next, x_best)
    grad_best = jnp.where(per_ex(better), grad_next, grad_best)
    loss_best = jnp.where(better, loss_next, loss_best)

    window = windows[i]
    at_check = window > 0
    oscillating = increases <= rho * window
    no_progress = (~reduced_last) & (best_at_last_check >= loss_best)
    halve = at_check & (oscillating | no_progress)
    eta = jnp.where(halve, eta / 2.0, eta)
    x_k_new = jnp.where(per_ex(halve), x_best, x_next)
    grad_new = jnp.where(per_ex(halve), grad_best, grad_next)
    reduced_last = jnp.where(at_check, halve, reduced_last)
    best_at_last_check = jnp.where(at_check, loss_best, best_at_last_check)
    increases = jnp.where(at_check, 0, increases)
    # The momentum term of the next step is x_{k+1} - x_k; after a restart
    # it is x_best - x_k, as in the reference implementation.
    return (x_k_new, x_k, grad_new, loss_next, eta, x_best, loss_best,
            grad_best, increases, reduced_last, best_at_last_check)

  eta0 = 2.0 * jnp.broadcast_to(epsilon.reshape(-1), (batch,)).astype(
      jnp.float32)
  carry = (x0, x0, grad0, loss0, eta0, x0, loss0, grad0,
           jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), bool), loss0)
  carry = jax.lax.fori_loop(0, num_steps, body, carry)
  return carry[5].astype(x.dtype)


@_jit_checked("logits_fn", "num_steps", "norm", "clip_min", "clip_max")
def simple_autoattack(logits_fn: LogitsFn, params: Any, x: Array, y: Array,
                      key: Array, *, epsilon, num_steps: int = 20,
                      norm: str = "linf", clip_min: float = 0.0,
                      clip_max: float = 1.0) -> Array:
  """The seed tutorial's simplified AutoAttack: per example, the worse of two.

  Runs PGD (random start, ``num_steps`` steps of ``epsilon / 4``) and FGSM and
  keeps, per example, the one with the higher cross-entropy (ties: FGSM, as
  the seed's ``loss_pgd > loss_fgsm``). This is the seed's ensemble, not
  Croce & Hein's AutoAttack; :func:`robustfl_jax.adversarial.robust_accuracy`
  with its default cascade (APGD-CE, APGD-T) is the closer analogue.
  """
  x_pgd = pgd(logits_fn, params, x, y, key, epsilon=epsilon,
              step_size=jnp.asarray(epsilon) / 4.0, num_steps=num_steps,
              norm=norm, clip_min=clip_min, clip_max=clip_max)
  x_fgsm = fgsm(logits_fn, params, x, y, epsilon=epsilon, norm=norm,
                clip_min=clip_min, clip_max=clip_max)
  loss_pgd = cross_entropy(logits_fn(params, x_pgd), y)
  loss_fgsm = cross_entropy(logits_fn(params, x_fgsm), y)
  pick = (loss_pgd > loss_fgsm).reshape((-1,) + (1,) * (x.ndim - 1))
  return jnp.where(pick, x_pgd, x_fgsm)


@_jit_checked("logits_fn", "num_steps", "norm", "num_targets", "clip_min",
              "clip_max")
def apgd_targeted(logits_fn: LogitsFn, params: Any, x: Array, y: Array,
                  key: Optional[Array] = None, *, epsilon,
                  num_steps: int = 100, norm: str = "linf",
                  num_targets: int = 3, clip_min: float = 0.0,
                  clip_max: float = 1.0) -> Array:
  """APGD-T: targeted-DLR APGD against each of the top other classes.

  For ``j = 1..num_targets`` the target is the class with the ``j+1``-th
  largest clean logit (the ``j``-th most likely wrong class), as in
  AutoAttack's APGD-T; per example the first run that misclassifies wins,
  otherwise the last run's point is kept. Needs at least 4 classes (the
  targeted DLR uses the 4th largest logit) and ``num_targets < K``.
  """
  num_classes = jax.eval_shape(lambda: logits_fn(params, x[:1])).shape[-1]
  if num_classes < 4:
    raise ValueError(f"apgd_targeted needs >= 4 classes; got {num_classes}.")
  if not 1 <= num_targets < num_classes:
    raise ValueError(f"num_targets must be in [1, {num_classes - 1}]; got "
                     f"{num_targets}.")
  order = jnp.argsort(-logits_fn(params, x).astype(jnp.float32), axis=-1)
  bshape = (x.shape[0],) + (1,) * (x.ndim - 1)
  best = x
  found = jnp.zeros((x.shape[0],), bool)
  for j in range(num_targets):
    # The rank-(j+1) class, skipping the true label wherever it sits.
    true_before = jnp.any(order[:, :j + 1] == y[:, None], axis=-1)
    target = jnp.where(true_before, order[:, j + 1], order[:, j])
    run_key = None if key is None else jax.random.fold_in(key, j)
    x_adv = apgd(logits_fn, params, x, y, run_key, epsilon=epsilon,
                 num_steps=num_steps, norm=norm, loss="dlr", target=target,
                 clip_min=clip_min, clip_max=clip_max)
    fooled = jnp.argmax(logits_fn(params, x_adv), -1) != y
    take = ~found
    best = jnp.where(take.reshape(bshape), x_adv, best)
    found = found | fooled
  return best
