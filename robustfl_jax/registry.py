"""Parts chosen by name: one :class:`Registry` per family.

Aggregation rules, attacks, defenses, models and data sets each keep a
registry. A part registers itself in the module that defines it and declares
its hyper-parameters once, through the signature of what it registers: every
keyword parameter that is not one of the family's *context* names (the things
an experiment supplies, such as ``num_clients`` or the model's ``apply_fn``)
is a hyper-parameter. Nothing else lists them: configs, validation and error
messages read them from here.

Example::

  from robustfl_jax.registry import Registry
  SHAPES = Registry("shape", context=("num_clients",))

  @SHAPES.register("ring")
  def ring(*, num_clients, radius: float = 1.0):
    ...

  SHAPES.hparams("ring")      # {"radius": <Parameter "radius: float = 1.0">}
  SHAPES.names()              # ("ring",)
  SHAPES.build("ring", {"radius": 2.0}, {"num_clients": 10})
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


@dataclasses.dataclass(frozen=True)
class Entry:
  """One registered part.

  Attributes:
    name: the name configs use.
    target: the registered callable.
    skip: leading positional parameters of ``target`` that are data, not
      hyper-parameters (an attack's ``key, updates, byzantine_mask``).
    check: optional ``check(**hparams, **context)`` that raises ``ValueError``
      for values that cannot work, without building anything expensive; it
      receives the names its signature lists.
    meta: family-specific facts (e.g. a config section, a kind).
  """

  name: str
  target: Callable[..., Any]
  skip: int = 0
  check: Optional[Callable[..., None]] = None
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Registry:
  """Name -> part for one family, with hyper-parameters read from signatures.

  Args:
    family: the family's name in messages ("aggregator", "attack", ...).
    context: keyword names that an experiment supplies when it builds a part;
      they are never hyper-parameters.
  """

  def __init__(self, family: str, context: Sequence[str] = ()):
    self.family = family
    self.context = tuple(context)
    self._entries: dict[str, Entry] = {}
    self._aliases: dict[str, str] = {}

  def register(self, name: Optional[str] = None, target: Optional[Callable] = None,
               *, skip: int = 0, check: Optional[Callable] = None,
               aliases: Iterable[str] = (), **meta: Any):
    """Registers ``target`` under ``name``; usable as a decorator.

    Args:
      name: the name (default: ``target.__name__``).
      target: the callable; omitted when used as ``@registry.register(...)``.
      skip: leading positional data parameters to skip (see :class:`Entry`).
      check: optional cheap validation hook (see :class:`Entry`).
      aliases: further names for the same part.
      **meta: family-specific facts stored on the entry.

    Returns:
      ``target`` unchanged (or the decorator).

    Raises:
      ValueError: the name is taken by another part.
    """
    def add(fn):
      key = name or fn.__name__
      entry = Entry(key, fn, skip, check, dict(meta))
      for label in (key, *aliases):
        old = self._entries.get(self._aliases.get(label, label))
        if old is not None and old.target is not fn:
          raise ValueError(f"{self.family} {label!r} is registered already "
                           f"(by {old.target.__module__}.{old.target.__qualname__}).")
      self._entries[key] = entry
      for alias in aliases:
        self._aliases[alias] = key
      return fn

    return add if target is None else add(target)

  def unregister(self, name: str) -> None:
    """Removes ``name`` and its aliases (a part registered by a test)."""
    key = self.entry(name).name
    del self._entries[key]
    for alias in [a for a, k in self._aliases.items() if k == key]:
      del self._aliases[alias]

  def names(self, include_aliases: bool = True) -> tuple[str, ...]:
    """Every registered name, sorted."""
    names = set(self._entries)
    if include_aliases:
      names |= set(self._aliases)
    return tuple(sorted(names))

  def __contains__(self, name: object) -> bool:
    return name in self._entries or name in self._aliases

  def __iter__(self):
    return iter(self.names())

  def entry(self, name: str) -> Entry:
    """The entry of ``name``.

    Raises:
      ValueError: ``name`` is not registered; the message lists every choice.
    """
    key = self._aliases.get(name, name)
    if key not in self._entries:
      raise ValueError(f"unknown {self.family} {name!r}; choose one of "
                       f"{list(self.names())}.")
    return self._entries[key]

  def canonical(self, name: str) -> str:
    """The registered name behind an alias."""
    return self.entry(name).name

  def hparams(self, name: str) -> dict[str, inspect.Parameter]:
    """The hyper-parameters of ``name``, in signature order."""
    return signature_hparams(self.entry(name), self.context)

  def defaults(self, name: str) -> dict[str, Any]:
    """``{hparam: default}`` (``inspect.Parameter.empty`` when required)."""
    return {k: p.default for k, p in self.hparams(name).items()}

  def context_names(self, name: str) -> tuple[str, ...]:
    """The context names the part of ``name`` declares."""
    params = _parameters(self.entry(name))
    return tuple(k for k in params if k in self.context)

  def check_hparams(self, name: str, hparams: Mapping[str, Any]) -> None:
    """Raises ``ValueError`` for a hyper-parameter ``name`` does not take."""
    accepted = self.hparams(name)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
      raise ValueError(f"{self.family} {name!r} does not take {unknown}; it "
                       f"takes {sorted(accepted) or 'no hyper-parameters'}.")

  def select_context(self, name: str, context: Mapping[str, Any]) -> dict:
    """The part of ``context`` that ``name`` declares (missing ones left out)."""
    return {k: context[k] for k in self.context_names(name) if k in context}

  def check(self, name: str, hparams: Mapping[str, Any],
            context: Mapping[str, Any] = ()) -> None:
    """Unknown hyper-parameters, then the part's own cheap ``check`` hook."""
    self.check_hparams(name, hparams)
    entry = self.entry(name)
    if entry.check is not None:
      params = inspect.signature(entry.check).parameters
      given = {**dict(context), **dict(hparams)}
      if not any(p.kind is inspect.Parameter.VAR_KEYWORD
                 for p in params.values()):
        given = {k: v for k, v in given.items() if k in params}
      entry.check(**given)

  def build(self, name: str, hparams: Mapping[str, Any] = (),
            context: Mapping[str, Any] = ()) -> Any:
    """Calls the registered factory with ``hparams`` and its declared context.

    Raises:
      ValueError: unknown name or hyper-parameter, or a declared context name
        without a default that ``context`` lacks.
    """
    hparams = dict(hparams)
    self.check_hparams(name, hparams)
    entry = self.entry(name)
    ctx = dict(context)
    params = _parameters(entry)
    missing = [k for k in self.context_names(name) if k not in ctx
               and params[k].default is inspect.Parameter.empty]
    if missing:
      raise ValueError(f"{self.family} {name!r} needs {missing} to be built; "
                       "pass them as keyword arguments.")
    return entry.target(**hparams, **self.select_context(name, ctx))

  def all_hparams(self) -> dict[str, list[tuple[str, inspect.Parameter]]]:
    """``{hparam: [(part name, parameter), ...]}`` over every part."""
    out: dict[str, list[tuple[str, inspect.Parameter]]] = {}
    for key in sorted(self._entries):
      for hp, param in self.hparams(key).items():
        out.setdefault(hp, []).append((key, param))
    return out


def _parameters(entry: Entry) -> dict[str, inspect.Parameter]:
  params = list(inspect.signature(entry.target).parameters.values())
  return {p.name: p for p in params[entry.skip:] if p.kind not in _VARIADIC}


def signature_hparams(entry: Entry, context: Sequence[str]
                      ) -> dict[str, inspect.Parameter]:
  """Keyword parameters of ``entry.target`` after ``skip``, minus context."""
  return {k: p for k, p in _parameters(entry).items() if k not in context}


def hparam_type(target: Callable, param: inspect.Parameter) -> Optional[type]:
  """The plain type of a hyper-parameter: its annotation, else its default's.

  ``Optional[X]`` gives ``X``; ``Sequence[...]``/``tuple[...]`` give
  ``tuple``. None when neither says.
  """
  try:
    hints = typing.get_type_hints(target)
  except Exception:  # pylint: disable=broad-except
    hints = {}
  hint = hints.get(param.name)
  if hint is not None:
    resolved = _plain_type(hint)
    if resolved is not None:
      return resolved
  default = param.default
  if default is inspect.Parameter.empty or default is None:
    return None
  if isinstance(default, list):
    return tuple
  return type(default)


def _plain_type(hint: Any) -> Optional[type]:
  origin = typing.get_origin(hint)
  if origin is typing.Union:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1:
      return _plain_type(args[0])
    if set(args) <= {int, float}:
      return float
    return None
  if origin in (tuple, list, Sequence, typing.Sequence) or hint in (tuple, list):
    return tuple
  import collections.abc  # pylint: disable=import-outside-toplevel
  if origin is collections.abc.Sequence:
    return tuple
  if hint in (int, float, str, bool):
    return hint
  return None
