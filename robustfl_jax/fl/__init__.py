"""The federated simulation: local training, the round, server state, metrics.

Config-driven runs live in submodules that import more (orbax, matplotlib):
``robustfl_jax.fl.config.default_config()``,
``robustfl_jax.fl.experiment.build_experiment(config)`` and
``robustfl_jax.fl.runner.train(config, workdir)``.
"""

from robustfl_jax.fl.data_poisoning import (DATA_ATTACKS, DataPoisoning,
                                            add_trigger, backdoor, label_flip,
                                            poison_clients, targeted_label_flip)
from robustfl_jax.fl.local import (MODES, OPTIMIZERS, LocalResult,
                                   make_local_train, make_optimizer,
                                   masked_cross_entropy)
from robustfl_jax.fl.metrics import (classification_metrics, detection_rates,
                                     make_eval_fn, targeted_metrics)
from robustfl_jax.fl.round import make_round_fn, round_key
from robustfl_jax.fl.server import (FederatedData, ServerState,
                                    init_server_state, params_sha256)
