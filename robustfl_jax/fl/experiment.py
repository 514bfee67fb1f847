"""From a config to the pure pieces of a run: data, model, round and eval.

:func:`validate_config` fails before any training with a sentence that names
the config field at fault; :func:`build_experiment` returns an
:class:`Experiment` whose ``round_fn`` and ``eval_fn`` are jitted.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import ml_collections
import numpy as np

from robustfl_jax import data as data_lib
from robustfl_jax import models as models_lib
from robustfl_jax.fl import data_poisoning
from robustfl_jax.fl.local import MODES, OPTIMIZERS, make_optimizer
from robustfl_jax.fl.metrics import make_eval_fn
from robustfl_jax.fl import async_protocol
from robustfl_jax.fl.round import CLIENT_EXECUTIONS, make_round_fn
from robustfl_jax.fl.server import FederatedData, ServerState, init_server_state

SCORERS = ("none", "zscore", "robust_zscore")
BYZANTINE_SELECTIONS = ("first", "random")
# attack.* fields that are hyper-parameters of model-poisoning attacks.
_MODEL_ATTACK_FIELDS = ("factor", "std", "value", "boost", "z", "epsilon", "b",
                        "direction")
# aggregator.* fields that are rule hyper-parameters (besides num_byzantine).
# Attacks built against the configured aggregation rule itself.
_RULE_AWARE_ATTACKS = ("aggregator_aware", "gradient_attack", "distance_bounded")
# Behaviour-based defences built with the model and data (robustfl_jax.defenses).
_DEFENCES = ("fltrust", "gan_filter")
_AGGREGATOR_FIELDS = ("num_byzantine", "num_trim", "num_selected", "radius",
                      "num_iters", "max_iter")


class Experiment(NamedTuple):
  """Everything a training loop needs, built from one config.

  Attributes:
    config: the config it was built from.
    dataset: the loaded :class:`robustfl_jax.data.Dataset`.
    model: the flax module.
    data: client data as device arrays (possibly sharded, padded clients).
    byzantine: ``bool[C]`` host copy of the Byzantine set.
    init_state: ``() -> ServerState`` before round 0.
    round_fn: jitted ``(state, data, key) -> (state, metrics)``.
    eval_fn: jitted ``params -> metrics`` on the test set.
    num_params: number of model parameters.
    mesh: the device mesh (None when not sharded).
  """

  config: ml_collections.ConfigDict
  dataset: data_lib.Dataset
  model: Any
  data: FederatedData
  byzantine: np.ndarray
  init_state: Callable[[], ServerState]
  round_fn: Callable
  eval_fn: Callable
  num_params: int
  mesh: Any


def _aggregators():
  from robustfl_jax import aggregators  # pylint: disable=import-outside-toplevel
  return aggregators


def _attacks():
  from robustfl_jax import attacks  # pylint: disable=import-outside-toplevel
  return attacks


def attack_names() -> list[str]:
  """Model-poisoning names from :mod:`robustfl_jax.attacks` plus data ones."""
  attacks = _attacks()
  names = set(attacks.names()) if hasattr(attacks, "names") else set()
  names.discard("stealth")  # a wrapper: set attack.stealth instead
  names.add("distance_bounded")  # arXiv:2402.13700, against aggregator.name
  names.update(async_protocol.TPA_ATTACKS)  # targeted model poisoning
  return sorted(names) + list(data_poisoning.DATA_ATTACKS) + ["none"]


def _attack_params(name: str) -> set[str]:
  attacks = _attacks()
  fn = getattr(attacks, name, None)
  if fn is None:
    return set()
  params = list(inspect.signature(fn).parameters)
  return set(params[3:])  # after (key, updates, byzantine_mask)


def _rule_params(name: str) -> Optional[set[str]]:
  """Hyper-parameters the aggregator ``name`` accepts (None if unknown)."""
  try:
    return set(_aggregators().hparam_names(name))
  except ValueError:
    return None


def _check_choice(field: str, value: Any, choices) -> None:
  if value not in choices:
    raise ValueError(f"{field}={value!r} is not known; choose one of "
                     f"{sorted(choices)}.")


def aggregator_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The keyword arguments for ``aggregators.get(config.aggregator.name, ...)``.

  Unset (None) fields are left out, except that a rule needing
  ``num_byzantine`` gets ``attack.num_byzantine`` and ``num_trim`` comes from
  ``trim_fraction`` or, failing that, ``attack.num_byzantine``.

  Fields the rule does not take are ignored (one config can sweep rules).

  Raises:
    ValueError: ``trim_fraction`` is outside (0, 0.5).
  """
  name = config.aggregator.name
  accepted = _rule_params(name)
  n = config.num_clients
  hp: dict[str, Any] = {}
  trim_fraction = config.aggregator.trim_fraction
  if trim_fraction is not None and not 0.0 < trim_fraction < 0.5:
    raise ValueError(f"aggregator.trim_fraction={trim_fraction} must be in "
                     "(0, 0.5): a trimmed mean removes that fraction from each "
                     "end.")
  for field in _AGGREGATOR_FIELDS:
    value = config.aggregator[field]
    # Fields the rule does not take are ignored, so that one config can be
    # swept over rules (misspelled fields fail earlier: configs are locked).
    if value is not None and (accepted is None or field in accepted):
      hp[field] = value
  if accepted is not None:
    if "num_byzantine" in accepted and "num_byzantine" not in hp:
      hp["num_byzantine"] = int(config.attack.num_byzantine)
    if "num_trim" in accepted and "num_trim" not in hp:
      hp["num_trim"] = (int(math.floor(trim_fraction * n))
                        if trim_fraction is not None
                        else int(config.attack.num_byzantine))
  return hp


def build_aggregator(config: ml_collections.ConfigDict, params: Any = None):
  """``aggregators.get`` for the config, with errors naming the fields."""
  aggregators = _aggregators()
  name = config.aggregator.name
  _check_choice("aggregator.name", name, aggregators.names())
  if name == "romoa":  # Romoa's fields are config.romoa.*; layers from params.
    return async_protocol.build_romoa(config, params)
  hp = aggregator_hparams(config)
  pre = tuple(config.aggregator.pre_aggregators)
  if hasattr(aggregators, "pre_aggregator_names"):
    for p in pre:
      _check_choice("aggregator.pre_aggregators", p,
                    aggregators.pre_aggregator_names())
  try:
    return aggregators.get(name, pre_aggregators=pre,
                           num_clients=config.num_clients, **hp)
  except ValueError as e:
    if "num_byzantine" in hp:
      source = ("aggregator.num_byzantine"
                if config.aggregator.num_byzantine is not None
                else "attack.num_byzantine (used as aggregator.num_byzantine)")
      raise ValueError(
          f"{source}={hp['num_byzantine']} is too large for {name} with "
          f"num_clients={config.num_clients}: {e}") from e
    if "num_trim" in hp:
      raise ValueError(
          f"aggregator.num_trim={hp['num_trim']} is invalid for {name} with "
          f"num_clients={config.num_clients}: {e}") from e
    raise ValueError(f"aggregator.name={name!r} with hyper-parameters {hp} and "
                     f"num_clients={config.num_clients} cannot work: {e}") from e


def build_attack(config: ml_collections.ConfigDict):
  """Returns ``(model_attack or None, DataPoisoning or None)``."""
  name = config.attack.name
  if name == "none":
    return None, None
  if name in async_protocol.TPA_ATTACKS:  # built by fl/async_protocol.py
    return None, None
  if name in data_poisoning.DATA_ATTACKS:
    spec = data_poisoning.DataPoisoning(
        name=name, num_classes=10, source=int(config.attack.source),
        target=int(config.attack.target), fraction=float(config.attack.fraction),
        trigger_size=int(config.attack.trigger_size),
        trigger_value=float(config.attack.trigger_value))
    return None, spec
  attacks = _attacks()
  if name in _RULE_AWARE_ATTACKS:
    return _rule_aware_attack(config), None
  accepted = _attack_params(name)
  hp = {}
  for field in _MODEL_ATTACK_FIELDS:
    value = config.attack[field]
    # As for aggregators, fields the attack does not take are ignored.
    if value is not None and field in accepted:
      hp[field] = value
  if "num_byzantine" in accepted:
    hp["num_byzantine"] = int(config.attack.num_byzantine)
  try:
    attack = attacks.get(name, **hp)
    if config.attack.stealth is not None:
      attack = attacks.stealth(attack, float(config.attack.stealth))
  except ValueError as e:
    raise ValueError(f"attack.name={name!r} with {hp} cannot work: {e}") from e
  return attack, None


def _rule_aware_attack(config: ml_collections.ConfigDict):
  """``aggregator_aware`` / ``gradient_attack`` against the configured rule."""
  attacks = _attacks()
  if config.attack.name == "distance_bounded":
    try:
      attack = attacks.distance_bounded(config.aggregator.name,
                                        rule_hparams=aggregator_hparams(config))
    except ValueError as e:
      raise ValueError(f"attack.name='distance_bounded' cannot work: {e}") from e
    if config.attack.stealth is not None:
      attack = attacks.stealth(attack, float(config.attack.stealth))
    return attack
  aggregator = build_aggregator(config)

  def rule(updates):
    state = aggregator.init(jax.numpy.zeros(updates.shape[1], updates.dtype))
    return aggregator.update(updates, state)[0]

  hp = {}
  if config.attack.name == "aggregator_aware" and (
      config.attack.direction is not None):
    hp["direction"] = config.attack.direction
  attack = attacks.get(config.attack.name, rule=rule, **hp)
  if config.attack.stealth is not None:
    attack = attacks.stealth(attack, float(config.attack.stealth))
  return attack


def build_scorer(config: ml_collections.ConfigDict):
  """``updates -> bool[C]`` outliers, or None."""
  name = config.scorer.name
  if name == "none":
    return None
  from robustfl_jax import scoring  # pylint: disable=import-outside-toplevel
  fn = {"zscore": scoring.zscore_scores,
        "robust_zscore": scoring.robust_zscore_scores}[name]
  threshold = float(config.scorer.threshold)
  return lambda updates: fn(updates, threshold).is_outlier


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ValueError`` naming the field of a config that cannot work.

  Checks names (data, partition, model, optimizers, attack, aggregator,
  scorer), sizes (rounds, clients, batch, epochs), ``num_byzantine`` against
  the number of clients and the rule, learning rates and momentum.
  """
  for field in ("num_rounds", "num_clients", "eval_every", "checkpoint_every"):
    if int(config[field]) < 1:
      raise ValueError(f"{field} must be >= 1; got {config[field]}.")
  _check_choice("data.name", config.data.name, data_lib.DATASETS)
  _check_choice("data.partition", config.data.partition, data_lib.PARTITIONS)
  if config.data.partition == "dirichlet" and not config.data.alpha > 0:
    raise ValueError(f"data.alpha must be > 0 for the dirichlet partition; got "
                     f"{config.data.alpha}.")
  _check_choice("model.name", config.model.name, models_lib.MODELS)
  _check_choice("client.mode", config.client.mode, MODES)
  _check_choice("client.optimizer", config.client.optimizer, OPTIMIZERS)
  _check_choice("client.execution", config.client.execution,
                ("auto", *CLIENT_EXECUTIONS))
  _check_choice("server.optimizer", config.server.optimizer, OPTIMIZERS)
  for field in ("client.learning_rate", "server.learning_rate"):
    section, key = field.split(".")
    if not config[section][key] > 0:
      raise ValueError(f"{field} must be > 0; got {config[section][key]}.")
  if int(config.client.batch_size) < 1:
    raise ValueError(f"client.batch_size must be >= 1; got "
                     f"{config.client.batch_size}.")
  if config.client.mode == "fedavg" and int(config.client.local_epochs) < 1:
    raise ValueError(f"client.local_epochs must be >= 1; got "
                     f"{config.client.local_epochs}.")
  if not 0.0 <= config.client.momentum < 1.0:
    raise ValueError(f"client.momentum must be in [0, 1); got "
                     f"{config.client.momentum}.")
  _check_choice("attack.name", config.attack.name, attack_names())
  _check_choice("attack.byzantine", config.attack.byzantine,
                BYZANTINE_SELECTIONS)
  f = int(config.attack.num_byzantine)
  if not 0 <= f <= config.num_clients:
    raise ValueError(f"attack.num_byzantine={f} must be in [0, num_clients="
                     f"{config.num_clients}].")
  if config.attack.name != "none" and f == 0:
    raise ValueError(f"attack.name={config.attack.name!r} needs "
                     "attack.num_byzantine >= 1.")
  if config.attack.stealth is not None and not 0.0 <= config.attack.stealth <= 1:
    raise ValueError(f"attack.stealth={config.attack.stealth} must be in "
                     "[0, 1].")
  _check_choice("scorer.name", config.scorer.name, SCORERS)
  if config.scorer.name != "none" and not config.scorer.threshold > 0:
    raise ValueError(f"scorer.threshold must be > 0; got "
                     f"{config.scorer.threshold}.")
  _, spec = build_attack(config)
  if spec is not None:
    data_poisoning.validate(spec)
  if config.aggregator.name in _DEFENCES:
    from robustfl_jax import defenses  # pylint: disable=import-outside-toplevel
    defenses.validate_config(config)
  else:
    build_aggregator(config)
  from robustfl_jax.adversarial import training as adversarial_training  # pylint: disable=import-outside-toplevel
  adversarial_training.validate_config(config)
  async_protocol.validate_config(config)


def _byzantine_mask(config) -> np.ndarray:
  n, f = config.num_clients, int(config.attack.num_byzantine)
  mask = np.zeros(n, bool)
  if config.attack.byzantine == "first":
    mask[:f] = True
  else:
    rng = np.random.default_rng([config.seed, 0xB12])
    mask[rng.choice(n, size=f, replace=False)] = True
  return mask


def client_execution(config: ml_collections.ConfigDict, mesh: Any = None
                     ) -> str:
  """``"vmap"`` or ``"map"`` for ``config.client.execution`` (see the config).

  ``"auto"`` picks ``"map"`` for the convolutional models on a single CPU
  device (measured: a round of the Romoa MNIST CNN on digits with 10 clients
  ran 2.2x faster with ``lax.map`` than vmapped) and ``"vmap"`` otherwise.
  """
  choice = config.client.execution
  if choice != "auto":
    return choice
  single_cpu = jax.default_backend() == "cpu" and (
      mesh is None or mesh.devices.size == 1)
  return "map" if single_cpu and config.model.name != "mlp" else "vmap"


def build_experiment(config: ml_collections.ConfigDict,
                     mesh: Any = None) -> Experiment:
  """Validates ``config`` and builds the data, model, round and eval functions.

  Args:
    config: an experiment config (see :func:`robustfl_jax.fl.config.default_config`).
    mesh: a ``jax.sharding.Mesh`` with axis ``clients``; None uses all local
      devices when ``config.shard_clients`` and more than one exists.

  Returns:
    An :class:`Experiment`.

  Raises:
    ValueError: the config cannot work (the message names the field).
    FileNotFoundError: the data set's files are missing.
  """
  from robustfl_jax.fl import sharding  # pylint: disable=import-outside-toplevel
  from robustfl_jax.adversarial import training as adversarial_training  # pylint: disable=import-outside-toplevel
  validate_config(config)
  dataset = data_lib.load(config.data.name, config.data.dir)
  if config.num_clients > len(dataset.y_train):
    raise ValueError(f"num_clients={config.num_clients} exceeds the "
                     f"{len(dataset.y_train)} training examples of "
                     f"{dataset.name}.")
  parts = data_lib.partition(
      config.data.partition, dataset.y_train, config.num_clients,
      seed=config.seed, alpha=config.data.alpha,
      classes_per_client=config.data.classes_per_client)
  client_data = data_lib.to_client_data(dataset.x_train, dataset.y_train, parts)
  byzantine = _byzantine_mask(config)
  model_attack, poisoning = build_attack(config)
  if poisoning is not None:
    poisoning = poisoning._replace(num_classes=dataset.num_classes)
    client_data = data_poisoning.poison_clients(
        client_data, byzantine, poisoning,
        jax.random.fold_in(jax.random.PRNGKey(config.seed), 0xDA7A))
    client_data = data_lib.ClientData(*(np.asarray(a) for a in client_data))

  model = models_lib.get(config.model.name, dataset.num_classes,
                         dataset.input_shape, hidden=tuple(config.model.hidden))
  init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
  params = models_lib.init_params(model, init_key, dataset.input_shape)
  if config.aggregator.name in _DEFENCES:
    from robustfl_jax import defenses  # pylint: disable=import-outside-toplevel
    aggregator = defenses.from_config(config, model=model, params=params,
                                      dataset=dataset)
  else:
    aggregator = build_aggregator(config, params=params)
  client_opt = make_optimizer(config.client.optimizer,
                              config.client.learning_rate)
  server_opt = make_optimizer(config.server.optimizer,
                              config.server.learning_rate,
                              config.server.momentum)
  round_fn = make_round_fn(
      model.apply, params, client_optimizer=client_opt,
      server_optimizer=server_opt, aggregator=aggregator,
      num_clients=config.num_clients, max_examples=client_data.max_examples,
      batch_size=config.client.batch_size,
      local_epochs=config.client.local_epochs, mode=config.client.mode,
      attack=model_attack, scorer=build_scorer(config),
      client_momentum=config.client.momentum,
      train_loss=adversarial_training.train_loss_from_config(config),
      client_execution=client_execution(config, mesh))
  async_init = None
  if config.get("protocol", "sync") == "romoa_async":
    round_fn, async_init = async_protocol.round_from_config(
        config, model=model, params=params, dataset=dataset,
        client_data=client_data, aggregator=aggregator,
        client_optimizer=client_opt, server_optimizer=server_opt,
        model_attack=model_attack)

  if mesh is None and config.shard_clients and jax.device_count() > 1:
    mesh = sharding.client_mesh()
  fed = FederatedData(client_data.x, client_data.y, client_data.count,
                      byzantine)
  fed = sharding.shard_federated_data(fed, mesh)

  targeted = backdoor = None
  if config.attack.name in ("targeted_flip", *async_protocol.TPA_ATTACKS):
    targeted = (int(config.attack.source), int(config.attack.target))
  if config.attack.name == "backdoor":
    backdoor = (int(config.attack.target), int(config.attack.trigger_size),
                float(config.attack.trigger_value))
  eval_fn = make_eval_fn(model.apply, dataset.x_test, dataset.y_test,
                         dataset.num_classes, targeted=targeted,
                         backdoor=backdoor)

  def init_state() -> ServerState:
    # Fresh copies each call (init_server_state copies): round_fn donates its
    # state, and an Experiment can start any number of runs.
    if async_init is not None:
      state = async_init(state_key)
    else:
      state = init_server_state(params, server_opt, aggregator,
                                config.num_clients, state_key,
                                config.client.momentum)
    return sharding.replicate(state, mesh)

  return Experiment(
      config=config, dataset=dataset, model=model, data=fed,
      byzantine=byzantine, init_state=init_state,
      round_fn=jax.jit(round_fn, donate_argnums=(0,)), eval_fn=jax.jit(eval_fn),
      num_params=models_lib.param_count(params), mesh=mesh)
