"""Building a classifier by its config name (``model.name``)."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np

from robustfl_jax.models.cnn import RomoaCifarCNN, RomoaMnistCNN
from robustfl_jax.models.mlp import MLP
from robustfl_jax.models.resnet import ResNet

MODELS = ("mlp", "romoa_mnist_cnn", "romoa_cifar_cnn", "resnet8", "resnet20")


def get(name: str, num_classes: int, input_shape: Sequence[int],
        hidden: Sequence[int] = (128,)) -> nn.Module:
  """Returns the flax module ``name`` sized to ``input_shape`` (no batch axis).

  Args:
    name: one of :data:`MODELS`.
    num_classes: number of logits.
    input_shape: shape of one example, e.g. ``(28, 28, 1)``.
    hidden: MLP hidden widths.

  Raises:
    ValueError: unknown name, or an image model given a flat input.
  """
  input_shape = tuple(int(s) for s in input_shape)
  if name == "mlp":
    return MLP(hidden=tuple(hidden), num_classes=num_classes)
  if name in MODELS and len(input_shape) != 3:
    raise ValueError(f"model {name!r} needs image inputs [H, W, C]; got input "
                     f"shape {input_shape}.")
  if name == "romoa_mnist_cnn":
    # Two valid 5x5 convolutions need at least 9x9 inputs.
    padding = "VALID" if min(input_shape[:2]) >= 9 else "SAME"
    return RomoaMnistCNN(num_classes=num_classes, padding=padding)
  if name == "romoa_cifar_cnn":
    return RomoaCifarCNN(num_classes=num_classes)
  if name in ("resnet8", "resnet20"):
    return ResNet(depth=int(name[len("resnet"):]), num_classes=num_classes)
  raise ValueError(f"unknown model {name!r}; choose one of {MODELS}.")


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
