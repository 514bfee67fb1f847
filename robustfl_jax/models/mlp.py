"""A multi-layer perceptron classifier."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from robustfl_jax.models.registry import register


class MLP(nn.Module):
  """Flattens its input and applies ReLU dense layers, then a linear head.

  ``MLP(hidden=(128,), num_classes=10)`` on 64-dimensional digits is the
  "MLP 64-128-10" of the simulation benchmark (9,610 parameters).

  Attributes:
    hidden: widths of the hidden layers.
    num_classes: number of output logits.
  """

  hidden: Sequence[int] = (128,)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No dropout or normalisation: identical in train and eval.
    x = x.reshape((x.shape[0], -1)).astype(jnp.float32)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


@register("mlp")
def mlp(*, num_classes: int, input_shape: Sequence[int] = (),
        hidden: Sequence[int] = (128,)) -> MLP:
  """The MLP for configs: ``model.hidden`` hidden widths."""
  del input_shape  # it flattens any input
  return MLP(hidden=tuple(int(h) for h in hidden), num_classes=num_classes)
