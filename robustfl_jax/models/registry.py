"""Classifiers by name (``model.name`` in configs).

Each model module registers a factory ``factory(*, num_classes, input_shape,
**hparams) -> flax module`` with :func:`register`; its keyword arguments
besides ``num_classes`` and ``input_shape`` are the model's
hyper-parameters (``model.hidden`` for the MLP).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np

from robustfl_jax.registry import Registry

MODELS = Registry("model", context=("num_classes", "input_shape"))


def register(name: str, factory: Optional[Callable] = None):
  """Registers ``factory(*, num_classes, input_shape, **hparams) -> nn.Module``."""
  return MODELS.register(name, factory)


def names() -> tuple[str, ...]:
  return MODELS.names()


def get(name: str, num_classes: int, input_shape: Sequence[int],
        **hparams: Any) -> nn.Module:
  """Returns the flax module ``name`` sized to ``input_shape`` (no batch axis).

  Args:
    name: one of :func:`names`.
    num_classes: number of logits.
    input_shape: shape of one example, e.g. ``(28, 28, 1)``.
    **hparams: the model's hyper-parameters (``hidden`` for the MLP).

  Raises:
    ValueError: unknown name or hyper-parameter, or an image model given a
      flat input.
  """
  return MODELS.build(name, hparams, {
      "num_classes": int(num_classes),
      "input_shape": tuple(int(s) for s in input_shape)})


def require_image(name: str, input_shape: Sequence[int]) -> None:
  """Raises ``ValueError`` unless ``input_shape`` is ``[H, W, C]``."""
  if len(input_shape) != 3:
    raise ValueError(f"model {name!r} needs image inputs [H, W, C]; got input "
                     f"shape {tuple(input_shape)}.")


def init_params(model: nn.Module, key: jax.Array,
                input_shape: Sequence[int]) -> Any:
  """Initialises the parameters for one example of ``input_shape`` (jitted)."""
  dummy = jax.ShapeDtypeStruct((1,) + tuple(input_shape), np.float32)

  @jax.jit
  def init(k):
    x = jax.numpy.zeros(dummy.shape, dummy.dtype)
    return model.init({"params": k}, x, train=False)["params"]

  return init(key)


def param_count(params: Any) -> int:
  """Total number of scalars in a parameter pytree."""
  return int(sum(np.prod(np.shape(p)) for p in jax.tree_util.tree_leaves(params)))
