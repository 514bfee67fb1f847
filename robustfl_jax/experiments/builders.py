"""From a config to the pure pieces of a run: data, model, rule, attack, round.

Each builder reads its config sections and calls the library with plain
keyword arguments; the parts chosen by name come from their registries
(:mod:`robustfl_jax.registry`), which also say which hyper-parameters each
part takes. :func:`validate_config` fails before anything is built with a
sentence that names the config field at fault; :func:`build_experiment`
returns an :class:`Experiment` whose ``round_fn`` and ``eval_fn`` are jitted.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robustfl_jax import aggregators
from robustfl_jax import attacks
from robustfl_jax import data as data_lib
from robustfl_jax import defenses
from robustfl_jax import models as models_lib
from robustfl_jax import scoring
from robustfl_jax.experiments import adversarial as adversarial_hooks
from robustfl_jax.experiments import protocols
from robustfl_jax.experiments.config import hparams_of, section_of_rule
from robustfl_jax.fl import sharding
from robustfl_jax.fl.local import MODES, OPTIMIZERS, make_optimizer
from robustfl_jax.fl.metrics import make_eval_fn
from robustfl_jax.fl.round import CLIENT_EXECUTIONS
from robustfl_jax.fl.server import FederatedData, ServerState

BYZANTINE_SELECTIONS = ("first", "random")


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
    aggregator: the server's ``Aggregator``.
    attack: the :class:`~robustfl_jax.attacks.Attack` (None without one).
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
  aggregator: Any = None
  attack: Any = None


def check_choice(field: str, value: Any, choices) -> None:
  """Raises ``ValueError`` naming ``field`` unless ``value`` is a choice."""
  if value not in choices:
    raise ValueError(f"{field}={value!r} is not known; choose one of "
                     f"{sorted(choices)}.")


def name_fields(message: str, section: str, names) -> str:
  """``"radius=0 must be > 0"`` -> ``"aggregator.radius=0 must be > 0"``.

  Parts name their hyper-parameters; a config user needs the field.
  """
  for name in sorted(names, key=len, reverse=True):
    message = re.sub(rf"(?<![\w.]){re.escape(name)}(?=\s*(=|must|needs))",
                     f"{section}.{name}", message)
  return message


def _reraise(field: str, error: ValueError, section: str = "",
             names=()) -> ValueError:
  text = name_fields(str(error), section, names) if section else str(error)
  return ValueError(f"{field} cannot work: {text}")


# --------------------------------------------------------------------------
# Names.


def aggregator_names() -> list[str]:
  """Every ``aggregator.name``: the registered rules and defenses."""
  return sorted(set(aggregators.names()) | set(defenses.names()))


def attack_names() -> list[str]:
  """Every ``attack.name``: the registered (configurable) attacks and none."""
  return sorted(attacks.names(configurable_only=True)) + ["none"]


def is_defense(config: ml_collections.ConfigDict) -> bool:
  return config.aggregator.name in defenses.DEFENSES


# --------------------------------------------------------------------------
# Aggregator.


def aggregator_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The hyper-parameters of ``aggregator.name`` from its config section.

  Set fields the rule takes, except that a rule needing ``num_byzantine``
  gets ``attack.num_byzantine`` when ``aggregator.num_byzantine`` is unset,
  and ``num_trim`` comes from ``aggregator.trim_fraction`` or, failing that,
  ``attack.num_byzantine``. Fields the rule does not take are ignored, so
  that one config can sweep rules (misspelled fields fail earlier: configs
  are locked).

  Raises:
    ValueError: ``trim_fraction`` outside (0, 0.5).
  """
  name = config.aggregator.name
  registry = (defenses.DEFENSES if name in defenses.DEFENSES
              else aggregators.RULES)
  accepted = registry.hparams(name)
  hp = hparams_of(config[section_of_rule(name)], accepted)
  if "num_byzantine" in accepted and config.aggregator.num_byzantine is not None:
    hp["num_byzantine"] = int(config.aggregator.num_byzantine)
  trim_fraction = config.aggregator.trim_fraction
  if trim_fraction is not None and not 0.0 < trim_fraction < 0.5:
    raise ValueError(f"aggregator.trim_fraction={trim_fraction} must be in "
                     "(0, 0.5): a trimmed mean removes that fraction from each "
                     "end.")
  if "num_byzantine" in accepted and "num_byzantine" not in hp:
    hp["num_byzantine"] = int(config.attack.num_byzantine)
  if "num_trim" in accepted and "num_trim" not in hp:
    hp["num_trim"] = (int(math.floor(trim_fraction * config.num_clients))
                      if trim_fraction is not None
                      else int(config.attack.num_byzantine))
  return hp


def pre_aggregator_specs(config: ml_collections.ConfigDict
                         ) -> tuple[tuple[str, dict], ...]:
  """``(name, hparams)`` of each of ``aggregator.pre_aggregators``."""
  specs = []
  for pre in tuple(config.aggregator.pre_aggregators):
    check_choice("aggregator.pre_aggregators", pre,
                 aggregators.pre_aggregator_names())
    accepted = aggregators.PRE_AGGREGATORS.hparams(pre)
    hp = hparams_of(config.aggregator, accepted)
    if "num_byzantine" in accepted and "num_byzantine" not in hp:
      hp["num_byzantine"] = int(config.attack.num_byzantine)
    missing = [k for k, p in accepted.items() if k not in hp
               and p.default is p.empty]
    if missing:
      raise ValueError(f"aggregator.pre_aggregators: {pre} needs "
                       + ", ".join(f"aggregator.{k}" for k in missing) + ".")
    specs.append((pre, hp))
  return tuple(specs)


def _nb_error(config, hp, error: ValueError) -> ValueError:
  """The rule's error, naming the field its hyper-parameter came from."""
  name, n = config.aggregator.name, config.num_clients
  if "num_byzantine" in hp:
    source = ("aggregator.num_byzantine"
              if config.aggregator.num_byzantine is not None
              else "attack.num_byzantine (used as aggregator.num_byzantine)")
    return ValueError(f"{source}={hp['num_byzantine']} is too large for {name} "
                      f"with num_clients={n}: {error}")
  if "num_trim" in hp:
    return ValueError(f"aggregator.num_trim={hp['num_trim']} is invalid for "
                      f"{name} with num_clients={n}: {error}")
  section = section_of_rule(name)
  return ValueError(f"aggregator.name={name!r} with hyper-parameters {hp} and "
                    f"num_clients={n} cannot work: "
                    f"{name_fields(str(error), section, hp)}")


def build_aggregator(config: ml_collections.ConfigDict, params: Any = None):
  """The rule ``aggregator.name`` (not a defense), with errors naming fields."""
  name = config.aggregator.name
  check_choice("aggregator.name", name, aggregator_names())
  if is_defense(config):
    raise ValueError(f"aggregator.name={name!r} is a defense: build it with "
                     "build_defense (it needs the model and data).")
  hp = aggregator_hparams(config)
  pres = pre_aggregator_specs(config)
  try:
    return aggregators.get(name, pre_aggregators=pres,
                           num_clients=config.num_clients, params=params, **hp)
  except ValueError as e:
    raise _nb_error(config, hp, e) from e


def _client_settings(config: ml_collections.ConfigDict) -> dict:
  return dict(client_optimizer=make_optimizer(config.client.optimizer,
                                              config.client.learning_rate),
              batch_size=int(config.client.batch_size),
              local_epochs=int(config.client.local_epochs),
              mode=config.client.mode)


def build_defense(config: ml_collections.ConfigDict, *, model: Any,
                  params: Any, dataset: Any) -> defenses.Defense:
  """The defense ``aggregator.name`` with the model, data and client settings."""
  name = config.aggregator.name
  if tuple(config.aggregator.pre_aggregators):
    raise ValueError(f"aggregator.pre_aggregators="
                     f"{tuple(config.aggregator.pre_aggregators)} cannot be "
                     f"combined with {name}.")
  context = dict(num_clients=config.num_clients, params=params,
                 apply_fn=model.apply, dataset=dataset, seed=int(config.seed),
                 **_client_settings(config))
  try:
    return defenses.DEFENSES.build(name, aggregator_hparams(config), context)
  except ValueError as e:
    raise _reraise(f"aggregator.name={name!r}", e, "aggregator",
                   defenses.DEFENSES.hparams(name)) from e


def build_server_rule(config: ml_collections.ConfigDict, *, model: Any,
                      params: Any, dataset: Any):
  """``(aggregator, probe or None)`` for ``aggregator.name``."""
  if is_defense(config):
    defense = build_defense(config, model=model, params=params,
                            dataset=dataset)
    return defense.aggregator, defense.probe
  return build_aggregator(config, params=params), None


def check_aggregator(config: ml_collections.ConfigDict) -> None:
  """Validates ``aggregator.*`` without building anything expensive."""
  name = config.aggregator.name
  check_choice("aggregator.name", name, aggregator_names())
  if is_defense(config):
    if tuple(config.aggregator.pre_aggregators):
      raise ValueError(f"aggregator.pre_aggregators="
                       f"{tuple(config.aggregator.pre_aggregators)} cannot be "
                       f"combined with {name}.")
    try:
      defenses.DEFENSES.check(name, aggregator_hparams(config))
    except ValueError as e:
      raise _reraise(f"aggregator.name={name!r}", e, "aggregator",
                     defenses.DEFENSES.hparams(name)) from e
  else:
    build_aggregator(config)


# --------------------------------------------------------------------------
# Attack.


def attack_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The set ``attack.*`` fields that attack ``attack.name`` takes;
  ``num_byzantine`` is ``attack.num_byzantine``."""
  accepted = attacks.hparams(config.attack.name)
  hp = hparams_of(config.attack, accepted)
  if "num_byzantine" in attacks.ATTACKS.hparams(config.attack.name):
    hp["num_byzantine"] = int(config.attack.num_byzantine)
  return hp


def _rule_context(config, aggregator, params) -> dict:
  """What an attack may know of the server's rule (the ``rule*`` context)."""
  context = {}
  # Behaviour-based defenses average what they keep: against them, gradient
  # adversaries differentiate through the mean.
  name = "mean" if is_defense(config) else config.aggregator.name
  context["rule_name"] = name
  context["rule_hparams"] = ({} if is_defense(config)
                             else aggregator_hparams(config))
  if aggregator is not None:
    d = int(sum(np.size(p) for p in jax.tree.leaves(params)))

    def rule(updates):
      state = aggregator.init(jnp.zeros((d,), updates.dtype))
      return aggregator.update(updates, state)[0]

    context["rule"] = rule
  return context


def build_attack(config: ml_collections.ConfigDict, *, model: Any = None,
                 params: Any = None, dataset: Any = None,
                 aggregator: Any = None, probe: Any = None
                 ) -> Optional[attacks.Attack]:
  """The :class:`~robustfl_jax.attacks.Attack` of ``attack.name`` (or None).

  The attack receives the context it declares: ``num_clients``, the model
  (``apply_fn``, ``params``), the ``dataset``, ``seed``, the server's rule
  (``rule`` as a function of the updates, ``rule_name``,
  ``rule_hparams``) and a defense's ``probe``; ``attack.stealth`` mixes its
  uploads with the honest ones.

  Raises:
    ValueError: naming the ``attack.*`` field that cannot work.
  """
  name = config.attack.name
  if name == "none":
    return None
  check_choice("attack.name", name, attack_names())
  context = dict(num_clients=int(config.num_clients), params=params,
                 dataset=dataset, seed=int(config.seed), probe=probe)
  if model is not None:
    context["apply_fn"] = model.apply
  declared = attacks.ATTACKS.context_names(name)
  if {"rule", "rule_name", "rule_hparams"} & set(declared):
    if "rule" in declared and aggregator is None and not is_defense(config):
      aggregator = build_aggregator(config, params=params)
    context.update(_rule_context(config, aggregator, params))
  context = {k: v for k, v in context.items() if v is not None}
  hp = attack_hparams(config)
  try:
    attack = attacks.get(name, **hp, **context)
    if config.attack.stealth is not None:
      attack = attacks.stealth(attack, float(config.attack.stealth))
  except ValueError as e:
    raise ValueError(f"attack.name={name!r} with {hp} cannot work: "
                     f"{name_fields(str(e), 'attack', hp)}") from e
  return attack


def check_attack(config: ml_collections.ConfigDict) -> None:
  """Validates ``attack.*`` without building the attack."""
  name = config.attack.name
  check_choice("attack.name", name, attack_names())
  check_choice("attack.byzantine", config.attack.byzantine,
               BYZANTINE_SELECTIONS)
  f = int(config.attack.num_byzantine)
  if not 0 <= f <= config.num_clients:
    raise ValueError(f"attack.num_byzantine={f} must be in [0, num_clients="
                     f"{config.num_clients}].")
  if name != "none" and f == 0:
    raise ValueError(f"attack.name={name!r} needs attack.num_byzantine >= 1.")
  if config.attack.stealth is not None and not 0.0 <= config.attack.stealth <= 1:
    raise ValueError(f"attack.stealth={config.attack.stealth} must be in "
                     "[0, 1].")
  if name == "none":
    return
  hp = attack_hparams(config)
  try:
    attacks.ATTACKS.check(name, hp)
  except ValueError as e:
    raise ValueError(f"attack.name={name!r} cannot work: "
                     f"{name_fields(str(e), 'attack', hp)}") from e


def byzantine_mask(config: ml_collections.ConfigDict) -> np.ndarray:
  """``bool[C]``: the first ``f`` clients, or ``f`` drawn with the seed."""
  n, f = config.num_clients, int(config.attack.num_byzantine)
  mask = np.zeros(n, bool)
  if config.attack.byzantine == "first":
    mask[:f] = True
  else:
    rng = np.random.default_rng([config.seed, 0xB12])
    mask[rng.choice(n, size=f, replace=False)] = True
  return mask


# --------------------------------------------------------------------------
# Data, model, scorer.


def build_dataset(config: ml_collections.ConfigDict) -> data_lib.Dataset:
  """The data set ``data.name`` (its files from ``data.dir``)."""
  accepted = data_lib.DATA_SETS.hparams(config.data.name)
  return data_lib.load(config.data.name, config.data.dir,
                       seed=int(config.seed),
                       **hparams_of(config.data, accepted))


def build_client_data(config: ml_collections.ConfigDict,
                      dataset: data_lib.Dataset, byzantine: np.ndarray,
                      attack: Optional[attacks.Attack] = None, *,
                      rows: Optional[range] = None) -> data_lib.ClientData:
  """The training data split over clients, poisoned by a data attack.

  Args:
    config: the experiment config.
    dataset: the loaded data set.
    byzantine: ``bool[C]`` Byzantine clients.
    attack: the attack (its ``poison_data``, if any, is applied).
    rows: only these client rows (a process's share in a multi-process run,
      see :func:`robustfl_jax.fl.sharding.local_client_rows`); rows at or past
      ``num_clients`` are empty padding clients. None: every client. Every
      row is padded to the largest client of all, so the shares fit together.
      A data-poisoning attack builds every client first (its random draws
      span all of them) and then keeps ``rows``.
  """
  if config.num_clients > len(dataset.y_train):
    raise ValueError(f"num_clients={config.num_clients} exceeds the "
                     f"{len(dataset.y_train)} training examples of "
                     f"{dataset.name}.")
  parts = data_lib.partition(
      config.data.partition, dataset.y_train, config.num_clients,
      seed=config.seed, alpha=config.data.alpha,
      classes_per_client=config.data.classes_per_client)
  poisons = attack is not None and attack.poison_data is not None
  if rows is not None and not poisons:
    # Only this process's clients are gathered (the index lists are small).
    mine = [parts[i] for i in rows if i < config.num_clients]
    longest = max(len(p) for p in parts)
    client_data = data_lib.to_client_data(dataset.x_train, dataset.y_train,
                                          mine, max_examples=longest)
    return sharding.take_rows(client_data, range(0, len(rows)))
  client_data = data_lib.to_client_data(dataset.x_train, dataset.y_train, parts)
  if poisons:
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0xDA7A)
    client_data = attack.poison_data(client_data, byzantine, key)
    client_data = data_lib.ClientData(*(np.asarray(a) for a in client_data))
  if rows is not None:
    client_data = sharding.take_rows(client_data, rows)
  return client_data


def build_model(config: ml_collections.ConfigDict, dataset: data_lib.Dataset):
  """``(model, params)``: ``model.name`` initialised with the seed."""
  accepted = models_lib.MODELS.hparams(config.model.name)
  model = models_lib.get(config.model.name, dataset.num_classes,
                         dataset.input_shape,
                         **hparams_of(config.model, accepted))
  init_key, _ = jax.random.split(jax.random.PRNGKey(config.seed))
  return model, models_lib.init_params(model, init_key, dataset.input_shape)


def build_scorer(config: ml_collections.ConfigDict) -> Optional[Callable]:
  """``updates -> bool[C]`` outliers, or None."""
  name = config.scorer.name
  if name == "none":
    return None
  fn = scoring.get(name)
  threshold = float(config.scorer.threshold)
  return lambda updates: fn(updates, threshold).is_outlier


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


# --------------------------------------------------------------------------
# Validation and the whole experiment.


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ValueError`` naming the field of a config that cannot work.

  Checks names (data, partition, model, optimizers, attack, aggregator,
  scorer, protocol), sizes (rounds, clients, batch, epochs), every part's
  hyper-parameters through its registry, ``num_byzantine`` against the
  number of clients and the rule, learning rates and momentum. Nothing
  expensive is built (no data loaded, no GAN trained).
  """
  for field in ("num_rounds", "num_clients", "eval_every", "checkpoint_every"):
    if int(config[field]) < 1:
      raise ValueError(f"{field} must be >= 1; got {config[field]}.")
  check_choice("data.name", config.data.name, data_lib.names())
  check_choice("data.partition", config.data.partition, data_lib.PARTITIONS)
  if config.data.partition == "dirichlet" and not config.data.alpha > 0:
    raise ValueError(f"data.alpha must be > 0 for the dirichlet partition; got "
                     f"{config.data.alpha}.")
  check_choice("model.name", config.model.name, models_lib.names())
  check_choice("client.mode", config.client.mode, MODES)
  check_choice("client.optimizer", config.client.optimizer, OPTIMIZERS)
  check_choice("client.execution", config.client.execution,
               ("auto", *CLIENT_EXECUTIONS))
  check_choice("server.optimizer", config.server.optimizer, OPTIMIZERS)
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
  check_attack(config)
  check_choice("scorer.name", config.scorer.name, ("none", *scoring.names()))
  if config.scorer.name != "none" and not config.scorer.threshold > 0:
    raise ValueError(f"scorer.threshold must be > 0; got "
                     f"{config.scorer.threshold}.")
  check_aggregator(config)
  adversarial_hooks.validate(config)
  protocols.validate(config)


def updates_sharding(config: ml_collections.ConfigDict, mesh: Any) -> Any:
  """Where the round places the ``[C, d]`` updates for ``aggregator.name``:
  split along ``d`` for the rules that shard (one column chunk at a time
  without pre-aggregators), else gathered with a ``RuntimeWarning`` (see
  :func:`robustfl_jax.fl.sharding.aggregation_sharding`).
  """
  name = config.aggregator.name
  if name in aggregators.RULES:
    name = aggregators.RULES.canonical(name)
  pres = tuple(config.aggregator.pre_aggregators)
  return sharding.aggregation_sharding(
      mesh, name, pres,
      warn=lambda line: warnings.warn(line, RuntimeWarning, stacklevel=3))


def build_experiment(config: ml_collections.ConfigDict,
                     mesh: Any = None) -> Experiment:
  """Validates ``config`` and builds the data, model, round and eval functions.

  Args:
    config: an experiment config (see
      :func:`robustfl_jax.experiments.default_config`).
    mesh: a ``jax.sharding.Mesh`` with axis ``clients``; None uses all local
      devices when ``config.shard_clients`` and more than one exists.

  Returns:
    An :class:`Experiment`.

  Raises:
    ValueError: the config cannot work (the message names the field).
    FileNotFoundError: the data set's files are missing.
  """
  validate_config(config)
  dataset = build_dataset(config)
  model, params = build_model(config, dataset)
  _, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
  aggregator, probe = build_server_rule(config, model=model, params=params,
                                        dataset=dataset)
  attack = build_attack(config, model=model, params=params, dataset=dataset,
                        aggregator=aggregator, probe=probe)
  byzantine = byzantine_mask(config)
  if mesh is None and config.shard_clients and jax.device_count() > 1:
    mesh = sharding.client_mesh()
  # Each process builds only the client rows its devices hold.
  rows = (None if mesh is None
          else sharding.local_client_rows(int(config.num_clients), mesh))
  client_data = build_client_data(config, dataset, byzantine, attack,
                                  rows=rows)
  round_fn, init_fn = protocols.build_round(
      config, model=model, params=params, aggregator=aggregator,
      attack=attack, scorer=build_scorer(config),
      train_loss=adversarial_hooks.train_loss(config),
      max_examples=client_data.max_examples,
      client_execution=client_execution(config, mesh),
      updates_sharding=updates_sharding(config, mesh))
  flags = byzantine if rows is None else sharding.rows_of(byzantine, rows)
  fed = FederatedData(client_data.x, client_data.y, client_data.count, flags)
  fed = sharding.federated_data_from_local(fed, int(config.num_clients), mesh)
  evaluation = {} if attack is None else dict(attack.evaluation)
  eval_fn = make_eval_fn(model.apply, dataset.x_test, dataset.y_test,
                         dataset.num_classes, **evaluation)

  def init_state() -> ServerState:
    # Fresh copies each call (the init functions copy): round_fn donates its
    # state, and an Experiment can start any number of runs.
    return sharding.replicate(init_fn(state_key), mesh)

  return Experiment(
      config=config, dataset=dataset, model=model, data=fed,
      byzantine=byzantine, init_state=init_state,
      round_fn=jax.jit(round_fn, donate_argnums=(0,),
                       out_shardings=sharding.replicated(mesh)),
      eval_fn=jax.jit(eval_fn, out_shardings=sharding.replicated(mesh)),
      num_params=models_lib.param_count(params), mesh=mesh,
      aggregator=aggregator, attack=attack)
