"""Evaluation metrics of the global model and of client rejection.

All functions are pure and jit-able. Test sets are evaluated in fixed-size
batches through ``lax.scan`` (the last batch is padded and masked), so a large
test set never needs one giant forward pass.

References:
  Romoa (Mao et al., ESORICS 2021), Sec. 2.2: error rate = 1 - accuracy for
  untargeted attacks, target-label confidence for targeted attacks.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from robustfl_jax.attacks.data_poisoning import add_trigger

Array = jax.Array


def _batched_logits(apply_fn: Callable, params: Any, x: Array,
                    batch_size: int) -> Array:
  n = x.shape[0]
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  xp = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
  xp = xp.reshape((num_batches, batch_size) + x.shape[1:])

  def body(_, xb):
    return None, apply_fn({"params": params}, xb, train=False)

  _, logits = jax.lax.scan(body, None, xp)
  return logits.reshape((num_batches * batch_size,) + logits.shape[2:])[:n]


def classification_metrics(logits: Array, labels: Array, num_classes: int
                           ) -> dict[str, Array]:
  """Accuracy, loss, error rate and per-class accuracy of ``logits [N, K]``.

  A class absent from ``labels`` has per-class accuracy NaN (undefined, not 0).
  """
  pred = jnp.argmax(logits, axis=-1)
  correct = (pred == labels).astype(jnp.float32)
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels))
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  per_class_total = jnp.sum(onehot, axis=0)
  per_class_correct = jnp.sum(onehot * correct[:, None], axis=0)
  per_class = jnp.where(per_class_total > 0,
                        per_class_correct / jnp.maximum(per_class_total, 1),
                        jnp.nan)
  accuracy = jnp.mean(correct)
  return {"accuracy": accuracy, "loss": loss, "error_rate": 1.0 - accuracy,
          "per_class_accuracy": per_class}


def targeted_metrics(logits: Array, labels: Array, source: int, target: int
                     ) -> dict[str, Array]:
  """Success of a targeted (source -> target) attack on the source samples.

  Returns:
    ``targeted_flip_rate``: fraction of source-class samples predicted as
    ``target``; ``targeted_confidence``: their mean softmax probability of
    ``target`` (Romoa's TPA error rate).
  """
  is_source = (labels == source).astype(jnp.float32)
  num = jnp.maximum(jnp.sum(is_source), 1.0)
  flipped = (jnp.argmax(logits, -1) == target).astype(jnp.float32)
  confidence = jax.nn.softmax(logits.astype(jnp.float32), -1)[:, target]
  return {"targeted_flip_rate": jnp.sum(flipped * is_source) / num,
          "targeted_confidence": jnp.sum(confidence * is_source) / num}


def make_eval_fn(apply_fn: Callable, x_test: Array, y_test: Array,
                 num_classes: int, *, batch_size: int = 512,
                 targeted: Optional[tuple[int, int]] = None,
                 backdoor: Optional[tuple[int, int, float]] = None
                 ) -> Callable[[Any], dict[str, Array]]:
  """Builds ``eval_fn(params) -> metrics`` on a fixed test set.

  Args:
    apply_fn: flax ``apply``.
    x_test: test inputs.
    y_test: test labels.
    num_classes: number of classes.
    batch_size: evaluation batch.
    targeted: ``(source, target)`` to report targeted-attack success.
    backdoor: ``(target, trigger_size, trigger_value)`` to report
      ``backdoor_success``: the fraction of test samples whose label is not
      the target that the model assigns to the target once triggered.

  Returns:
    A pure function; jit it.
  """
  x_test = jnp.asarray(x_test)
  y_test = jnp.asarray(y_test)
  batch_size = int(min(batch_size, x_test.shape[0]))

  def eval_fn(params):
    logits = _batched_logits(apply_fn, params, x_test, batch_size)
    out = classification_metrics(logits, y_test, num_classes)
    if targeted is not None:
      out.update(targeted_metrics(logits, y_test, *targeted))
    if backdoor is not None:
      target, size, value = backdoor
      triggered = _batched_logits(apply_fn, params,
                                  add_trigger(x_test, size, value), batch_size)
      eligible = (y_test != target).astype(jnp.float32)
      hit = (jnp.argmax(triggered, -1) == target).astype(jnp.float32)
      out["backdoor_success"] = (jnp.sum(hit * eligible)
                                 / jnp.maximum(jnp.sum(eligible), 1.0))
    return out

  return eval_fn


def detection_rates(flagged: Array, byzantine: Array) -> dict[str, Array]:
  """True and false positive rates of flagged clients against the real set.

  Args:
    flagged: ``bool[n]`` clients a rule or scorer rejected.
    byzantine: ``bool[n]`` the real Byzantine clients.

  Returns:
    ``tpr`` (flagged Byzantine / Byzantine; NaN when there is none) and ``fpr``
    (flagged honest / honest; NaN when every client is Byzantine).
  """
  flagged = flagged.astype(bool)
  byzantine = byzantine.astype(bool)
  num_byz = jnp.sum(byzantine)
  num_honest = jnp.sum(~byzantine)
  tpr = jnp.where(num_byz > 0, jnp.sum(flagged & byzantine)
                  / jnp.maximum(num_byz, 1), jnp.nan)
  fpr = jnp.where(num_honest > 0, jnp.sum(flagged & ~byzantine)
                  / jnp.maximum(num_honest, 1), jnp.nan)
  return {"tpr": tpr.astype(jnp.float32), "fpr": fpr.astype(jnp.float32)}
