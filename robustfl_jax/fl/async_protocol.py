"""Romoa's asynchronous updating with lookahead steps (Algorithms 1 and 2).

Every client keeps its own local model ``theta^i`` across rounds (a flat
``f32[C, d]`` array in ``ServerState.client_state``, so checkpoints hold it).
One call of the round function is one *sync period* of ``tau`` lookahead
steps:

1. at lookahead step ``j = 1..tau`` every client trains locally from its own
   model (one vmapped ``local_train`` call: ``client.local_epochs`` epochs of
   minibatch SGD, or one FedSGD step) and uploads it; the server sees the
   updates ``theta^i_{t+j} - theta_bar_t`` relative to the last synced global
   model; Byzantine rows are replaced by the model-poisoning attack;
2. a lookahead rule (Romoa) is called at every step (``lookahead_step=j``,
   ``global_params=theta_bar_t``) and updates its sanitizing factors; other
   rules are called once, at the sync step ``j = tau``;
3. at the sync step the aggregate (a delta from ``theta_bar_t``) goes through
   the server optimizer (SGD with lr 1 gives ``theta_bar = sum_i F_i
   theta^i``), and every client moves towards it:
   ``theta^i <- theta^i - gamma (theta^i - theta_bar)``.

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

from robustfl_jax.fl.local import make_local_train
from robustfl_jax.fl.round import apply_aggregate, round_key, round_metrics
from robustfl_jax.fl.server import FederatedData, ServerState, init_server_state

Array = jax.Array


def check_async_params(tau: int, moving_rate: float) -> None:
  """Raises ``ValueError`` naming the config field for bad ``tau``/``gamma``."""
  if isinstance(tau, bool) or not isinstance(tau, int) or tau < 1:
    raise ValueError(f"romoa.tau must be an int >= 1 (lookahead steps per "
                     f"sync); got {tau!r}.")
  if not 0.0 < moving_rate <= 1.0:
    raise ValueError(f"romoa.gamma (the moving rate) must be in (0, 1]; got "
                     f"{moving_rate}.")


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
                        batch_size: int, tau: int = 4, moving_rate: float = 0.5,
                        lookahead: bool = True, local_epochs: int = 1,
                        mode: str = "fedavg",
                        attack: Optional[Callable] = None,
                        train_loss: Optional[Callable] = None,
                        byzantine_local_train: Optional[Callable] = None
                        ) -> Callable:
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
    moving_rate: ``gamma`` in (0, 1]; 1 resets every client to the global.
    lookahead: call the aggregator at every step (Romoa) or only at sync.
    local_epochs: local epochs per lookahead step (FedAvg mode).
    mode: ``"fedavg"`` or ``"fedsgd"``.
    attack: ``attack(key, updates, byzantine_mask) -> updates`` or None.
    train_loss: local objective ``(logits_fn, params, x, y, mask, key, aux)``;
      ``aux`` is the client's ``bool`` Byzantine flag (poisoned objectives
      such as TPA switch on it).
    byzantine_local_train: optional ``local_train(params, x, y, count, key)``
      used by the Byzantine clients instead (e.g. TPA's alternating
      minimisation); it is vmapped over all clients and selected by row.

  Returns:
    ``round_fn(state, data, key=None) -> (state, metrics)``; jit it.

  Raises:
    ValueError: bad ``tau`` or ``moving_rate`` (named by config field).
  """
  check_async_params(tau, moving_rate)
  local_train = make_local_train(apply_fn, client_optimizer,
                                 max_examples=max_examples,
                                 batch_size=batch_size,
                                 local_epochs=local_epochs, mode=mode,
                                 train_loss=train_loss)
  _, unravel = jax.flatten_util.ravel_pytree(params_template)
  C = num_clients

  def train_all(models, data, keys, byzantine):
    def one(model, x, y, count, k, flag):
      return local_train(unravel(model), x, y, count, k, flag)
    result = jax.vmap(one)(models, data.x[:C], data.y[:C], data.count[:C],
                           keys, byzantine)
    delta, loss = result.delta, result.loss
    if byzantine_local_train is not None:
      def bad(model, x, y, count, k):
        return byzantine_local_train(unravel(model), x, y, count, k)
      other = jax.vmap(bad)(models, data.x[:C], data.y[:C], data.count[:C],
                            keys)
      delta = jnp.where(byzantine[:, None], other.delta, delta)
      loss = jnp.where(byzantine, other.loss, loss)
    return delta.astype(jnp.float32), loss

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
      return attack(step_keys(j)[1], uploads, byzantine)

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

    flagged = info["rejected"]
    if "selected" in info:
      flagged = flagged | ~info["selected"]
    metrics = round_metrics(jnp.mean(losses, axis=0), byzantine, aggregate,
                            finite, flagged, info["num_nonfinite"])
    if "factor_mean" in info:
      metrics["factor_mean"] = info["factor_mean"]
    if "weights" in info:
      metrics["client_weights"] = info["weights"]
    new_state = state.replace(params=new_params, opt_state=opt_state,
                              aggregator_state=agg_state, client_state=models,
                              round=state.round + 1)
    return new_state, metrics

  return round_fn


# --------------------------------------------------------------------------
# Config wiring (called from robustfl_jax.fl.experiment).

PROTOCOLS = ("sync", "romoa_async")
TPA_ATTACKS = ("tpa", "tpa_am")


def moving_rate_from_config(config) -> float:
  """``romoa.gamma``, or the paper's default ``1/n`` when unset."""
  gamma = config.romoa.gamma
  return 1.0 / config.num_clients if gamma is None else float(gamma)


def validate_config(config) -> None:
  """Checks ``protocol``, ``romoa.*`` and the TPA fields; names the field.

  Configs made before these fields existed (no ``protocol``) are "sync".
  """
  protocol = config.get("protocol", "sync")
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r} is not known; choose one "
                     f"of {list(PROTOCOLS)}.")
  if protocol == "romoa_async":
    check_async_params(config.romoa.tau, moving_rate_from_config(config))
    # Settings of the synchronous round that Algorithm 1 has no place for:
    # refuse them rather than silently ignore them.
    if config.client.momentum:
      raise ValueError(f"client.momentum={config.client.momentum} is not "
                       "supported with protocol='romoa_async' (clients keep "
                       "their own models instead); set it to 0.")
    if config.scorer.name != "none":
      raise ValueError(f"scorer.name={config.scorer.name!r} is not supported "
                       "with protocol='romoa_async'; set it to 'none'.")
  if config.attack.name in TPA_ATTACKS:
    if protocol != "romoa_async":
      raise ValueError(f"attack.name={config.attack.name!r} (targeted model "
                       "poisoning trains a poisoned objective) needs "
                       "protocol='romoa_async'.")
    if not 0 <= int(config.attack.source) < 10 or not (
        0 <= int(config.attack.target) < 10) or (
            config.attack.source == config.attack.target):
      raise ValueError("attack.source and attack.target must be distinct "
                       f"labels; got {config.attack.source} and "
                       f"{config.attack.target}.")
    if int(config.attack.aux_size) < 1:
      raise ValueError(f"attack.aux_size must be >= 1; got "
                       f"{config.attack.aux_size}.")
    if not config.attack.rho > 0:
      raise ValueError(f"attack.rho must be > 0; got {config.attack.rho}.")
  if config.aggregator.name == "romoa":
    build_romoa(config, None)


def build_romoa(config, params=None):
  """Romoa from ``config.romoa`` (layers from ``params`` when given)."""
  from robustfl_jax.aggregators import romoa as romoa_lib  # pylint: disable=import-outside-toplevel
  try:
    return romoa_lib.romoa(
        params, num_clients=int(config.num_clients),
        selection_fraction=config.romoa.selection_fraction,
        beta=float(config.romoa.beta), pearson=config.romoa.pearson)
  except ValueError as e:
    raise ValueError(f"aggregator.name='romoa' cannot work: {e}") from e


def round_from_config(config, *, model, params, dataset, client_data,
                      aggregator, client_optimizer, server_optimizer,
                      model_attack):
  """``(round_fn, init_state_fn)`` of the asynchronous protocol for a config.

  TPA (``attack.name`` ``tpa`` / ``tpa_am``) is built here: the poisoned
  objective with the auxiliary set of ``attack.aux_size`` source samples,
  boosted by ``attack.boost`` (default ``num_clients``), optionally mixed
  by the stealth factor ``attack.stealth``.
  """
  from robustfl_jax import attacks as attacks_lib  # pylint: disable=import-outside-toplevel
  from robustfl_jax.attacks import _targeted  # pylint: disable=import-outside-toplevel
  n = int(config.num_clients)
  gamma = moving_rate_from_config(config)
  train_loss = None
  byz_train = None
  attack = model_attack
  name = config.attack.name
  boost_factor = float(n if config.attack.boost is None else config.attack.boost)
  if name in TPA_ATTACKS:
    x_aux = _targeted.auxiliary_set(dataset.x_train, dataset.y_train,
                                    int(config.attack.source),
                                    int(config.attack.aux_size), config.seed)
    target = int(config.attack.target)
    if name == "tpa":
      train_loss = _targeted.targeted_objective(
          x_aux, target, benign_weight=float(config.attack.benign_weight))
      attack = lambda k, u, m: _targeted.boost(k, u, m, boost_factor)
    else:
      def factory(loss, max_examples, batch_size, local_epochs):
        return make_local_train(
            model.apply, client_optimizer,
            max_examples=max_examples or client_data.max_examples,
            batch_size=batch_size or config.client.batch_size,
            local_epochs=local_epochs or config.client.local_epochs,
            mode=config.client.mode, train_loss=loss)
      byz_train = _targeted.make_alternating_minimization(
          factory, x_aux=x_aux, target=target, boost_factor=boost_factor,
          rho=float(config.attack.rho), epochs=int(config.client.local_epochs))
      attack = None
    if config.attack.stealth is not None and attack is not None:
      attack = attacks_lib.stealth(attack, float(config.attack.stealth))
  round_fn = make_async_round_fn(
      model.apply, params, client_optimizer=client_optimizer,
      server_optimizer=server_optimizer, aggregator=aggregator,
      num_clients=n, max_examples=client_data.max_examples,
      batch_size=config.client.batch_size, tau=int(config.romoa.tau),
      moving_rate=gamma, lookahead=config.aggregator.name == "romoa",
      local_epochs=config.client.local_epochs, mode=config.client.mode,
      attack=attack, train_loss=train_loss, byzantine_local_train=byz_train)

  def init_state(key):
    return init_async_state(params, server_optimizer, aggregator, n, key)

  return round_fn, init_state
