"""Conditional generator and critic (discriminator) MLPs for small images.

Both condition on the class by concatenating a one-hot label to their input
(Mirza & Osindero's conditional GAN). The critic has no normalisation layer:
the WGAN-GP gradient penalty is taken per sample, and batch normalisation
would couple the samples of a batch (Gulrajani et al. 2017, Section 4). The
generator ends in a sigmoid, since the library's images are scaled to [0, 1].

References:
  Mirza, M., Osindero, S.: Conditional generative adversarial nets.
  arXiv:1411.1784 (2014).
  Gulrajani, I. et al.: Improved training of Wasserstein GANs. NeurIPS (2017).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class ConditionalGenerator(nn.Module):
  """``(z [B, latent], labels int[B]) -> images [B, *output_shape]`` in [0, 1].

  Attributes:
    output_shape: shape of one generated example, e.g. ``(64,)`` for the
      flattened 8x8 digits.
    num_classes: number of labels.
    hidden: widths of the hidden ReLU layers.
  """

  output_shape: Sequence[int]
  num_classes: int = 10
  hidden: Sequence[int] = (128, 128)

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array) -> jax.Array:
    h = jnp.concatenate(
        [z.astype(jnp.float32),
         jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)], axis=-1)
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    size = 1
    for s in self.output_shape:
      size *= int(s)
    out = nn.sigmoid(nn.Dense(size)(h))
    return out.reshape((z.shape[0],) + tuple(int(s) for s in self.output_shape))


class ConditionalCritic(nn.Module):
  """``(x [B, ...], labels int[B]) -> scores f32[B]`` (unbounded, no sigmoid).

  The WGAN critic's output is a real number; the plain GAN reads it as the
  logit of "real".

  Attributes:
    num_classes: number of labels.
    hidden: widths of the hidden leaky-ReLU layers.
  """

  num_classes: int = 10
  hidden: Sequence[int] = (128, 128)

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    h = jnp.concatenate(
        [x.reshape((x.shape[0], -1)).astype(jnp.float32),
         jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)], axis=-1)
    for width in self.hidden:
      h = nn.leaky_relu(nn.Dense(width)(h), 0.2)
    return nn.Dense(1)(h)[:, 0]
