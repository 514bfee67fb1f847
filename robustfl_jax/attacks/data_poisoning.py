"""Data-poisoning attacks: Byzantine clients corrupt their own training data.

They act on a client's padded data (``x: [M, ...]``, ``y: [M]``) before local
training; :func:`poison_clients` applies one of them to the Byzantine rows of
the stacked ``[C, M, ...]`` layout and leaves honest clients and padding alone.

References:
  Biggio, B., Nelson, B., Laskov, P.: Poisoning attacks against support vector
  machines. ICML (2012) -- label flipping.
  Tolpegin, V. et al.: Data poisoning attacks against federated learning
  systems. ESORICS (2020) -- targeted source -> target flip.
  Gu, T., Dolan-Gavitt, B., Garg, S.: BadNets (2017), arXiv:1708.06733;
  Bagdasaryan, E. et al.: How to backdoor federated learning. AISTATS (2020).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from robustfl_jax.attacks._registry import Attack, register_factory
from robustfl_jax.data import ClientData

Array = jax.Array

DATA_ATTACKS = ("label_flip", "targeted_flip", "backdoor")


def label_flip(y: Array, num_classes: int) -> Array:
  """Every label ``y`` becomes ``num_classes - 1 - y``."""
  return (num_classes - 1 - y).astype(y.dtype)


def targeted_label_flip(y: Array, source: int, target: int) -> Array:
  """Labels equal to ``source`` become ``target``; others are kept."""
  return jnp.where(y == source, target, y).astype(y.dtype)


def add_trigger(x: Array, size: int = 2, value: float = 1.0) -> Array:
  """Stamps a ``size x size`` square of ``value`` in the bottom-right corner.

  Works on a batch of images ``[..., H, W, C]`` or of flat vectors ``[..., D]``
  (then the last ``size * size`` features are set).

  Args:
    x: inputs in [0, 1].
    size: side of the square trigger (pixels).
    value: intensity of the trigger pixels.

  Returns:
    ``x`` with the trigger, same shape and dtype.
  """
  if x.ndim >= 3 and x.shape[-3] >= size and x.shape[-2] >= size and (
      x.shape[-1] <= 4):
    return x.at[..., -size:, -size:, :].set(value)
  return x.at[..., -size * size:].set(value)


def backdoor(x: Array, y: Array, count: Array, key: Array, *, target: int,
             fraction: float = 0.5, size: int = 2, value: float = 1.0
             ) -> tuple[Array, Array]:
  """Adds the trigger to a random ``fraction`` of the real examples, relabelled.

  Args:
    x: ``[M, ...]`` one client's inputs.
    y: ``[M]`` labels.
    count: number of real examples (padding is left untouched).
    key: PRNG key choosing which examples carry the trigger.
    target: the backdoor's target label.
    fraction: probability that a real example is poisoned.
    size: trigger side.
    value: trigger intensity.

  Returns:
    ``(x, y)`` poisoned.
  """
  real = jnp.arange(y.shape[0]) < count
  chosen = real & (jax.random.uniform(key, y.shape) < fraction)
  shape = (-1,) + (1,) * (x.ndim - 1)
  x = jnp.where(chosen.reshape(shape), add_trigger(x, size, value), x)
  y = jnp.where(chosen, target, y).astype(y.dtype)
  return x, y


class DataPoisoning(NamedTuple):
  """Settings of a data-poisoning attack (the ``attack.*`` config fields).

  Attributes:
    name: one of :data:`DATA_ATTACKS`.
    num_classes: number of classes (for ``label_flip``).
    source: source class of ``targeted_flip``.
    target: target class of ``targeted_flip`` and ``backdoor``.
    fraction: fraction of a Byzantine client's examples given the trigger.
    trigger_size: side of the trigger square.
    trigger_value: intensity of the trigger.
  """

  name: str
  num_classes: int = 10
  source: int = 6
  target: int = 3
  fraction: float = 0.5
  trigger_size: int = 2
  trigger_value: float = 1.0


def validate(spec: DataPoisoning) -> None:
  """Raises ``ValueError`` naming the config field that cannot work."""
  if spec.name not in DATA_ATTACKS:
    raise ValueError(f"attack.name={spec.name!r} is not a data-poisoning "
                     f"attack; choose one of {DATA_ATTACKS}.")
  for field in ("source", "target"):
    value = getattr(spec, field)
    if not 0 <= value < spec.num_classes:
      raise ValueError(f"attack.{field}={value} is outside the "
                       f"{spec.num_classes} classes [0, {spec.num_classes}).")
  if spec.name == "targeted_flip" and spec.source == spec.target:
    raise ValueError("attack.source and attack.target must differ; both are "
                     f"{spec.source}.")
  if not 0.0 < spec.fraction <= 1.0:
    raise ValueError(f"attack.fraction={spec.fraction} must be in (0, 1].")


def poison_clients(data: ClientData, byzantine: Array, spec: DataPoisoning,
                   key: Array) -> ClientData:
  """Applies ``spec`` to the data of the clients where ``byzantine`` is True.

  Args:
    data: padded client data (numpy or jax arrays).
    byzantine: ``bool[C]``.
    spec: the attack.
    key: PRNG key (backdoor example selection, folded per client).

  Returns:
    :class:`ClientData` with the same shapes; honest clients unchanged.
  """
  validate(spec)
  x, y, count = jnp.asarray(data.x), jnp.asarray(data.y), jnp.asarray(data.count)
  byzantine = jnp.asarray(byzantine, bool)
  real = jnp.arange(y.shape[1])[None, :] < count[:, None]
  if spec.name == "label_flip":
    new_x, new_y = x, label_flip(y, spec.num_classes)
  elif spec.name == "targeted_flip":
    new_x, new_y = x, targeted_label_flip(y, spec.source, spec.target)
  else:
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
        jnp.arange(y.shape[0]))
    new_x, new_y = jax.vmap(
        lambda xc, yc, cc, kc: backdoor(
            xc, yc, cc, kc, target=spec.target, fraction=spec.fraction,
            size=spec.trigger_size, value=spec.trigger_value))(x, y, count, keys)
  rows = byzantine[:, None] & real
  y = jnp.where(rows, new_y, y)
  x = jnp.where(rows.reshape(rows.shape + (1,) * (x.ndim - 2)), new_x, x)
  return ClientData(x, y, count)


def _data_attack(spec: DataPoisoning, evaluation: dict) -> Attack:
  validate(spec)

  def poison_data(client_data, byzantine, key):
    return poison_clients(client_data, byzantine, spec, key)

  return Attack(spec.name, poison_data=poison_data, evaluation=evaluation)


def _check_labels(source: int = 6, target: int = 3, fraction: float = 0.5,
                  trigger_size: int = 2) -> None:
  """What can be checked before the data set (its classes) is known."""
  for field, value in (("source", source), ("target", target)):
    if int(value) < 0:
      raise ValueError(f"attack.{field}={value} must be a class label >= 0.")
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"attack.fraction={fraction} must be in (0, 1].")
  if int(trigger_size) < 1:
    raise ValueError(f"attack.trigger_size={trigger_size} must be >= 1.")


def _check_targeted(source: int = 6, target: int = 3) -> None:
  _check_labels(source, target)
  if source == target:
    raise ValueError("attack.source and attack.target must differ; both are "
                     f"{source}.")


@register_factory("label_flip")
def label_flip_attack(*, dataset: Any) -> Attack:
  """Byzantine clients train on ``num_classes - 1 - y`` (every label flipped)."""
  return _data_attack(DataPoisoning("label_flip", dataset.num_classes), {})


@register_factory("targeted_flip", check=_check_targeted)
def targeted_flip_attack(*, dataset: Any, source: int = 6, target: int = 3
                         ) -> Attack:
  """Byzantine clients relabel class ``source`` as ``target``."""
  return _data_attack(
      DataPoisoning("targeted_flip", dataset.num_classes, source=source,
                    target=target), {"targeted": (source, target)})


@register_factory("backdoor", check=_check_labels)
def backdoor_attack(*, dataset: Any, target: int = 3, fraction: float = 0.5,
                    trigger_size: int = 2, trigger_value: float = 1.0
                    ) -> Attack:
  """Byzantine clients stamp a trigger on ``fraction`` of their examples and
  label them ``target`` (BadNets)."""
  return _data_attack(
      DataPoisoning("backdoor", dataset.num_classes, target=target,
                    fraction=fraction, trigger_size=trigger_size,
                    trigger_value=trigger_value),
      {"backdoor": (target, trigger_size, trigger_value)})
