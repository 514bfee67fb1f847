"""Robust accuracy: attack cascades (as AutoAttack runs them) and PGD-20 eval.

:func:`robust_accuracy` runs a list of attacks in turn, each only on the
points still classified correctly after the previous ones (the cascade of
AutoAttack), in fixed-size jitted batches gathered on the host, and reports
clean accuracy, the robust accuracy after each attack and overall.
:func:`make_pgd_eval_fn` is the fully jitted single-attack evaluation behind
``summary.json``'s ``robust_accuracy``.

References:
  Croce, F., Hein, M.: Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks. ICML (2020) -- the cascade.
  Madry, A. et al.: Towards deep learning models resistant to adversarial
  attacks. ICLR (2018) -- PGD evaluation.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustfl_jax.adversarial import evasion

Array = jax.Array
# attack(logits_fn, params, x, y, key) -> x_adv
AttackFn = Callable[..., Array]


def default_attacks(epsilon: float, norm: str = "linf", *,
                    pgd_steps: int = 20, apgd_steps: int = 100,
                    num_targets: int = 3, clip_min: float = 0.0,
                    clip_max: float = 1.0) -> list[tuple[str, AttackFn]]:
  """The default cascade: FGSM, PGD-20, APGD-CE, APGD-T (targeted DLR).

  A cheap attack first removes the easy points so that the expensive ones
  run on fewer. AutoAttack's FAB-T and Square are not included.
  """
  evasion.check_norm(norm)
  common = dict(epsilon=epsilon, norm=norm, clip_min=clip_min,
                clip_max=clip_max)
  fgsm = functools.partial(evasion.fgsm, **common)
  return [
      ("fgsm", lambda f, p, x, y, key: fgsm(f, p, x, y)),
      (f"pgd{pgd_steps}", functools.partial(evasion.pgd,
                                            num_steps=pgd_steps, **common)),
      ("apgd_ce", functools.partial(evasion.apgd, num_steps=apgd_steps,
                                    loss="ce", **common)),
      ("apgd_t", functools.partial(evasion.apgd_targeted,
                                   num_steps=apgd_steps,
                                   num_targets=num_targets, **common)),
  ]


@functools.partial(jax.jit, static_argnames=("logits_fn",))
def _predict(logits_fn, params, x):
  return jnp.argmax(logits_fn(params, x), axis=-1)


def _batches(indices: np.ndarray, batch_size: int):
  """Fixed-size index batches (the last padded with its first index)."""
  for start in range(0, len(indices), batch_size):
    chunk = indices[start:start + batch_size]
    real = len(chunk)
    if real < batch_size:
      chunk = np.concatenate([chunk, np.full(batch_size - real, chunk[0])])
    yield chunk, real


def robust_accuracy(logits_fn: Callable, params: Any, x, y, key: Array, *,
                    attacks: Optional[Sequence[tuple[str, AttackFn]]] = None,
                    epsilon: Optional[float] = None, norm: str = "linf",
                    batch_size: int = 256, cascade: bool = True) -> dict:
  """Clean and robust accuracy of a classifier under a list of attacks.

  Args:
    logits_fn: ``logits_fn(params, x) -> [B, K]`` (eval mode); keep the same
      object between calls so that jitted attacks are not recompiled.
    params: model parameters.
    x: inputs ``[N, ...]`` (host or device).
    y: labels ``int[N]``.
    key: PRNG key (folded per attack and per batch).
    attacks: ``(name, attack)`` pairs, ``attack(logits_fn, params, x, y,
      key) -> x_adv``; default :func:`default_attacks` at ``epsilon``.
    epsilon: budget of the default attacks (needed when ``attacks`` is None).
    norm: norm of the default attacks.
    batch_size: examples per jitted attack call (the last batch is padded, so
      each attack compiles once).
    cascade: True runs each attack only on the points that all previous ones
      failed to break (AutoAttack); False runs every attack on every
      clean-correct point, so ``per_attack`` holds each attack alone.

  Returns:
    ``clean_accuracy``, ``robust_accuracy`` (correct under every attack),
    ``num_examples`` and ``per_attack``: ``{name: {"robust_accuracy", ...,
    "num_attacked", "num_broken"}}`` where ``robust_accuracy`` is after this
    attack and all earlier ones (cascade) or under this attack alone.

  Raises:
    ValueError: neither ``attacks`` nor ``epsilon`` is given, or
      ``batch_size < 1``.
  """
  if attacks is None:
    if epsilon is None:
      raise ValueError("robust_accuracy needs attacks= or epsilon=.")
    attacks = default_attacks(epsilon, norm)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
  x = np.asarray(x)
  y = np.asarray(y)
  n = len(y)
  batch_size = min(batch_size, n)
  clean_pred = np.empty(n, np.int64)
  for chunk, real in _batches(np.arange(n), batch_size):
    pred = np.asarray(_predict(logits_fn, params, jnp.asarray(x[chunk])))
    clean_pred[chunk[:real]] = pred[:real]
  clean_correct = clean_pred == y
  robust = clean_correct.copy()
  per_attack = {}
  for a, (name, attack) in enumerate(attacks):
    candidates = (robust if cascade else clean_correct).copy()
    indices = np.flatnonzero(candidates)
    alone = clean_correct.copy()
    for b, (chunk, real) in enumerate(_batches(indices, batch_size)):
      batch_key = jax.random.fold_in(jax.random.fold_in(key, a), b)
      xb, yb = jnp.asarray(x[chunk]), jnp.asarray(y[chunk])
      x_adv = attack(logits_fn, params, xb, yb, batch_key)
      pred = np.asarray(_predict(logits_fn, params, x_adv))[:real]
      broken = chunk[:real][pred != y[chunk[:real]]]
      robust[broken] = False
      alone[broken] = False
    per_attack[name] = {
        "robust_accuracy": float(np.mean(robust if cascade else alone)),
        "num_attacked": int(len(indices)),
        "num_broken": int(np.sum(candidates) - np.sum(
            (robust if cascade else alone) & candidates)),
    }
  return {"clean_accuracy": float(np.mean(clean_correct)),
          "robust_accuracy": float(np.mean(robust)),
          "num_examples": int(n), "per_attack": per_attack}


def make_pgd_eval_fn(logits_fn: Callable, x_test, y_test, *, epsilon: float,
                     num_steps: int = 20, step_size: Optional[float] = None,
                     norm: str = "linf", batch_size: int = 512,
                     clip_min: float = 0.0, clip_max: float = 1.0
                     ) -> Callable[[Any, Array], dict[str, Array]]:
  """``eval_fn(params, key) -> {clean_accuracy, robust_accuracy}``, jitted.

  PGD (random start, ``num_steps`` steps, default step ``2.5 eps / steps``)
  on the whole test set in fixed batches through ``lax.map``; the last batch
  is padded and masked.

  Raises:
    ValueError: on a bad norm, ``num_steps < 1`` or negative epsilon.
  """
  evasion.check_norm(norm)
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1; got {num_steps}.")
  if not epsilon >= 0:
    raise ValueError(f"epsilon must be >= 0; got {epsilon}.")
  x_test = jnp.asarray(x_test)
  y_test = jnp.asarray(y_test)
  n = int(y_test.shape[0])
  batch = int(min(batch_size, n))
  num_batches = -(-n // batch)
  pad = num_batches * batch - n
  xp = jnp.pad(x_test, ((0, pad),) + ((0, 0),) * (x_test.ndim - 1))
  xp = xp.reshape((num_batches, batch) + x_test.shape[1:])
  yp = jnp.pad(y_test, (0, pad)).reshape(num_batches, batch)
  valid = (jnp.arange(num_batches * batch) < n).reshape(num_batches, batch)

  @jax.jit
  def eval_fn(params, key):
    keys = jax.random.split(key, num_batches)

    def one(args):
      xb, yb, k = args
      clean = jnp.argmax(logits_fn(params, xb), -1) == yb
      x_adv = evasion.pgd(logits_fn, params, xb, yb, k, epsilon=epsilon,
                              step_size=step_size, num_steps=num_steps,
                              norm=norm, clip_min=clip_min, clip_max=clip_max)
      adv = jnp.argmax(logits_fn(params, x_adv), -1) == yb
      return clean, adv & clean

    clean, adv = jax.lax.map(one, (xp, yp, keys))
    w = valid.astype(jnp.float32)
    return {"clean_accuracy": jnp.sum(clean * w) / n,
            "robust_accuracy": jnp.sum(adv * w) / n}

  return eval_fn


def eval_logits_fn(apply_fn: Callable) -> Callable:
  """``logits_fn(params, x)`` of a flax ``apply`` in eval mode.

  Build it once and reuse the object: jitted attacks take it as a static
  argument, so a new function object means a new compilation.
  """
  return lambda params, x: apply_fn({"params": params}, x, train=False)
