"""A small CIFAR ResNet (He et al.'s 6n+2 family) with GroupNorm.

GroupNorm replaces BatchNorm because batch statistics are mutable state that
federated averaging handles badly under non-IID data and that Byzantine
clients could poison separately.

References:
  He, K., Zhang, X., Ren, S., Sun, J.: Deep residual learning for image
  recognition. CVPR (2016), Section 4.2.
  Hsieh, K. et al.: The non-IID data quagmire of decentralized machine
  learning. ICML (2020) -- GroupNorm in federated learning.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from typing import Sequence

from robustfl_jax.models.conv import Conv
from robustfl_jax.models.registry import register, require_image


def _groups(width: int) -> int:
  return min(8, width)


class _Block(nn.Module):
  width: int
  stride: int

  @nn.compact
  def __call__(self, x):
    residual = x
    y = Conv(self.width, (3, 3), strides=self.stride, padding="SAME",
                use_bias=False)(x)
    y = nn.relu(nn.GroupNorm(num_groups=_groups(self.width))(y))
    y = Conv(self.width, (3, 3), padding="SAME", use_bias=False)(y)
    y = nn.GroupNorm(num_groups=_groups(self.width))(y)
    if residual.shape != y.shape:
      residual = Conv(self.width, (1, 1), strides=self.stride,
                         use_bias=False)(residual)
      residual = nn.GroupNorm(num_groups=_groups(self.width))(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ResNet-(6n+2) for small images: three stages of ``n`` basic blocks.

  ``depth=8`` (n=1) has 78,042 parameters at width 16 on 10 classes,
  ``depth=20`` (n=3) about 0.27 M.

  Attributes:
    depth: ``6n + 2``.
    width: channels of the first stage (doubled at each later stage).
    num_classes: number of output logits.

  Raises:
    ValueError: (at call) if ``depth`` is not of the form ``6n + 2``.
  """

  depth: int = 8
  width: int = 16
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    if self.depth < 8 or (self.depth - 2) % 6:
      raise ValueError(f"ResNet depth must be 6n+2 with n >= 1; got "
                       f"{self.depth}.")
    blocks = (self.depth - 2) // 6
    x = x.astype(jnp.float32)
    x = Conv(self.width, (3, 3), padding="SAME", use_bias=False)(x)
    x = nn.relu(nn.GroupNorm(num_groups=_groups(self.width))(x))
    for stage in range(3):
      for b in range(blocks):
        stride = 2 if stage > 0 and b == 0 else 1
        x = _Block(self.width * 2**stage, stride)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


@register("resnet8")
def resnet8(*, num_classes: int, input_shape: Sequence[int]) -> ResNet:
  """ResNet-8 (n = 1)."""
  require_image("resnet8", input_shape)
  return ResNet(depth=8, num_classes=num_classes)


@register("resnet20")
def resnet20(*, num_classes: int, input_shape: Sequence[int]) -> ResNet:
  """ResNet-20 (n = 3)."""
  require_image("resnet20", input_shape)
  return ResNet(depth=20, num_classes=num_classes)
