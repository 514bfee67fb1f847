"""The jitted federated round: broadcast, local training, attack, aggregation.

``round_fn(server_state, data, key) -> (server_state, metrics)``:

1. every client trains from the global parameters (one vmapped function,
   :mod:`robustfl_jax.fl.local`), keys folded per client;
2. deltas are flattened to ``updates: f32[C, d]`` and, with client momentum
   ``beta``, each client sends ``m_c = beta * m_c + (1 - beta) * delta_c``;
3. the attack replaces the Byzantine rows
   (``attack(key, updates, byzantine_mask, global_params=, round=,
   aggregator=)``; an attack may also give the Byzantine clients their own
   local objective or local training, see :func:`make_client_training`);
4. an optional scorer flags outliers, excluded through the aggregator's mask;
5. the aggregator returns ``[d]`` (it also receives the context
   ``global_params`` (flat ``[d]``) and ``round``); a non-finite aggregate is dropped (the
   round leaves the parameters unchanged and reports ``skipped``), so no NaN
   ever reaches the model;
6. the server optimizer applies ``-aggregate`` as a gradient (SGD with lr 1 is
   FedAvg).

References:
  McMahan, B. et al.: Communication-efficient learning of deep networks from
  decentralized data. AISTATS (2017).
  Karimireddy, S. P., He, L., Jaggi, M.: Learning from history for Byzantine
  robust optimization. ICML (2021) -- client (worker) momentum.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax

from robustfl_jax.attacks import Attack, as_attack
from robustfl_jax.fl.local import LocalResult, make_local_train
from robustfl_jax.fl.metrics import detection_rates
from robustfl_jax.fl import sharding
from robustfl_jax.fl.server import FederatedData, ServerState

Array = jax.Array
ScorerFn = Callable[[Array], Array]
CLIENT_EXECUTIONS = ("vmap", "map")


def make_client_training(apply_fn: Callable,
                         client_optimizer: optax.GradientTransformation, *,
                         max_examples: int, batch_size: int,
                         local_epochs: int = 1, mode: str = "fedavg",
                         train_loss: Optional[Callable] = None,
                         attack: Optional[Attack] = None,
                         max_steps: Optional[int] = None) -> Callable:
  """Local training of one client, honest or Byzantine; vmap it over clients.

  ``max_steps`` caps the minibatch steps (see
  :func:`robustfl_jax.fl.local.make_local_train`); an attack's own
  ``local_train`` is not capped.

  Honest clients minimise ``train_loss`` (cross-entropy when None). An
  attack that poisons training takes over the Byzantine clients: with
  ``attack.train_loss`` every client trains on that objective with its
  Byzantine flag as ``aux`` (honest clients get the benign part); with
  ``attack.local_train`` the Byzantine clients run the attack's own local
  training instead (both are computed and selected by the flag).

  Returns:
    ``train(params, x, y, count, key, byzantine) -> LocalResult``.

  Raises:
    ValueError: an attack objective together with a ``train_loss`` (e.g.
      adversarial training): the two would have to share one objective.
  """
  attack = as_attack(attack)
  attack_loss = attack.train_loss if attack is not None else None
  if attack_loss is not None and train_loss is not None:
    raise ValueError(f"attack {attack.name!r} trains the Byzantine clients on "
                     "its own objective; it cannot be combined with another "
                     "client objective (adversarial training).")

  def build(loss, m=None, b=None, e=None):
    return make_local_train(apply_fn, client_optimizer,
                            max_examples=m or max_examples,
                            batch_size=b or batch_size,
                            local_epochs=e or local_epochs, mode=mode,
                            train_loss=loss,
                            max_steps=max_steps if m is None else None)

  local_train = build(attack_loss or train_loss)
  byzantine_train = None
  if attack is not None and attack.local_train is not None:
    byzantine_train = attack.local_train(build, local_epochs)

  def train(params, x, y, count, key, byzantine) -> LocalResult:
    aux = byzantine if attack_loss is not None else None
    result = local_train(params, x, y, count, key, aux)
    if byzantine_train is not None:
      other = byzantine_train(params, x, y, count, key)
      result = jax.tree.map(lambda a, b: jnp.where(byzantine, b, a), result,
                            other)
    return result

  return train


def round_key(state: ServerState) -> Array:
  """The PRNG key of the round ``state.round`` (restart-safe: no key chain)."""
  return jax.random.fold_in(state.key, state.round)


def apply_aggregate(server_optimizer: optax.GradientTransformation,
                    unravel: Callable, params: Any, opt_state: Any,
                    aggregate: Array):
  """The server step: ``-aggregate`` as a gradient through the optimizer.

  A non-finite aggregate (an all-rejected or poisoned round) leaves the
  parameters and the optimizer state exactly as they were.

  Returns:
    ``(params, opt_state, aggregate, finite)`` with the non-finite aggregate
    replaced by zeros and ``finite`` the bool scalar that decided.
  """
  finite = jnp.all(jnp.isfinite(aggregate))
  aggregate = jnp.where(finite, aggregate, 0.0)
  grads = unravel(-aggregate.astype(jnp.float32))
  server_updates, new_opt_state = server_optimizer.update(grads, opt_state,
                                                          params)
  new_params = optax.apply_updates(params, server_updates)
  keep = lambda new, old: jnp.where(finite, new, old)
  return (jax.tree.map(keep, new_params, params),
          jax.tree.map(keep, new_opt_state, opt_state), aggregate, finite)


def excluded_rows(info: dict) -> Array:
  """The rows a rule gave zero weight (``info["excluded"]``; rules written
  before it existed: rejected or not selected)."""
  if "excluded" in info:
    return info["excluded"]
  out = info["rejected"]
  if "selected" in info:
    out = out | ~info["selected"]
  return out


def round_metrics(losses: Array, byzantine: Array, aggregate: Array,
                  finite: Array, flagged: Array, rejected: Array,
                  num_nonfinite: Array) -> dict:
  """The per-round metrics every protocol reports.

  ``train_loss`` is the mean local loss of the honest clients (NaN, written
  as null, when every client is Byzantine: it is undefined). ``flagged``
  (``bool[C]``) are the clients *excluded*: given zero weight in the
  aggregate by a scorer or the rule (``info["excluded"]``); they are scored
  against the real Byzantine set by
  :func:`robustfl_jax.fl.metrics.detection_rates` and counted as
  ``num_excluded``. ``num_rejected`` counts the masked or non-finite ones
  among them (``rejected``), as the rules' ``info`` does.
  """
  honest = (~byzantine).astype(jnp.float32)
  num_honest = jnp.sum(honest)
  train_loss = (jnp.sum(jnp.where(byzantine, 0.0, losses))
                / jnp.maximum(num_honest, 1.0))
  return {
      "train_loss": jnp.where(num_honest > 0, train_loss, jnp.nan),
      "update_norm": jnp.linalg.norm(aggregate),
      "skipped": ~finite,
      "num_excluded": jnp.sum(flagged).astype(jnp.int32),
      "num_rejected": jnp.sum(rejected).astype(jnp.int32),
      "num_nonfinite": num_nonfinite,
      "flagged": flagged,
      **detection_rates(flagged, byzantine),
  }


def make_round_fn(apply_fn: Callable, params_template: Any, *,
                  client_optimizer: optax.GradientTransformation,
                  server_optimizer: optax.GradientTransformation,
                  aggregator: Any, num_clients: int, max_examples: int,
                  batch_size: int, local_epochs: int = 1, mode: str = "fedavg",
                  attack: Optional[Callable] = None,
                  scorer: Optional[ScorerFn] = None,
                  client_momentum: float = 0.0,
                  train_loss: Optional[Callable] = None,
                  client_execution: str = "vmap",
                  updates_sharding: Any = None) -> Callable:
  """Builds the (unjitted) pure round function.

  Args:
    apply_fn: flax ``apply`` of the model.
    params_template: example parameters (fixes the flattening).
    client_optimizer: optax optimizer of local training.
    server_optimizer: optax optimizer of the server.
    aggregator: an ``Aggregator`` (``update(updates, state, key=, mask=)``).
    num_clients: real number of clients ``C``; data may hold more rows
      (padding for sharding), which are dropped before the attack.
    max_examples: padded per-client length ``M``.
    batch_size: local minibatch size.
    local_epochs: local epochs (FedAvg).
    mode: ``"fedavg"`` or ``"fedsgd"``.
    attack: an :class:`~robustfl_jax.attacks.Attack` or an attack function
      ``attack(key, updates, byzantine_mask) -> updates``, or None.
    scorer: ``scorer(updates) -> bool[C]`` outliers to exclude, or None.
    client_momentum: ``beta`` in [0, 1); 0 disables client momentum.
    train_loss: the clients' local objective (see
      :data:`robustfl_jax.fl.local.TrainLoss`); cross-entropy when None.
    client_execution: ``"vmap"`` trains all clients as one batched
      computation; ``"map"`` runs them one after another inside the jitted
      round (``lax.map``). Same results; ``"map"`` is the fast choice for
      convolutional models on CPU, where per-client kernels turn vmapped
      convolutions into grouped ones that XLA's CPU backend runs slowly.
    updates_sharding: a ``jax.sharding.Sharding`` the ``[C, d]`` updates are
      constrained to before the attack and the aggregator (e.g.
      :func:`robustfl_jax.fl.sharding.params_sharding`, split along ``d``),
      or a :class:`robustfl_jax.fl.sharding.ChunkedResharding`: the updates
      stay client-split and the aggregator is traced under its column plan
      (resharded chunk by chunk); None leaves the placement to XLA.

  Returns:
    ``round_fn(state, data, key=None) -> (state, metrics)``; jit it (the
    client axis of ``data`` may be sharded over a mesh axis ``clients``).
    Without ``key`` the round uses :func:`round_key` of the state, computed
    inside the jitted function.

  Raises:
    ValueError: if ``client_momentum`` is outside [0, 1), or the attack's
      objective meets a ``train_loss``.
  """
  if client_execution not in CLIENT_EXECUTIONS:
    raise ValueError(f"client.execution must be one of {CLIENT_EXECUTIONS}; "
                     f"got {client_execution!r}.")
  if not 0.0 <= client_momentum < 1.0:
    raise ValueError(f"client.momentum must be in [0, 1); got "
                     f"{client_momentum}.")
  attack = as_attack(attack)
  local_train = make_client_training(
      apply_fn, client_optimizer, max_examples=max_examples,
      batch_size=batch_size, local_epochs=local_epochs, mode=mode,
      train_loss=train_loss, attack=attack)
  _, unravel = jax.flatten_util.ravel_pytree(params_template)

  def round_fn(state: ServerState, data: FederatedData,
               key: Optional[Array] = None):
    if key is None:
      key = round_key(state)
    train_key, attack_key, agg_key = jax.random.split(key, 3)
    num_rows = data.y.shape[0]
    client_keys = jax.vmap(lambda i: jax.random.fold_in(train_key, i))(
        jnp.arange(num_rows))
    if client_execution == "map":
      result = jax.lax.map(lambda a: local_train(state.params, *a),
                           (data.x, data.y, data.count, client_keys,
                            data.byzantine))
    else:
      result = jax.vmap(local_train, in_axes=(None, 0, 0, 0, 0, 0))(
          state.params, data.x, data.y, data.count, client_keys,
          data.byzantine)
    updates = result.delta[:num_clients]
    losses = result.loss[:num_clients]
    byzantine = data.byzantine[:num_clients]

    plan = contextlib.nullcontext()
    if isinstance(updates_sharding, sharding.ChunkedResharding):
      # The rule reshards the client-split updates chunk by chunk.
      plan = updates_sharding.plan()
    elif updates_sharding is not None:
      # Client-split -> parameter-split (an all-to-all): the attack and the
      # rule then run on [C, d / D] per device.
      updates = jax.lax.with_sharding_constraint(updates, updates_sharding)
    client_state = state.client_state
    if client_momentum > 0:
      updates = client_momentum * client_state + (1.0 - client_momentum) * updates
      client_state = updates

    # Behaviour-based rules (FLTrust, validation filters) and the adversaries
    # that evade them read the global parameters the updates are relative to;
    # distance rules and plain attacks ignore them.
    global_flat, _ = jax.flatten_util.ravel_pytree(state.params)
    if attack is not None:
      updates = attack(attack_key, updates, byzantine,
                       global_params=global_flat, round=state.round,
                       aggregator=aggregator)

    mask = None
    flagged = jnp.zeros((num_clients,), bool)
    if scorer is not None:
      outliers = scorer(updates)
      mask = ~outliers
      flagged = flagged | outliers
    with plan:
      aggregate, agg_state, info = aggregator.update(
          updates, state.aggregator_state, key=agg_key, mask=mask,
          global_params=global_flat, round=state.round)
    rejected = flagged | info["rejected"]
    flagged = rejected | excluded_rows(info)

    new_params, opt_state, aggregate, finite = apply_aggregate(
        server_optimizer, unravel, state.params, state.opt_state, aggregate)
    metrics = round_metrics(losses, byzantine, aggregate, finite, flagged,
                            rejected, info["num_nonfinite"])
    new_state = state.replace(params=new_params, opt_state=opt_state,
                              aggregator_state=agg_state,
                              client_state=client_state,
                              round=state.round + 1)
    return new_state, metrics

  return round_fn
