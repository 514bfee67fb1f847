"""The CNNs of the Romoa paper's appendix (Fig. 9 MNIST, Fig. 10 CIFAR-10).

References:
  Mao, Y., Yuan, X., Zhao, X., Zhong, S.: Romoa: Robust model aggregation for
  the resistance of federated learning to model poisoning attacks. ESORICS
  (2021), appendix Figs. 9 and 10.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from typing import Sequence

from robustfl_jax.models.conv import Conv
from robustfl_jax.models.registry import register, require_image


class RomoaMnistCNN(nn.Module):
  """Fig. 9: Conv(64,5)-Conv(64,5)-Dropout(.25)-Dense(128)-Dropout(.5)-Dense.

  With ``padding="VALID"`` on 28x28x1 inputs this has exactly the paper's
  3,382,346 parameters (1,664 + 102,464 + 3,276,928 + 1,290). Inputs smaller
  than 9x9 (the 8x8 digits) cannot take two valid 5x5 convolutions; use
  ``padding="SAME"`` there (:func:`robustfl_jax.models.get` chooses it).

  Attributes:
    num_classes: number of output logits (the paper's softmax is in the loss).
    padding: ``"VALID"`` (paper) or ``"SAME"``.
  """

  num_classes: int = 10
  padding: str = "VALID"

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(jnp.float32)
    x = nn.relu(Conv(64, (5, 5), padding=self.padding)(x))
    x = nn.relu(Conv(64, (5, 5), padding=self.padding)(x))
    x = nn.Dropout(0.25, deterministic=not train)(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128)(x))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


class RomoaCifarCNN(nn.Module):
  """Fig. 10: a VGG-like stack of 3x3 convolutions (2-3-3) and Dense(1024).

  On 32x32x3 inputs it has the paper's 6,088,650 parameters. The flatten size
  follows the input (three 2x2 poolings), so smaller images work too.

  Attributes:
    num_classes: number of output logits.
  """

  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(jnp.float32)
    for stage, (width, reps) in enumerate(((64, 2), (128, 3), (256, 3))):
      for _ in range(reps):
        x = nn.relu(Conv(width, (3, 3), padding="SAME")(x))
      if min(x.shape[1:3]) >= 2 or stage == 0:
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(1024)(x))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


@register("romoa_mnist_cnn")
def romoa_mnist_cnn(*, num_classes: int, input_shape: Sequence[int]
                    ) -> RomoaMnistCNN:
  """Fig. 9's CNN; its two valid 5x5 convolutions need 9x9 inputs, so smaller
  images (digits' 8x8) get "SAME" padding."""
  require_image("romoa_mnist_cnn", input_shape)
  padding = "VALID" if min(input_shape[:2]) >= 9 else "SAME"
  return RomoaMnistCNN(num_classes=num_classes, padding=padding)


@register("romoa_cifar_cnn")
def romoa_cifar_cnn(*, num_classes: int, input_shape: Sequence[int]
                    ) -> RomoaCifarCNN:
  """Fig. 10's CNN."""
  require_image("romoa_cifar_cnn", input_shape)
  return RomoaCifarCNN(num_classes=num_classes)
