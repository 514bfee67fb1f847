"""The round of a config: the synchronous round or Romoa's asynchronous one.

``protocol = "sync"`` builds :func:`robustfl_jax.fl.make_round_fn`;
``protocol = "romoa_async"`` builds
:func:`robustfl_jax.fl.make_async_round_fn` (Romoa's Algorithm 1, ``tau``
lookahead steps per round, moving rate ``romoa.moving_rate``, lookahead step
``romoa.lookahead_unit``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import ml_collections

from robustfl_jax import aggregators
from robustfl_jax.fl.async_protocol import (check_async_params,
                                            init_async_state,
                                            make_async_round_fn)
from robustfl_jax.fl.local import make_optimizer
from robustfl_jax.fl.round import make_round_fn
from robustfl_jax.fl.server import init_server_state

PROTOCOLS = ("sync", "romoa_async")


MOVING_RATE_NAMES = ("1", "1/n")


def moving_rate(config: ml_collections.ConfigDict) -> float:
  """``romoa.moving_rate`` (gamma) as a number.

  ``"1"`` (default: clients take the global model, as FedAvg), ``"1/n"`` (the
  ablation with the selection ratio's value) or a number in (0, 1] written
  as a string (e.g. ``"0.5"``).

  Raises:
    ValueError: naming ``romoa.moving_rate``.
  """
  value = str(config.romoa.moving_rate).strip()
  if value == "1/n":
    return 1.0 / int(config.num_clients)
  try:
    return float(value)
  except ValueError:
    raise ValueError(f"romoa.moving_rate={value!r} must be one of "
                     f"{list(MOVING_RATE_NAMES)} or a number in (0, 1]."
                     ) from None


def takes_lookahead(rule: str) -> bool:
  """Whether the rule wants every lookahead step (registered so: Romoa)."""
  return (rule in aggregators.RULES
          and aggregators.RULES.entry(rule).meta.get("lookahead", False))


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks ``protocol`` and the ``romoa`` section; names the field.

  Settings of the synchronous round that Algorithm 1 has no place for
  (client momentum, a scorer) are refused rather than silently ignored.
  """
  protocol = config.protocol
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r} is not known; choose one of "
                     f"{list(PROTOCOLS)}.")
  if protocol != "romoa_async":
    return
  try:
    check_async_params(config.romoa.tau, moving_rate(config),
                       config.romoa.lookahead_unit)
  except ValueError as e:
    raise ValueError(f"romoa.{e}") from e
  if config.client.momentum:
    raise ValueError(f"client.momentum={config.client.momentum} is not "
                     "supported with protocol='romoa_async' (clients keep "
                     "their own models instead); set it to 0.")
  if config.scorer.name != "none":
    raise ValueError(f"scorer.name={config.scorer.name!r} is not supported "
                     "with protocol='romoa_async'; set it to 'none'.")


def build_round(config: ml_collections.ConfigDict, *, model: Any, params: Any,
                aggregator: Any, attack: Any, scorer: Optional[Callable],
                train_loss: Optional[Callable], max_examples: int,
                client_execution: str = "vmap", updates_sharding: Any = None):
  """``(round_fn, init_state)`` of ``config.protocol``.

  ``updates_sharding`` places the ``[C, d]`` updates of the synchronous
  round before aggregation (see :func:`robustfl_jax.fl.round.make_round_fn`);
  the asynchronous protocol leaves them where XLA puts them.

  Returns:
    The unjitted ``round_fn(state, data, key=None) -> (state, metrics)`` and
    ``init_state(key) -> ServerState``.
  """
  client_opt = make_optimizer(config.client.optimizer,
                              config.client.learning_rate)
  server_opt = make_optimizer(config.server.optimizer,
                              config.server.learning_rate,
                              config.server.momentum)
  n = int(config.num_clients)
  common = dict(client_optimizer=client_opt, server_optimizer=server_opt,
                aggregator=aggregator, num_clients=n,
                max_examples=max_examples,
                batch_size=int(config.client.batch_size),
                local_epochs=int(config.client.local_epochs),
                mode=config.client.mode, attack=attack, train_loss=train_loss)
  if config.protocol == "romoa_async":
    round_fn = make_async_round_fn(
        model.apply, params, tau=int(config.romoa.tau),
        moving_rate=moving_rate(config),
        lookahead_unit=config.romoa.lookahead_unit,
        lookahead=takes_lookahead(config.aggregator.name), **common)

    def init_state(key):
      return init_async_state(params, server_opt, aggregator, n, key)

    return round_fn, init_state

  round_fn = make_round_fn(model.apply, params, scorer=scorer,
                           client_momentum=float(config.client.momentum),
                           client_execution=client_execution,
                           updates_sharding=updates_sharding, **common)

  def init_state(key):
    return init_server_state(params, server_opt, aggregator, n, key,
                             float(config.client.momentum))

  return round_fn, init_state
