"""Attacks by name: the :class:`Attack` type, registration and :func:`get`.

Every attack that :func:`get` returns is an :class:`Attack`, called as
``attack(key, updates, byzantine_mask, **context)``. The round passes its
context as keyword arguments (``global_params``, the flat global model the
updates are relative to; ``round``; ``aggregator``, the server's rule) and
each attack receives those its function declares, as aggregators receive
theirs. An attack may also change how the Byzantine clients train
(``train_loss``, ``local_train``: targeted poisoning) or their data
(``poison_data``: label flipping, backdoors); the round and the experiment
builders apply those parts.

Two kinds register here, each from the module that defines it:

* an update attack ``fn(key, updates, byzantine_mask, *, **hparams)``, with
  :func:`register_attack`;
* a factory ``factory(*, **hparams, [context]) -> Attack`` (or a plain update
  function), with :func:`register_factory`, for attacks built with the
  model, the data or the rule they target.

The signature declares the hyper-parameters: every keyword that is not a
context name (:data:`CONTEXT`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping, Optional, Sequence

from robustfl_jax.registry import Registry

# Build-time context an experiment supplies, then call-time context the round
# passes; neither is a hyper-parameter.
BUILD_CONTEXT = ("num_clients", "params", "apply_fn", "dataset", "seed",
                 "rule", "rule_name", "rule_hparams", "probe")
CALL_CONTEXT = ("global_params", "round", "aggregator")
CONTEXT = BUILD_CONTEXT + CALL_CONTEXT

ATTACKS = Registry("attack", context=CONTEXT)

UpdateFn = Callable[..., Any]


def _accepted_context(fn: Callable) -> Optional[frozenset]:
  """Keyword names ``fn`` accepts beyond the data (None: it takes ``**kw``)."""
  params = inspect.signature(fn).parameters
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
    return None
  return frozenset(params)


@dataclasses.dataclass(frozen=True, eq=False)
class Attack:
  """A Byzantine behaviour; call it as ``attack(key, updates, byzantine_mask, **context)``.

  Attributes:
    name: the attack's name.
    update: ``update(key, updates [n, d], byzantine_mask bool[n], **context)
      -> updates``, replacing the Byzantine rows of the uploads; None leaves
      the uploads as they are. It receives the context keywords its
      signature declares.
    train_loss: the Byzantine clients' local objective
      (:data:`robustfl_jax.fl.local.TrainLoss`; its ``aux`` is the client's
      Byzantine flag), or None.
    local_train: ``local_train(factory, local_epochs) -> local_train_fn``
      replacing the Byzantine clients' local training, where ``factory(loss,
      max_examples, batch_size, local_epochs)`` builds
      :func:`robustfl_jax.fl.local.make_local_train` with the run's model
      and optimizer (None fields keep the run's values); or None.
    poison_data: ``poison_data(client_data, byzantine bool[C], key) ->
      client_data`` applied once before training, or None.
    evaluation: keyword arguments for
      :func:`robustfl_jax.fl.metrics.make_eval_fn` that measure the attack's
      goal (``targeted=(source, target)`` or ``backdoor=(target, size,
      value)``).
  """

  name: str
  update: Optional[UpdateFn] = None
  train_loss: Optional[Callable] = None
  local_train: Optional[Callable] = None
  poison_data: Optional[Callable] = None
  evaluation: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __call__(self, key, updates, byzantine_mask, **context):
    if self.update is None:
      return updates
    accepted = _accepted_context(self.update)
    if accepted is not None:
      context = {k: v for k, v in context.items() if k in accepted}
    return self.update(key, updates, byzantine_mask, **context)

  @property
  def __name__(self) -> str:  # jax.jit and logs read it
    return self.name


def as_attack(attack: Any, name: Optional[str] = None) -> Optional[Attack]:
  """An :class:`Attack` from an attack function (or None, or an Attack)."""
  if attack is None or isinstance(attack, Attack):
    return attack
  if not callable(attack):
    raise TypeError(f"an attack must be callable; got {attack!r}.")
  return Attack(name or getattr(attack, "__name__", "attack"), update=attack)


def register_attack(name: Optional[str] = None, fn: Optional[Callable] = None,
                    *, exclude: Sequence[str] = (), configurable: bool = True):
  """Registers an update attack ``fn(key, updates, byzantine_mask, **hparams)``.

  Args:
    name: its name (default ``fn.__name__``).
    fn: the attack function; omitted when used as a decorator.
    exclude: parameters that are not configurable by name (they keep their
      defaults), e.g. a parameter whose name means something else in configs.
    configurable: False keeps it out of configs (wrappers such as stealth).
  """
  return ATTACKS.register(name, fn, skip=3, kind="update",
                          exclude=tuple(exclude), configurable=configurable)


def register_factory(name: Optional[str] = None,
                     factory: Optional[Callable] = None, *,
                     configurable: bool = True, check: Optional[Callable] = None):
  """Registers ``factory(*, **hparams, [context]) -> Attack or update function``.

  Args:
    name: its name (default ``factory.__name__``).
    factory: the factory; omitted when used as a decorator.
    configurable: False keeps it out of configs.
    check: optional cheap ``check(**hparams, [context])`` for validation
      before anything is built.
  """
  return ATTACKS.register(name, factory, kind="factory", check=check,
                          exclude=(), configurable=configurable)


def names(configurable_only: bool = False) -> tuple[str, ...]:
  """The names :func:`get` accepts, sorted."""
  if not configurable_only:
    return ATTACKS.names()
  return tuple(n for n in ATTACKS.names()
               if ATTACKS.entry(n).meta.get("configurable", True))


def hparams(name: str) -> dict[str, inspect.Parameter]:
  """The configurable hyper-parameters of attack ``name``."""
  excluded = ATTACKS.entry(name).meta.get("exclude", ())
  return {k: p for k, p in ATTACKS.hparams(name).items() if k not in excluded}


def get(name: str, **kwargs: Any) -> Attack:
  """Returns the attack ``name`` with its hyper-parameters bound.

  The result is an :class:`Attack`, callable as ``attack(key, updates,
  byzantine_mask, **context) -> updates`` and ready for ``jax.jit``
  (string and shape-deciding hyper-parameters are bound, not traced). For
  the factories, ``kwargs`` are the factory's arguments, hyper-parameters and
  build context alike: ``get("aggregator_aware", rule=rule)``,
  ``get("tpa", dataset=ds, num_clients=10)``, ``get("stealth",
  attack=get("alie"), alpha=0.5)``; the inner attack of ``stealth`` may be a
  name, with its hyper-parameters in ``attack_hparams``.

  Args:
    name: one of :func:`names`.
    **kwargs: hyper-parameters (and, for factories, build context).

  Returns:
    An :class:`Attack`.

  Raises:
    ValueError: an unknown name (the message lists every attack), a
      hyper-parameter the attack does not take, or whatever the attack's own
      validation raises.
  """
  entry = ATTACKS.entry(name)
  context = {k: v for k, v in kwargs.items() if k in ATTACKS.context}
  hp = {k: v for k, v in kwargs.items() if k not in ATTACKS.context}
  if entry.meta["kind"] == "update":
    ATTACKS.check_hparams(name, hp)
    bound = ATTACKS.select_context(name, context)
    return Attack(entry.name,
                  update=functools.partial(entry.target, **hp, **bound))
  return as_attack(ATTACKS.build(name, hp, context), entry.name)
