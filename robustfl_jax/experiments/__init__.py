"""Experiments: the only code that reads a config.

A config (``configs/*.py``, an ``ml_collections.ConfigDict``) becomes a run
here: :mod:`.config` holds the schema (built from the registries of the
parts) and :func:`load_config`; :mod:`.builders` turns it into data, a model,
the server's rule, the attack and the jitted round; :mod:`.runner` trains
with checkpoints and writes the outputs; the grid runners (sweeps, the
conflict grid, Romoa's tables, certification, PatchCore) and
:mod:`.reporting` write tables, JSON and plots. Everything below this
package takes plain keyword arguments.

Example::

  from robustfl_jax import experiments
  config = experiments.load_config("digits_fedavg.py", {"num_rounds": 5})
  result = experiments.train(config, "runs/quick")
  result.summary["final_test_accuracy"], result.history[-1]
"""

from robustfl_jax.experiments.builders import (Experiment, aggregator_hparams,
                                               aggregator_names,
                                               attack_hparams, attack_names,
                                               build_aggregator, build_attack,
                                               build_client_data,
                                               build_dataset, build_defense,
                                               build_experiment, build_model,
                                               build_scorer, build_server_rule,
                                               byzantine_mask,
                                               client_execution,
                                               validate_config)
from robustfl_jax.experiments.config import (apply_overrides, default_config,
                                             load_config)
from robustfl_jax.experiments.runner import RunResult, train

__all__ = [
    "Experiment", "RunResult", "aggregator_hparams", "aggregator_names",
    "apply_overrides", "attack_hparams", "attack_names", "build_aggregator",
    "build_attack", "build_client_data", "build_dataset", "build_defense",
    "build_experiment", "build_model", "build_scorer", "build_server_rule",
    "byzantine_mask", "client_execution", "default_config", "load_config",
    "train", "validate_config",
]
