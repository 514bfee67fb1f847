"""The experiment config: its schema, and loading a config file.

Every ``configs/*.py`` starts from :func:`default_config` and overrides
fields. The fields a run reads (rounds, clients, optimizers, ...) are written
out below; the hyper-parameters of the parts chosen by name are not: each
registered part (aggregation rule, pre-aggregator, defense, attack, model,
data set) declares them in its signature, and :func:`default_config` adds one
field per hyper-parameter name to the part's section (``aggregator``,
``attack``, ``model``, ``data``, or the section a part names, ``romoa`` for
Romoa). A field whose parts agree on a default gets it; otherwise it is a
placeholder (None: each part keeps its own default). Adding a part with a
new hyper-parameter therefore adds its config field too, and a misspelled
override still fails (configs are locked).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import os
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import ml_collections
from ml_collections import config_dict

from robustfl_jax import aggregators
from robustfl_jax import attacks
from robustfl_jax import data as data_lib
from robustfl_jax import defenses
from robustfl_jax import models as models_lib
from robustfl_jax.registry import Registry, hparam_type

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), "configs")

# Hyper-parameter names that are general fields of their section already.
_GENERAL = {"attack": ("num_byzantine",), "aggregator": ("num_byzantine",)}


def _registered(registry: Registry, skip: Iterable[str] = (),
                section_of=None, configurable=None):
  """``[(section, hparam, part name, target, Parameter)]`` of a registry."""
  out = []
  for name in registry.names(include_aliases=False):
    entry = registry.entry(name)
    if configurable is not None and not configurable(entry):
      continue
    section = section_of(entry) if section_of else None
    excluded = entry.meta.get("exclude", ())
    for hp, param in registry.hparams(name).items():
      if hp not in skip and hp not in excluded:
        out.append((section, hp, name, entry.target, param))
  return out


def part_hparams() -> dict[str, dict[str, list]]:
  """``{section: {hparam: [(part, target, Parameter), ...]}}`` of every part."""
  rows = []
  rows += _registered(aggregators.RULES,
                      section_of=lambda e: e.meta.get("section", "aggregator"))
  rows += _registered(aggregators.PRE_AGGREGATORS,
                      section_of=lambda e: "aggregator")
  rows += _registered(defenses.DEFENSES, section_of=lambda e: "aggregator")
  rows += _registered(attacks.ATTACKS, section_of=lambda e: "attack",
                      configurable=lambda e: e.meta.get("configurable", True))
  rows += _registered(models_lib.MODELS, section_of=lambda e: "model")
  rows += _registered(data_lib.DATA_SETS, section_of=lambda e: "data")
  out: dict[str, dict[str, list]] = {}
  for section, hp, name, target, param in rows:
    if hp in _GENERAL.get(section, ()):
      continue
    out.setdefault(section, {}).setdefault(hp, []).append((name, target, param))
  return out


def _field(section: str, hp: str, declared: list) -> Any:
  """One config field for a hyper-parameter that several parts may share."""
  types = set()
  for name, target, param in declared:
    t = hparam_type(target, param)
    if t is not None:
      types.add(t)
  if types == {int, float}:
    types = {float}
  if len(types) != 1:
    parts = ", ".join(f"{name} ({hparam_type(t, p)})" for name, t, p in declared)
    raise ValueError(
        f"config field {section}.{hp} is declared with "
        f"{'no type' if not types else 'different types'} by {parts}; give "
        "the parameter a type annotation or another name.")
  kind = types.pop()
  defaults = {repr(p.default) for _, _, p in declared}
  first = declared[0][2].default
  if (len(defaults) == 1 and first is not inspect.Parameter.empty
      and first is not None):
    return tuple(first) if kind is tuple else kind(first)
  return config_dict.placeholder(kind)


def _add_part_fields(config: ml_collections.ConfigDict) -> None:
  for section, fields in part_hparams().items():
    if section not in config:
      config[section] = ml_collections.ConfigDict()
    for hp, declared in sorted(fields.items()):
      if hp in config[section]:
        continue  # a general field of the section
      config[section][hp] = _field(section, hp, declared)


def default_config() -> ml_collections.ConfigDict:
  """Digits, 10 IID clients, an MLP, FedAvg, no attack (unlocked)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_rounds = 40
  config.num_clients = 10
  config.eval_every = 5
  config.checkpoint_every = 10
  # Shard the client axis over all local devices (a no-op on one device).
  config.shard_clients = True

  config.data = ml_collections.ConfigDict()
  config.data.name = "digits"
  config.data.dir = ""
  config.data.partition = "iid"
  config.data.alpha = 0.5
  config.data.classes_per_client = 2

  config.model = ml_collections.ConfigDict()
  config.model.name = "mlp"

  config.client = ml_collections.ConfigDict()
  config.client.mode = "fedavg"
  config.client.optimizer = "sgd"
  config.client.learning_rate = 0.1
  config.client.local_epochs = 1
  config.client.batch_size = 32
  # Client (worker) momentum across rounds, Karimireddy et al. 2021; 0 = off.
  config.client.momentum = 0.0
  # How clients run inside the jitted round: "vmap" (one batched computation),
  # "map" (one after another), or "auto": "map" for convolutional models on a
  # single CPU device (vmapped per-client convolutions are slow there), else
  # "vmap".
  config.client.execution = "auto"
  # Local adversarial / noise training (robustfl_jax.adversarial.training):
  # method none | pgd (Madry) | mix (0.5 clean + 0.5 PGD) | trades | gaussian.
  config.client.adversarial_training = ml_collections.ConfigDict()
  config.client.adversarial_training.method = "none"
  config.client.adversarial_training.epsilon = 0.1
  # None: 2.5 * epsilon / steps (Madry et al.).
  config.client.adversarial_training.step_size = config_dict.placeholder(float)
  config.client.adversarial_training.steps = 10
  config.client.adversarial_training.beta = 6.0  # TRADES trade-off
  config.client.adversarial_training.norm = "linf"  # or "l2"
  config.client.adversarial_training.sigma = 0.25  # Gaussian noise (smoothing)

  config.attack = ml_collections.ConfigDict()
  config.attack.name = "none"
  config.attack.num_byzantine = 0
  config.attack.byzantine = "first"  # or "random" (a fixed set drawn by seed)
  # Romoa's stealth factor alpha in [0, 1]; None = no stealth mixing.
  config.attack.stealth = config_dict.placeholder(float)

  config.aggregator = ml_collections.ConfigDict()
  config.aggregator.name = "mean"
  # None: the rule gets attack.num_byzantine when it needs one.
  config.aggregator.num_byzantine = config_dict.placeholder(int)
  # Alternative to num_trim: floor(trim_fraction * num_clients), in (0, 0.5).
  config.aggregator.trim_fraction = config_dict.placeholder(float)
  # Names of pre-aggregators applied before the rule (nnm, bucketing, ...).
  config.aggregator.pre_aggregators = ()

  config.scorer = ml_collections.ConfigDict()
  config.scorer.name = "none"  # "zscore" or "robust_zscore"
  config.scorer.threshold = 3.0

  config.server = ml_collections.ConfigDict()
  config.server.optimizer = "sgd"
  config.server.learning_rate = 1.0
  config.server.momentum = 0.0

  # "sync" (fl/round.py) or "romoa_async" (fl/async_protocol.py: per-client
  # local models, tau lookahead steps per round, moving rate gamma).
  config.protocol = "sync"
  config.romoa = ml_collections.ConfigDict()
  config.romoa.tau = 4
  # gamma of Algorithm 1: "1" (FedAvg-style sync, default), "1/n" (ablation)
  # or a number in (0, 1] as a string. Not eq. 4's selection ratio, which is
  # the rule's romoa.selection_fraction (None: 1/n).
  config.romoa.moving_rate = "1"
  # A lookahead step is one local epoch ("epoch") or one minibatch SGD step.
  config.romoa.lookahead_unit = "epoch"

  # Adversarial evaluation: with attack_epsilon set, summary.json adds
  # clean_accuracy and robust_accuracy under PGD-<attack_steps>.
  config.eval = ml_collections.ConfigDict()
  config.eval.attack_epsilon = config_dict.placeholder(float)
  config.eval.attack_steps = 20
  config.eval.attack_step_size = config_dict.placeholder(float)
  config.eval.attack_norm = "linf"

  _add_part_fields(config)
  return config


def resolve_config_path(path: str) -> str:
  """``path`` as given, else relative to the repository's ``configs/``.

  Raises:
    FileNotFoundError: neither exists (the message names both places).
  """
  candidates = [path]
  if not os.path.isabs(path):
    candidates.append(os.path.join(CONFIGS_DIR, path))
    if path.startswith("configs" + os.sep):
      candidates.append(os.path.join(CONFIGS_DIR, path[len("configs") + 1:]))
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(f"config file {path!r} not found (looked in the "
                          f"current directory and in {CONFIGS_DIR}).")


def _load_module(path: str):
  name = "robustfl_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def parse_override(text: str) -> tuple[str, Any]:
  """``"a.b=value"`` -> ``("a.b", "value")`` (the value parsed later, by
  the type of the field it sets)."""
  if "=" not in text:
    raise ValueError(f"override {text!r} must look like field.path=value.")
  key, raw = text.split("=", 1)
  return key.strip(), raw


def _typed(raw: str, kind: Optional[type]) -> Any:
  """A command-line string as the field's type: strings stay strings, tuples
  take ``(a, b)`` or ``a,b``, the rest is a Python literal."""
  if kind is str:
    return raw
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  if kind is tuple and not isinstance(value, (tuple, list)):
    value = tuple(v.strip() for v in raw.split(",") if v.strip())
  if kind is bool and isinstance(value, str) and value.lower() in (
      "true", "false"):
    value = value.lower() == "true"
  return value


def parse_assignments(text: str, where: str) -> list[tuple[str, Any]]:
  """``"a=1;b=x"`` -> ``[("a", 1), ("b", "x")]``.

  The settings a grid entry or a table variant carries: values are Python
  literals where they parse (``1``, ``0.5``, ``(1, 2)``) and strings
  otherwise (``1/n``, ``blades``).

  Raises:
    ValueError: an item without ``field=``; the message starts with ``where``.
  """
  out = []
  for item in filter(None, (i.strip() for i in str(text).split(";"))):
    field, eq, raw = item.partition("=")
    if not eq or not field.strip():
      raise ValueError(f"{where}: {item!r} is not field=value.")
    out.append((field.strip(), _typed(raw.strip(), None)))
  return out


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Union[Mapping[str, Any], Sequence[str]] = ()
                    ) -> ml_collections.ConfigDict:
  """Sets dotted fields of ``config`` in place and returns it.

  Raises:
    ValueError: a field that does not exist (configs are locked) or a value
      of the wrong type; the message names the field.
  """
  items = (overrides.items() if isinstance(overrides, Mapping)
           else (parse_override(o) for o in overrides))
  for key, value in items:
    from_text = not isinstance(overrides, Mapping)
    *path, leaf = key.split(".")
    node = config
    for part in path:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise ValueError(f"config field {key!r} does not exist.")
      node = node[part]
    if leaf not in node:
      close = difflib.get_close_matches(leaf, list(node.keys()), n=1)
      hint = (f"did you mean {'.'.join(path + close)!r}?" if close else
              f"{'.'.join(path) or 'the config'} has {sorted(node.keys())}.")
      raise ValueError(f"config field {key!r} does not exist; {hint}")
    kind = node.get_type(leaf)
    if from_text:
      value = _typed(value, kind)
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise ValueError(f"config field {key!r} cannot be set to {value!r}: its "
                       f"type is {getattr(kind, '__name__', kind)}.") from e
  return config


def load_config(path: str,
                overrides: Union[Mapping[str, Any], Sequence[str]] = (),
                lock: bool = True) -> ml_collections.ConfigDict:
  """Loads ``get_config()`` of a config file and applies ``overrides``.

  What ``--config=configs/X.py --config.a.b=v`` does on the command line,
  for notebooks and code.

  Args:
    path: the file; found as given, else in the repository's ``configs/``
      (``load_config("digits_fedavg.py")`` works from any directory of a
      source checkout).
    overrides: ``{"num_rounds": 5}`` or ``["num_rounds=5",
      "aggregator.name=krum"]``.
    lock: lock the config (a misspelled field then fails).

  Returns:
    The config.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file has no ``get_config``, or a bad override.
  """
  path = resolve_config_path(path)
  module = _load_module(path)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} defines no get_config().")
  config = module.get_config()
  if lock:
    config.lock()
  return apply_overrides(config, overrides)


def hparams_of(section: ml_collections.ConfigDict,
               accepted: Iterable[str]) -> dict[str, Any]:
  """The set (non-None) fields of ``section`` among ``accepted`` names."""
  out = {}
  for key in accepted:
    if key in section and section[key] is not None:
      value = section[key]
      out[key] = tuple(value) if isinstance(value, list) else value
  return out


def section_of_rule(name: str) -> str:
  """The config section that holds the hyper-parameters of rule ``name``."""
  if name in aggregators.RULES:
    return aggregators.RULES.entry(name).meta.get("section", "aggregator")
  return "aggregator"


def optional(value: Any, default: Any) -> Any:
  """``default`` when ``value`` is None."""
  return default if value is None else value


__all__ = ["CONFIGS_DIR", "apply_overrides", "default_config", "hparams_of",
           "load_config", "optional", "parse_override", "part_hparams",
           "resolve_config_path", "section_of_rule"]
