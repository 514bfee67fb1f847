"""The federated simulation: local training, the round, server state, metrics.

Everything here takes plain keyword arguments; building a run from a config
is :mod:`robustfl_jax.experiments`.
"""

from robustfl_jax.fl.async_protocol import (init_async_state,
                                            make_async_round_fn)
from robustfl_jax.fl.local import (MODES, OPTIMIZERS, LocalResult,
                                   make_local_train, make_optimizer,
                                   masked_cross_entropy)
from robustfl_jax.fl.metrics import (classification_metrics, detection_rates,
                                     make_eval_fn, targeted_metrics)
from robustfl_jax.fl.round import (CLIENT_EXECUTIONS, make_round_fn,
                                   round_key)
from robustfl_jax.fl.server import (FederatedData, ServerState,
                                    init_server_state, params_sha256)
