"""Conditional WGAN-GP (and a plain GAN) for the server's synthetic validation data.

The GAN validation filter (:mod:`robustfl_jax.defenses.gan_filter`) needs a
class-conditional generator trained on a small sample of real data that the
clients share with the server. A plain GAN trained on so few samples tends to
mode-collapse (every sample of a class looks alike); the Wasserstein GAN with
gradient penalty does not. :func:`train_gan` trains either (``kind``), and
:func:`sample_diversity` measures the collapse so the two can be compared.

WGAN-GP (Gulrajani et al. 2017, Algorithm 1), conditional on the label ``y``:

* critic loss ``E[D(G(z, y), y)] - E[D(x, y)] + lambda E[(|grad_xh D(xh, y)|_2 - 1)^2]``
  with ``xh = eps x + (1 - eps) G(z, y)``, ``eps ~ U[0, 1]`` per sample;
* generator loss ``-E[D(G(z, y), y)]``;
* ``critic_steps`` critic updates per generator update, Adam for both.

Defaults follow the issue: ``lambda = 10``, 5 critic steps, Adam with
``betas = (0.5, 0.9)`` and learning rate ``1e-4``. (Gulrajani et al. use
``beta1 = 0``; set ``beta1=0.0`` to match the paper exactly.)

The plain GAN (Goodfellow et al. 2014) uses the non-saturating generator loss
``softplus(-D(G(z, y)))``, the discriminator loss ``softplus(-D(x)) +
softplus(D(G(z)))``, one discriminator step per generator step and Adam with
``betas = (0.5, 0.999)``, learning rate ``2e-4`` (Radford et al.'s DCGAN
settings).

Training is one jitted ``lax.scan`` over generator steps (the critic steps
are an inner scan); minibatches are drawn with replacement from the shared
sample.

References:
  Gulrajani, I., Ahmed, F., Arjovsky, M., Dumoulin, V., Courville, A.:
  Improved training of Wasserstein GANs. NeurIPS (2017).
  Goodfellow, I. et al.: Generative adversarial nets. NeurIPS (2014).
  Usama et al.: robust federated learning with a WGAN-GP validation filter,
  arXiv:2503.20884 (the seed of this module).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustfl_jax.models.gan import ConditionalCritic, ConditionalGenerator

Array = jax.Array
KINDS = ("wgan_gp", "gan")


def gradient_penalty(critic_fn: Callable[[Array], Array], real: Array,
                     fake: Array, epsilon: Array, weight: float = 10.0
                     ) -> Array:
  """The WGAN-GP penalty ``weight * mean_i (|grad D(xh_i)|_2 - 1)^2``.

  Args:
    critic_fn: ``x [B, ...] -> scores [B]``; each score must depend on its own
      sample only (no batch statistics), so that the gradient of the summed
      scores is the per-sample gradient.
    real: ``[B, ...]`` real samples.
    fake: ``[B, ...]`` generated samples.
    epsilon: ``[B]`` interpolation weights in [0, 1].
    weight: the penalty coefficient ``lambda``.

  Returns:
    A scalar. For a linear critic ``D(x) = <w, x> + b`` it is
    ``weight * (|w| - 1)^2`` whatever the samples (tested).
  """
  shape = (-1,) + (1,) * (real.ndim - 1)
  eps = epsilon.reshape(shape).astype(real.dtype)
  interpolated = eps * real + (1 - eps) * fake
  grads = jax.grad(lambda xh: jnp.sum(critic_fn(xh)))(interpolated)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)),
                           axis=1) + 1e-12)
  return weight * jnp.mean(jnp.square(norms - 1.0))


class GANResult(NamedTuple):
  """A trained conditional GAN.

  Attributes:
    generator: the flax generator module.
    generator_params: its parameters.
    critic_params: the critic's (discriminator's) parameters.
    losses: ``f32[num_steps, 2]`` critic and generator loss per step.
    latent_dim: size of ``z``.
    num_classes: number of labels.
  """

  generator: Any
  generator_params: Any
  critic_params: Any
  losses: Array
  latent_dim: int
  num_classes: int


def _check(kind, num_steps, critic_steps, batch_size, latent_dim, gp_weight):
  if kind not in KINDS:
    raise ValueError(f"GAN kind must be one of {KINDS}; got {kind!r}.")
  for name, value in (("num_steps", num_steps), ("critic_steps", critic_steps),
                      ("batch_size", batch_size), ("latent_dim", latent_dim)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f"train_gan: {name} must be a Python int; got {value!r}.")
    if value < (0 if name == "num_steps" else 1):
      raise ValueError(f"train_gan: {name} must be >= "
                       f"{0 if name == 'num_steps' else 1}; got {value}.")
  if not gp_weight >= 0:
    raise ValueError(f"train_gan: gp_weight must be >= 0; got {gp_weight}.")


def train_gan(key: Array, x: Any, y: Any, num_classes: int, *,
              kind: str = "wgan_gp", num_steps: int = 1000,
              critic_steps: int | None = None, batch_size: int = 64,
              latent_dim: int = 32, hidden: Sequence[int] = (128, 128),
              learning_rate: float | None = None,
              betas: tuple[float, float] | None = None,
              gp_weight: float = 10.0) -> GANResult:
  """Trains a conditional WGAN-GP (default) or plain GAN on ``(x, y)``.

  Args:
    key: PRNG key.
    x: ``[N, ...]`` real samples in [0, 1] (the shared sample).
    y: ``int[N]`` labels.
    num_classes: number of labels.
    kind: ``"wgan_gp"`` or ``"gan"``.
    num_steps: generator updates.
    critic_steps: critic updates per generator update (5 for WGAN-GP, 1 for
      the GAN when None).
    batch_size: minibatch size (drawn with replacement).
    latent_dim: size of the noise ``z ~ N(0, I)``.
    hidden: hidden widths of both networks.
    learning_rate: Adam step (1e-4 WGAN-GP, 2e-4 GAN when None).
    betas: Adam ``(beta1, beta2)`` (``(0.5, 0.9)`` WGAN-GP, ``(0.5, 0.999)``
      GAN when None).
    gp_weight: ``lambda`` of the gradient penalty (WGAN-GP only).

  Returns:
    A :class:`GANResult`.

  Raises:
    ValueError: unknown kind, non-int or non-positive sizes, empty data.
  """
  if critic_steps is None:
    critic_steps = 5 if kind == "wgan_gp" else 1
  _check(kind, num_steps, critic_steps, batch_size, latent_dim, gp_weight)
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.int32)
  if x.shape[0] < 1 or y.shape != (x.shape[0],):
    raise ValueError(f"train_gan needs N >= 1 samples with N labels; got x "
                     f"{x.shape}, y {y.shape}.")
  wgan = kind == "wgan_gp"
  lr = learning_rate if learning_rate is not None else (1e-4 if wgan else 2e-4)
  b1, b2 = betas if betas is not None else ((0.5, 0.9) if wgan else (0.5, 0.999))
  generator = ConditionalGenerator(tuple(x.shape[1:]), num_classes, tuple(hidden))
  critic = ConditionalCritic(num_classes, tuple(hidden))
  g_key, c_key, loop_key = jax.random.split(key, 3)
  dummy_z = jnp.zeros((1, latent_dim))
  dummy_y = jnp.zeros((1,), jnp.int32)
  g_params = generator.init(g_key, dummy_z, dummy_y)["params"]
  c_params = critic.init(c_key, x[:1], dummy_y)["params"]
  g_opt = optax.adam(lr, b1=b1, b2=b2)
  c_opt = optax.adam(lr, b1=b1, b2=b2)

  def gen(params, z, labels):
    return generator.apply({"params": params}, z, labels)

  def crit(params, samples, labels):
    return critic.apply({"params": params}, samples, labels)

  def batch(k):
    idx_key, z_key, eps_key = jax.random.split(k, 3)
    idx = jax.random.randint(idx_key, (batch_size,), 0, x.shape[0])
    z = jax.random.normal(z_key, (batch_size, latent_dim))
    eps = jax.random.uniform(eps_key, (batch_size,))
    return x[idx], y[idx], z, eps

  def critic_loss(c_p, g_p, k):
    real, labels, z, eps = batch(k)
    fake = jax.lax.stop_gradient(gen(g_p, z, labels))
    d_real, d_fake = crit(c_p, real, labels), crit(c_p, fake, labels)
    if wgan:
      penalty = gradient_penalty(lambda s: crit(c_p, s, labels), real, fake,
                                 eps, gp_weight)
      return jnp.mean(d_fake) - jnp.mean(d_real) + penalty
    return jnp.mean(jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake))

  def generator_loss(g_p, c_p, k):
    _, labels, z, _ = batch(k)
    d_fake = crit(c_p, gen(g_p, z, labels), labels)
    return -jnp.mean(d_fake) if wgan else jnp.mean(jax.nn.softplus(-d_fake))

  def critic_step(carry, k):
    c_p, c_s, g_p = carry
    loss, grads = jax.value_and_grad(critic_loss)(c_p, g_p, k)
    upd, c_s = c_opt.update(grads, c_s, c_p)
    return (optax.apply_updates(c_p, upd), c_s, g_p), loss

  def step(carry, k):
    g_p, g_s, c_p, c_s = carry
    keys = jax.random.split(k, critic_steps + 1)
    c_keys, g_key_ = keys[:-1], keys[-1]
    (c_p, c_s, _), c_losses = jax.lax.scan(critic_step, (c_p, c_s, g_p), c_keys)
    g_loss, g_grads = jax.value_and_grad(generator_loss)(g_p, c_p, g_key_)
    upd, g_s = g_opt.update(g_grads, g_s, g_p)
    g_p = optax.apply_updates(g_p, upd)
    return (g_p, g_s, c_p, c_s), jnp.stack([c_losses[-1], g_loss])

  @jax.jit
  def run(g_params, c_params, k):
    init = (g_params, g_opt.init(g_params), c_params, c_opt.init(c_params))
    (g_p, _, c_p, _), losses = jax.lax.scan(step, init,
                                            jax.random.split(k, num_steps))
    return g_p, c_p, losses

  g_params, c_params, losses = run(g_params, c_params, loop_key)
  return GANResult(generator, g_params, c_params, losses, int(latent_dim),
                   int(num_classes))


def sample(gan: GANResult, key: Array, labels: Array,
           params: Any = None) -> Array:
  """Generates one sample per entry of ``labels`` (pure; jit-able).

  Args:
    gan: a trained :class:`GANResult`.
    key: PRNG key for the noise.
    labels: ``int[B]`` classes to generate.
    params: generator parameters (``gan.generator_params`` when None); pass
      them explicitly to trace them as arrays inside a jitted function.
  """
  params = gan.generator_params if params is None else params
  z = jax.random.normal(key, (labels.shape[0], gan.latent_dim))
  return gan.generator.apply({"params": params}, z, labels)


def balanced_labels(num_classes: int, per_class: int) -> Array:
  """``int[num_classes * per_class]``: ``per_class`` copies of each class."""
  return jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), per_class)


def sample_diversity(samples: Any, labels: Any, num_classes: int) -> float:
  """Mean within-class pairwise L2 distance of ``samples`` (host numpy).

  A mode-collapsed conditional generator draws near-identical samples for a
  class, so this number drops towards 0; real data sets the scale. Classes
  with fewer than two samples are skipped.

  Returns:
    The mean, over classes, of the mean distance between distinct pairs.
  """
  samples = np.asarray(samples, np.float64).reshape(len(labels), -1)
  labels = np.asarray(labels)
  per_class = []
  for c in range(num_classes):
    s = samples[labels == c]
    if len(s) < 2:
      continue
    sq = np.sum(s * s, 1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * s @ s.T, 0))
    per_class.append(dist[np.triu_indices(len(s), 1)].mean())
  return float(np.mean(per_class)) if per_class else float("nan")
