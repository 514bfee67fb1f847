"""Local client training: one pure function, vmapped over clients.

A client's data is one padded row of :class:`robustfl_jax.data.ClientData`
(``x: [M, ...]``, ``y: [M]``, ``count``). Each local epoch draws a fresh
permutation of the client's real examples (padding sorted last), cuts it into
``ceil(M / batch_size)`` minibatches and runs them through ``lax.scan``; padded
entries are masked out of the loss and a minibatch with no real example leaves
the parameters and optimizer state untouched. So a client with fewer examples
than ``M`` does exactly its own number of steps, as in a per-client loop.

References:
  McMahan, B. et al.: Communication-efficient learning of deep networks from
  decentralized data. AISTATS (2017) -- FedSGD and FedAvg.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax

Array = jax.Array
ApplyFn = Callable[..., Array]
# train_loss(logits_fn, params, x, y, mask, key, aux) -> scalar, where
# logits_fn(params, x) runs the model in training mode (dropout keyed per step).
TrainLoss = Callable[..., Array]

MODES = ("fedavg", "fedsgd")


class LocalResult(NamedTuple):
  """What one client's local training returns.

  Attributes:
    delta: ``f32[d]`` local params minus the broadcast params, flattened in
      ``jax.flatten_util.ravel_pytree`` order (unravel it with the same).
    loss: mean training loss over the real examples seen (all steps).
    num_steps: number of optimizer steps taken (minibatches with data).
  """

  delta: Any
  loss: Array
  num_steps: Array


def masked_cross_entropy(logits: Array, labels: Array, mask: Array) -> Array:
  """Mean softmax cross-entropy over the entries where ``mask`` is True.

  Returns 0 for an all-False mask (never NaN).
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  weights = mask.astype(logits.dtype)
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def num_local_steps(max_examples: int, batch_size: int, local_epochs: int,
                    mode: str = "fedavg") -> tuple[int, int]:
  """Static ``(steps_per_epoch, effective_batch)`` of the local scan."""
  if mode == "fedsgd":
    return 1, max_examples
  batch = min(batch_size, max_examples)
  return math.ceil(max_examples / batch), batch


def cross_entropy_loss(logits_fn, params, x, y, mask, key, aux=None) -> Array:
  """The default local objective: masked softmax cross-entropy.

  This is the :data:`TrainLoss` signature every local objective follows;
  ``key`` (for randomized objectives such as adversarial training) and
  ``aux`` (a per-client pytree passed to ``local_train``) are unused here.
  """
  del key, aux
  return masked_cross_entropy(logits_fn(params, x), y, mask)


def make_local_train(apply_fn: ApplyFn, optimizer: optax.GradientTransformation,
                     *, max_examples: int, batch_size: int, local_epochs: int = 1,
                     mode: str = "fedavg",
                     train_loss: Optional[TrainLoss] = None,
                     max_steps: Optional[int] = None
                     ) -> Callable[..., LocalResult]:
  """Builds ``local_train(params, x, y, count, key, aux=None) -> LocalResult``.

  Args:
    apply_fn: ``apply_fn({'params': p}, x, train=True, rngs={'dropout': k})``,
      e.g. a flax module's ``apply``.
    optimizer: the client optimizer (any optax transformation); its state is
      fresh every round.
    max_examples: padded per-client length ``M`` (static).
    batch_size: minibatch size in FedAvg mode (clipped to ``M``).
    local_epochs: passes over the local data in FedAvg mode.
    mode: ``"fedavg"`` (local epochs of minibatch steps) or ``"fedsgd"`` (one
      step on the full local gradient; ``local_epochs`` and ``batch_size`` are
      ignored).
    train_loss: the local objective, ``train_loss(logits_fn, params, x, y,
      mask, key, aux) -> scalar`` with ``logits_fn(params, x)`` the model in
      training mode; :func:`cross_entropy_loss` when None. Adversarial
      training and targeted poisoning objectives plug in here.
    max_steps: if given (static, >= 1), only the first ``max_steps``
      minibatch steps of the shuffled epochs are taken (Romoa's lookahead
      step of one minibatch SGD iteration: ``local_epochs=1, max_steps=1``).

  Returns:
    A pure function of one client; vmap it over ``x, y, count, key`` (and
    ``aux``, a per-client pytree handed to ``train_loss``, when given).

  Raises:
    ValueError: on an unknown mode or non-positive sizes.
  """
  if mode not in MODES:
    raise ValueError(f"client.mode must be one of {MODES}; got {mode!r}.")
  if max_examples < 1 or batch_size < 1:
    raise ValueError("max_examples and batch_size must be >= 1; got "
                     f"{max_examples} and {batch_size}.")
  if mode == "fedavg" and local_epochs < 1:
    raise ValueError(f"local_epochs must be >= 1 in fedavg mode; got "
                     f"{local_epochs}.")
  if max_steps is not None and (isinstance(max_steps, bool)
                                or not isinstance(max_steps, int)
                                or max_steps < 1):
    raise ValueError(f"max_steps must be an int >= 1 or None; got "
                     f"{max_steps!r}.")
  steps_per_epoch, batch = num_local_steps(max_examples, batch_size,
                                           local_epochs, mode)
  epochs = 1 if mode == "fedsgd" else local_epochs
  total = steps_per_epoch * batch
  num_steps = epochs * steps_per_epoch
  if max_steps is not None:
    num_steps = min(num_steps, max_steps)
  objective = cross_entropy_loss if train_loss is None else train_loss

  def epoch_batches(key, count):
    if steps_per_epoch == 1:
      # One minibatch holds the whole client: order cannot change the mean
      # gradient, so skip the sort and the gather.
      return (jnp.arange(batch)[None, :],
              (jnp.arange(batch) < count)[None, :])
    # Real examples first, in random order; padding (score 2) last.
    scores = jax.random.uniform(key, (max_examples,))
    scores = jnp.where(jnp.arange(max_examples) < count, scores, 2.0)
    order = jnp.argsort(scores)
    order = jnp.pad(order, (0, total - max_examples))
    valid = jnp.arange(total) < count
    return (order.reshape(steps_per_epoch, batch),
            valid.reshape(steps_per_epoch, batch))

  def local_train(params, x, y, count, key, aux=None) -> LocalResult:
    x, y = jnp.asarray(x), jnp.asarray(y)
    shuffle_key, dropout_key = jax.random.split(key)
    epoch_keys = jax.random.split(shuffle_key, epochs)
    order, valid = jax.vmap(epoch_batches, in_axes=(0, None))(epoch_keys, count)
    order = order.reshape(epochs * steps_per_epoch, batch)[:num_steps]
    valid = valid.reshape(epochs * steps_per_epoch, batch)[:num_steps]
    step_keys = jax.random.split(dropout_key, epochs * steps_per_epoch)[
        :num_steps]

    # Training runs on the flat parameter vector: per-client copies are one
    # [d] row each (no per-leaf arrays to gather into [C, d] afterwards), and
    # the model sees the pytree through the cheap unravel.
    flat_params, unravel = jax.flatten_util.ravel_pytree(params)

    def loss_fn(p, xb, yb, mb, k):
      dropout_key, loss_key = jax.random.split(k)

      def logits_fn(tree, inputs):
        return apply_fn({"params": tree}, inputs, train=True,
                        rngs={"dropout": dropout_key})

      return objective(logits_fn, unravel(p), xb, yb, mb, loss_key, aux)

    def step(carry, inputs):
      p, opt_state = carry
      idx, mb, k = inputs
      xb, yb = (x, y) if steps_per_epoch == 1 else (x[idx], y[idx])
      loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb, mb, k)
      updates, new_opt_state = optimizer.update(grads, opt_state, p)
      new_p = optax.apply_updates(p, updates)
      has_data = jnp.any(mb)
      keep = lambda new, old: jnp.where(has_data, new, old)
      p = jax.tree.map(keep, new_p, p)
      opt_state = jax.tree.map(keep, new_opt_state, opt_state)
      num = jnp.sum(mb)
      return (p, opt_state), (loss * num, num, has_data)

    # The first step is peeled out of the scan: its parameters are the
    # broadcast ones, so under vmap its forward pass is one large matmul over
    # all clients instead of a batch of per-client ones.
    carry, first = step((flat_params, optimizer.init(flat_params)),
                        (order[0], valid[0], step_keys[0]))
    (final, _), rest = jax.lax.scan(step, carry,
                                    (order[1:], valid[1:], step_keys[1:]))
    loss_sums, nums, stepped = (jnp.concatenate([a[None], b])
                                for a, b in zip(first, rest))
    delta = final - flat_params
    loss = jnp.sum(loss_sums) / jnp.maximum(jnp.sum(nums), 1)
    return LocalResult(delta, loss, jnp.sum(stepped).astype(jnp.int32))

  return local_train


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0
                   ) -> optax.GradientTransformation:
  """An optax optimizer by config name: ``sgd``, ``momentum``, ``adam``, ``adamw``.

  ``momentum`` is SGD with Nesterov-free heavy ball (``momentum`` defaults to
  0.9 when given as 0).
  """
  if name == "sgd":
    return optax.sgd(learning_rate, momentum=momentum or None)
  if name == "momentum":
    return optax.sgd(learning_rate, momentum=momentum or 0.9)
  if name == "adam":
    return optax.adam(learning_rate)
  if name == "adamw":
    return optax.adamw(learning_rate)
  raise ValueError(f"unknown optimizer {name!r}; choose one of "
                   "('sgd', 'momentum', 'adam', 'adamw').")


OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
