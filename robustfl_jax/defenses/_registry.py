"""Defenses by name: what a behaviour-based defense needs to be built.

A defense factory registers itself with :func:`register` in the module that
defines it; its keyword-only signature declares its hyper-parameters (every
name outside :data:`CONTEXT`, the things an experiment supplies: the model,
its data, the clients' training settings). It returns a :class:`Defense`:
the aggregator the round calls and the probe a strategic adversary can
query.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

from robustfl_jax.aggregators.base import Aggregator
from robustfl_jax.registry import Registry

CONTEXT = ("num_clients", "params", "apply_fn", "dataset", "seed",
           "client_optimizer", "batch_size", "local_epochs", "mode")

DEFENSES = Registry("defense", context=CONTEXT)


class Defense(NamedTuple):
  """A behaviour-based defense built for one experiment.

  Attributes:
    aggregator: the ``Aggregator`` the round calls (it reads the context
      ``global_params``).
    probe: the :class:`~robustfl_jax.defenses.BehaviourProbe` that scores and
      accepts client models, for adversaries that know the defense; None
      when the defense has none.
    artifacts: what building it trained or drew, for reports (the GAN
      filter's ``{"generator": GANResult}``); None when nothing.
  """

  aggregator: Aggregator
  probe: Any = None
  artifacts: Optional[dict] = None


def register(name: str, factory: Optional[Callable] = None, *,
             check: Optional[Callable] = None):
  """Registers ``factory(*, **hparams, [context]) -> Defense``.

  Args:
    name: the defense's name (an ``aggregator.name`` in configs).
    factory: the factory; omitted when used as a decorator.
    check: optional cheap ``check(**hparams)`` that raises ``ValueError``
      before anything expensive (a GAN) is trained.
  """
  return DEFENSES.register(name, factory, check=check)


def names() -> tuple[str, ...]:
  """The registered defenses, sorted."""
  return DEFENSES.names()


def get(name: str, **kwargs: Any) -> Defense:
  """Builds the defense ``name``; ``kwargs`` are hyper-parameters and context.

  Raises:
    ValueError: unknown name (the message lists every defense) or
      hyper-parameter, missing context, or values that cannot work.
  """
  context = {k: v for k, v in kwargs.items() if k in CONTEXT}
  hparams = {k: v for k, v in kwargs.items() if k not in CONTEXT}
  return DEFENSES.build(name, hparams, context)
