"""Romoa's asynchronous updating with lookahead steps (Algorithms 1 and 2).

Every client keeps its own local model ``theta^i`` across rounds (a flat
``f32[C, d]`` array in ``ServerState.client_state``, so checkpoints hold it).
One call of the round function is one *sync period* of ``tau`` lookahead
steps:

1. at lookahead step ``j = 1..tau`` every client trains locally from its own
   model (one vmapped ``local_train`` call: with ``lookahead_unit="epoch"``
   ``client.local_epochs`` epochs of minibatch SGD, or one FedSGD step; with
   ``lookahead_unit="minibatch"`` one minibatch SGD step, Algorithm 2's
   iteration ``t``) and uploads it; the server sees the
   updates ``theta^i_{t+j} - theta_bar_t`` relative to the last synced global
   model; Byzantine rows are replaced by the model-poisoning attack;
2. a lookahead rule (Romoa) is called at every step (``lookahead_step=j``,
   ``global_params=theta_bar_t``) and updates its sanitizing factors; other
   rules are called once, at the sync step ``j = tau``;
3. at the sync step the aggregate (a delta from ``theta_bar_t``) goes through
   the server optimizer (SGD with lr 1 gives ``theta_bar = sum_i F_i
   theta^i``), and every client moves towards it:
   ``theta^i <- theta^i - gamma (theta^i - theta_bar)``.

The moving rate ``gamma`` is not the selection ratio of eq. 4 (the paper
uses one symbol for both). Section 3.1 says syncing "is the same as the
original FL", where clients take the global model: ``gamma = 1`` is the
default; with it, and a rule whose weights are all ``1/n`` (the mean), one
round is FedAvg over ``tau`` lookahead steps (tested). ``gamma = 1/n`` (the
selection ratio's value) is kept as a named ablation: every upload then
carries the lag since the last sync, so a jump of the global model is fed
back at the next upload (and multiplied by an attacker's boost).

Choices: all clients start from the server's initial model (Algorithm 1 draws
each at random; a common start gives the first lookahead a common reference).
A Byzantine client's local model evolves by its own local training (honest or
poisoned objective); the attack changes only what it uploads, so a boosted
upload is not compounded into its next steps. A non-finite aggregate leaves
the global model unchanged (the round reports ``skipped``), and clients then
move towards the unchanged model, so no NaN reaches any model.

References:
  Mao, Y., Yuan, X., Zhao, X., Zhong, S.: Romoa: Robust model aggregation for
  the resistance of federated learning to model poisoning attacks. ESORICS
  (2021), Algorithms 1 and 2.
  Zhang, M. R. et al.: Lookahead optimizer: k steps forward, 1 step back.
  NeurIPS (2019).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax

from robustfl_jax.attacks import as_attack
from robustfl_jax.fl.round import (apply_aggregate, excluded_rows,
                                   make_client_training, round_key,
                                   round_metrics)
from robustfl_jax.fl.server import FederatedData, ServerState, init_server_state

Array = jax.Array


LOOKAHEAD_UNITS = ("epoch", "minibatch")


def check_async_params(tau: int, moving_rate: float,
                       lookahead_unit: str = "epoch") -> None:
  """Raises ``ValueError`` for bad ``tau``, ``moving_rate`` (gamma) or unit."""
  if isinstance(tau, bool) or not isinstance(tau, int) or tau < 1:
    raise ValueError(f"tau must be an int >= 1 (lookahead steps per sync); "
                     f"got {tau!r}.")
  if not 0.0 < moving_rate <= 1.0:
    raise ValueError(f"moving_rate (gamma) must be in (0, 1]; got "
                     f"{moving_rate}.")
  if lookahead_unit not in LOOKAHEAD_UNITS:
    raise ValueError(f"lookahead_unit must be one of {LOOKAHEAD_UNITS}; got "
                     f"{lookahead_unit!r}.")


def init_async_state(params: Any, server_optimizer: optax.GradientTransformation,
                     aggregator: Any, num_clients: int, key: Array
                     ) -> ServerState:
  """The state before round 0: every local model equals ``params``.

  :func:`robustfl_jax.fl.server.init_server_state` (which copies ``params``
  and ``key``, as a jitted round donates its state) with the local models as
  the per-client state.
  """
  state = init_server_state(params, server_optimizer, aggregator, num_clients,
                            key)
  flat, _ = jax.flatten_util.ravel_pytree(state.params)
  return state.replace(client_state=jnp.tile(
      flat.astype(jnp.float32)[None, :], (num_clients, 1)))


def make_async_round_fn(apply_fn: Callable, params_template: Any, *,
                        client_optimizer: optax.GradientTransformation,
                        server_optimizer: optax.GradientTransformation,
                        aggregator: Any, num_clients: int, max_examples: int,
                        batch_size: int, tau: int = 4, moving_rate: float = 1.0,
                        lookahead: bool = True, local_epochs: int = 1,
                        lookahead_unit: str = "epoch",
                        mode: str = "fedavg",
                        attack: Optional[Callable] = None,
                        train_loss: Optional[Callable] = None) -> Callable:
  """Builds the (unjitted) pure asynchronous round (one sync period).

  Args:
    apply_fn: flax ``apply`` of the model.
    params_template: example parameters (fixes the flattening).
    client_optimizer: optax optimizer of local training (fresh every step).
    server_optimizer: optax optimizer applying ``-aggregate``.
    aggregator: an ``Aggregator``; with ``lookahead`` it is updated at every
      lookahead step with ``lookahead_step`` and ``global_params``.
    num_clients: ``C`` (rows of ``data`` beyond ``C`` are padding).
    max_examples: padded per-client length ``M``.
    batch_size: local minibatch size.
    tau: lookahead steps per sync (Romoa's syncing period).
    moving_rate: ``gamma`` in (0, 1]; 1 (default) resets every client to the
      global model, as in FedAvg; ``1/n`` is the ablation of the module doc.
    lookahead: call the aggregator at every step (Romoa) or only at sync.
    local_epochs: local epochs per lookahead step (FedAvg mode, unit
      ``"epoch"``).
    lookahead_unit: ``"epoch"`` (a lookahead step is ``local_epochs`` local
      epochs) or ``"minibatch"`` (one minibatch SGD step, as Algorithm 2's
      iteration; a fresh random minibatch each step).
    mode: ``"fedavg"`` or ``"fedsgd"``.
    attack: an :class:`~robustfl_jax.attacks.Attack` or an attack function
      (it changes the uploads; TPA's objective or alternating minimisation
      changes the Byzantine clients' training, see
      :func:`robustfl_jax.fl.round.make_client_training`), or None.
    train_loss: the honest local objective (cross-entropy when None).

  Returns:
    ``round_fn(state, data, key=None) -> (state, metrics)``; jit it.

  Raises:
    ValueError: bad ``tau``, ``moving_rate`` or ``lookahead_unit``.
  """
  check_async_params(tau, moving_rate, lookahead_unit)
  attack = as_attack(attack)
  minibatch = lookahead_unit == "minibatch"
  local_train = make_client_training(
      apply_fn, client_optimizer, max_examples=max_examples,
      batch_size=batch_size, local_epochs=1 if minibatch else local_epochs,
      mode=mode, train_loss=train_loss, attack=attack,
      max_steps=1 if minibatch else None)
  _, unravel = jax.flatten_util.ravel_pytree(params_template)
  C = num_clients

  def train_all(models, data, keys, byzantine):
    def one(model, x, y, count, k, flag):
      return local_train(unravel(model), x, y, count, k, flag)
    result = jax.vmap(one)(models, data.x[:C], data.y[:C], data.count[:C],
                           keys, byzantine)
    return result.delta.astype(jnp.float32), result.loss

  def round_fn(state: ServerState, data: FederatedData,
               key: Optional[Array] = None):
    if key is None:
      key = round_key(state)
    byzantine = data.byzantine[:C]
    theta_bar, _ = jax.flatten_util.ravel_pytree(state.params)
    theta_bar = theta_bar.astype(jnp.float32)

    def step_keys(j):
      return jax.random.split(jax.random.fold_in(key, j), 3)

    def poison(uploads, j):
      if attack is None:
        return uploads
      return attack(step_keys(j)[1], uploads, byzantine,
                    global_params=theta_bar, round=state.round,
                    aggregator=aggregator)

    def lookahead_step(models, j, attack_now=True):
      train_key, _, agg_key = step_keys(j)
      keys = jax.vmap(lambda i: jax.random.fold_in(train_key, i))(
          jnp.arange(C))
      delta, loss = train_all(models, data, keys, byzantine)
      models = models + delta
      uploads = models - theta_bar[None, :]
      if attack_now:
        uploads = poison(uploads, j)
      return models, uploads, loss, agg_key

    def call_aggregator(uploads, agg_state, agg_key, j):
      return aggregator.update(uploads, agg_state, key=agg_key, mask=None,
                               global_params=theta_bar, round=state.round,
                               lookahead_step=j + 1)

    # One scan over all tau steps (the local training and the rule compile
    # once); a lookahead rule runs inside it and the last step's aggregate is
    # carried out, other rules run once on the last step's uploads.
    models, agg_state = state.client_state, state.aggregator_state
    if lookahead:
      def body(carry, j):
        models, agg_state, _, _ = carry
        models, uploads, loss, agg_key = lookahead_step(models, j)
        aggregate, agg_state, info = call_aggregator(uploads, agg_state,
                                                     agg_key, j)
        return (models, agg_state, aggregate, info), loss

      shapes = jax.eval_shape(
          lambda: call_aggregator(jnp.zeros_like(models), agg_state,
                                  jax.random.PRNGKey(0), 0))
      zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                           (shapes[0], shapes[2]))
      (models, agg_state, aggregate, info), losses = jax.lax.scan(
          body, (models, agg_state) + zeros, jnp.arange(tau))
    else:
      def body(carry, j):
        models, _ = carry
        # Only the sync step's uploads are aggregated: attack them once.
        models, uploads, loss, _ = lookahead_step(models, j, False)
        return (models, uploads), loss

      (models, uploads), losses = jax.lax.scan(
          body, (models, jnp.zeros_like(models)), jnp.arange(tau))
      uploads = poison(uploads, tau - 1)
      agg_key = step_keys(tau - 1)[2]
      aggregate, agg_state, info = call_aggregator(uploads, agg_state,
                                                   agg_key, tau - 1)

    new_params, opt_state, aggregate, finite = apply_aggregate(
        server_optimizer, unravel, state.params, state.opt_state, aggregate)
    new_bar, _ = jax.flatten_util.ravel_pytree(new_params)
    models = models - moving_rate * (models - new_bar[None, :].astype(
        jnp.float32))

    metrics = round_metrics(jnp.mean(losses, axis=0), byzantine, aggregate,
                            finite, excluded_rows(info), info["rejected"],
                            info["num_nonfinite"])
    if "factor_mean" in info:
      metrics["factor_mean"] = info["factor_mean"]
    if "weights" in info:
      metrics["client_weights"] = info["weights"]
    new_state = state.replace(params=new_params, opt_state=opt_state,
                              aggregator_state=agg_state, client_state=models,
                              round=state.round + 1)
    return new_state, metrics

  return round_fn
