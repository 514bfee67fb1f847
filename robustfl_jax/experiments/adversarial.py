"""Config hooks of adversarial training and adversarial evaluation.

``client.adversarial_training.*`` chooses the clients' local objective
(:func:`robustfl_jax.adversarial.make_train_loss`); ``eval.attack_*`` adds
clean and PGD robust accuracy of the final model to ``summary.json``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import ml_collections

from robustfl_jax import adversarial
from robustfl_jax.adversarial import evasion

_FIELD = "client.adversarial_training"


def train_loss(config: ml_collections.ConfigDict) -> Optional[Callable]:
  """The clients' local objective, or None for plain cross-entropy.

  Raises:
    ValueError: naming the ``client.adversarial_training`` field at fault.
  """
  section = config.client.adversarial_training
  return adversarial.make_train_loss(
      section.method, epsilon=section.epsilon, step_size=section.step_size,
      num_steps=section.steps, norm=section.norm, beta=section.beta,
      sigma=section.sigma)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks ``client.adversarial_training.*`` and ``eval.attack_*``.

  Raises:
    ValueError: naming the field that cannot work (unknown method or norm,
      non-positive epsilon / steps / step size / sigma, negative beta, or a
      method set under a protocol other than ``"sync"``, which would ignore
      it).
  """
  section = config.client.adversarial_training
  if int(section.steps) < 1:
    raise ValueError(f"{_FIELD}.steps must be >= 1; got {section.steps}.")
  if not section.beta >= 0:
    raise ValueError(f"{_FIELD}.beta must be >= 0; got {section.beta}.")
  if not section.sigma > 0:
    raise ValueError(f"{_FIELD}.sigma must be > 0; got {section.sigma}.")
  if not section.epsilon >= 0:
    raise ValueError(f"{_FIELD}.epsilon must be >= 0; got {section.epsilon}.")
  evasion.check_norm(section.norm, f"{_FIELD}.norm")
  train_loss(config)  # method, epsilon > 0 and step size
  if section.method != "none" and config.protocol != "sync":
    raise ValueError(
        f"{_FIELD}.method={section.method!r} is wired into the synchronous "
        f"round only; protocol={config.protocol!r} would ignore it. Use "
        f"protocol='sync' or {_FIELD}.method='none'.")
  ev = config.eval
  if ev.attack_epsilon is not None:
    if not ev.attack_epsilon >= 0:
      raise ValueError(f"eval.attack_epsilon must be >= 0; got "
                       f"{ev.attack_epsilon}.")
    if int(ev.attack_steps) < 1:
      raise ValueError(f"eval.attack_steps must be >= 1; got "
                       f"{ev.attack_steps}.")
    if ev.attack_step_size is not None and not ev.attack_step_size > 0:
      raise ValueError(f"eval.attack_step_size must be > 0; got "
                       f"{ev.attack_step_size}.")
    evasion.check_norm(ev.attack_norm, "eval.attack_norm")


def robust_summary(config: ml_collections.ConfigDict, apply_fn: Callable,
                   params: Any, x_test, y_test) -> dict:
  """``clean_accuracy`` and ``robust_accuracy`` for ``summary.json``.

  Empty when ``eval.attack_epsilon`` is unset; otherwise PGD with
  ``eval.attack_steps`` steps at ``eval.attack_epsilon`` in
  ``eval.attack_norm``, seeded by ``config.seed``.
  """
  ev = config.eval
  if ev.attack_epsilon is None:
    return {}
  steps = int(ev.attack_steps)
  eval_fn = adversarial.make_pgd_eval_fn(
      adversarial.eval_logits_fn(apply_fn), x_test, y_test,
      epsilon=float(ev.attack_epsilon), num_steps=steps,
      step_size=ev.attack_step_size, norm=ev.attack_norm)
  key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 0xE7A1)
  out = jax.device_get(eval_fn(params, key))
  return {"clean_accuracy": float(out["clean_accuracy"]),
          "robust_accuracy": float(out["robust_accuracy"]),
          "robust_attack": f"pgd{steps}",
          "attack_epsilon": float(ev.attack_epsilon),
          "attack_norm": ev.attack_norm}
