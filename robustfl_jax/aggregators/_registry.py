"""Rules and pre-aggregators by name: registration and :func:`get`.

Two kinds of rule register here, each from the module that defines it:

* a *stateless rule*, ``impl(updates, *, mask=None, [weights=None],
  **hparams) -> (aggregate [d], info)``, with :func:`register_rule`;
* a *factory* ``factory(*, **hparams, [num_clients], [params]) ->
  Aggregator`` for stateful rules, with :func:`register`.

Either way the signature declares the rule's hyper-parameters (every keyword
that is not a context name: ``num_clients``, ``params``, ``layer_sizes``,
``key``, ``mask``, ``weights``). Configs, validation and :func:`get` read them
from :data:`RULES`; adding a rule is one new module that registers itself.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, Sequence, Union

import jax

from robustfl_jax.aggregators import base
from robustfl_jax.registry import Registry

Array = jax.Array

# Build-time context (what an experiment knows), then call-time arguments.
BUILD_CONTEXT = ("num_clients", "params", "layer_sizes")
RULES = Registry("aggregator",
                 context=BUILD_CONTEXT + ("key", "mask", "weights"))
PRE_AGGREGATORS = Registry("pre-aggregator", context=("key", "mask"))


def register_rule(name: str, impl: Optional[Callable] = None, *,
                  rows_check: Optional[Callable] = None,
                  aliases: Sequence[str] = ()):
  """Registers a stateless rule; usable as a decorator.

  Args:
    name: the rule's name (``aggregator.name`` in configs).
    impl: ``impl(updates, *, mask=None, [weights=None], **hparams) ->
      (aggregate, info)``; ``info`` is a dict of arrays (``selected``,
      ``weights``, ``scores``, ...) merged into the aggregator's info. A rule
      that accepts ``weights`` receives sample-count weights.
    rows_check: optional ``rows_check(n, **hparams)`` raising ``ValueError``
      when the rule cannot work with ``n`` rows (it receives the
      hyper-parameters its signature names).
    aliases: further names.

  Returns:
    ``impl`` (or a decorator).
  """
  return RULES.register(name, impl, skip=1, aliases=aliases, kind="rule",
                        rows_check=rows_check)


def register(name: str, factory: Optional[Callable] = None, *,
             aliases: Sequence[str] = (), check: Optional[Callable] = None,
             takes_pre_aggregators: bool = True, section: str = "aggregator",
             lookahead: bool = False):
  """Registers a factory of a (stateful) rule; usable as a decorator.

  Args:
    name: the rule's name.
    factory: ``factory(*, **hparams, [num_clients], [params], [layer_sizes])
      -> Aggregator``; it validates its hyper-parameters eagerly.
    aliases: further names.
    check: optional cheap ``check(**hparams)``; the factory itself is the
      check when omitted (factories are cheap to call).
    takes_pre_aggregators: whether pre-aggregators may precede it (a rule
      with per-client state cannot follow one that changes the row count).
    section: the config section holding its hyper-parameters.
    lookahead: an asynchronous protocol calls it at every lookahead step
      (Romoa), not only at the sync step.
  """
  return RULES.register(name, factory, aliases=aliases, check=check,
                        kind="factory",
                        takes_pre_aggregators=takes_pre_aggregators,
                        section=section, lookahead=lookahead)


def register_pre_aggregator(name: str, fn: Optional[Callable] = None, *,
                            skip: int = 1, rows_check: Optional[Callable] = None,
                            rows_after: Optional[Callable] = None,
                            row_wise: bool = False):
  """Registers a pre-aggregator ``fn(updates, *, **hparams, mask=None)``.

  Args:
    name: its name (an entry of ``aggregator.pre_aggregators``).
    fn: ``[n, d] -> [n', d]``; excluded rows come out as NaN rows.
    skip: leading positional data parameters (2 for ``fn(key, updates,
      ...)``, which receives a PRNG key).
    rows_check: optional ``rows_check(n, **hparams)``.
    rows_after: optional ``rows_after(n, **hparams) -> n'`` when the output
      has another number of rows.
    row_wise: each output row depends only on the same input row (scaling,
      clipping), so the rule's selection still describes the clients.
  """
  return PRE_AGGREGATORS.register(name, fn, skip=skip, rows_check=rows_check,
                                  rows_after=rows_after, row_wise=row_wise)


def names() -> list[str]:
  """Names accepted by :func:`get`, aliases included."""
  return list(RULES.names())


def pre_aggregator_names() -> list[str]:
  return list(PRE_AGGREGATORS.names())


def hparam_names(name: str) -> list[str]:
  """Hyper-parameters that :func:`get` accepts for rule ``name``.

  Raises:
    ValueError: for an unknown rule name (the message lists every rule).
  """
  return sorted(RULES.hparams(name))


def _accepted(fn: Callable, values: dict) -> dict:
  params = inspect.signature(fn).parameters
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
    return dict(values)
  return {k: v for k, v in values.items() if k in params}


def _resolve(registry: Registry, name: str, given: dict) -> dict:
  """Defaults completed by ``given``; raises for unknown or missing ones."""
  registry.check_hparams(name, given)
  out = {}
  for key, param in registry.hparams(name).items():
    if key in given:
      out[key] = given[key]
    elif param.default is inspect.Parameter.empty:
      raise ValueError(f"{registry.family} {name!r} needs {key}.")
    else:
      out[key] = param.default
  return out


class _Stage:
  """A pre-aggregator with its hyper-parameters bound."""

  def __init__(self, spec, rule_hparams: dict):
    if isinstance(spec, str):
      name, given = spec, {}
    else:
      name, given = spec[0], dict(spec[1])
    entry = PRE_AGGREGATORS.entry(name)
    accepted = PRE_AGGREGATORS.hparams(name)
    # A pre-aggregator inherits num_byzantine (and any shared name) from the
    # rule unless given.
    inherited = {k: v for k, v in rule_hparams.items()
                 if k in accepted and k not in given}
    self.name = entry.name
    self.hp = _resolve(PRE_AGGREGATORS, name, {**inherited, **given})
    self.fn = functools.partial(entry.target, **self.hp)
    self.takes_key = entry.skip == 2
    self.rows_check = entry.meta.get("rows_check")
    self.rows_after = entry.meta.get("rows_after")
    self.row_wise = entry.meta.get("row_wise", False)

  def check(self, n: int) -> int:
    if self.rows_check is not None:
      self.rows_check(n, **_accepted(self.rows_check, self.hp))
    if self.rows_after is not None:
      return self.rows_after(n, **_accepted(self.rows_after, self.hp))
    return n

  def __call__(self, key, updates, mask):
    if self.takes_key:
      if key is None:
        raise ValueError(f"{self.name} needs a PRNG key: pass key= to update.")
      return self.fn(key, updates, mask=mask)
    return self.fn(updates, mask=mask)


def _stateless(name: str, hp: dict) -> base.Aggregator:
  """A registered ``impl`` as an :class:`Aggregator` with an empty state."""
  entry = RULES.entry(name)
  impl = functools.partial(entry.target, **hp)
  takes_weights = "weights" in inspect.signature(entry.target).parameters

  def update(updates, state, *, key=None, mask=None, weights=None, **context):
    del key, context  # Behaviour-based rules use the context; these do not.
    kwargs = {"weights": weights} if takes_weights else {}
    out, extra = impl(updates, mask=mask, **kwargs)
    return out, state, dict(extra)

  return base.Aggregator(lambda params: base.EmptyState(), update)


def _rows_check(name: str, hp: dict) -> Callable[[int], None]:
  check = RULES.entry(name).meta.get("rows_check")
  if check is None:
    return lambda n: None
  return lambda n: check(n, **_accepted(check, hp))


def get(name: str, *,
        pre_aggregators: Sequence[Union[str, tuple[str, dict]]] = (),
        num_clients: Optional[int] = None, params: Any = None,
        **hparams) -> base.Aggregator:
  """Builds a rule by name as an :class:`Aggregator`.

  Args:
    name: one of :func:`names` (``"median"`` is an alias of
      ``"coordinate_median"``, ``"rfa"`` the geometric median with RFA's 4
      steps, ``"centered_clipping"`` carries the previous aggregate as its
      center, ``"romoa"`` Romoa's sanitizing factors).
    pre_aggregators: names (or ``(name, hparams)`` pairs) applied in order
      before the rule: see :func:`pre_aggregator_names`. A pre-aggregator
      inherits the hyper-parameters it shares with the rule
      (``num_byzantine``).
    num_clients: if given, hyper-parameters are checked against it now (and
      stateful rules size their state with it).
    params: the model's parameters, for rules that read its layout (Romoa).
    **hparams: the rule's hyper-parameters (e.g. ``num_byzantine=2``), and
      for factories any other build context they declare (``layer_sizes``).

  Returns:
    ``Aggregator(init, update)`` with ``update(updates, state, *, key=None,
    mask=None, weights=None, **context) -> (aggregate, state, info)``;
    ``info`` always holds ``rejected``, ``num_rejected`` and
    ``num_nonfinite`` (rows masked or non-finite at the input), and
    ``excluded`` / ``num_excluded`` (rows with zero weight in the aggregate:
    rejected, unselected or weighted 0; after a pre-aggregator that mixes
    rows, the rejected ones).

  Raises:
    ValueError: unknown name or hyper-parameter (the message lists the
      choices), or (with ``num_clients``) values the rule cannot work with.
  """
  entry = RULES.entry(name)
  name = entry.name
  if entry.meta["kind"] == "rule":
    hp = _resolve(RULES, name, hparams)
    inner = _stateless(name, hp)
    inner_check = _rows_check(name, hp)
  else:
    if pre_aggregators and not entry.meta.get("takes_pre_aggregators", True):
      raise ValueError(f"{name} takes no pre_aggregators.")
    context = {"num_clients": num_clients, "params": params}
    context.update({k: hparams.pop(k) for k in BUILD_CONTEXT if k in hparams})
    hp = dict(hparams)
    inner = RULES.build(name, hp, context)
    inner_check = lambda n: None
  stages = [_Stage(p, hp) for p in pre_aggregators]

  def check(n: int) -> None:
    for stage in stages:
      n = stage.check(n)
    inner_check(n)

  if num_clients is not None:
    check(int(num_clients))

  def update(updates, state, *, key=None, mask=None, weights=None, **context):
    updates = base.as_updates(updates, name)
    check(updates.shape[0])
    finite = base.valid_rows(updates)
    mask = base.check_mask(mask, updates.shape[0])
    valid = finite if mask is None else finite & mask
    info = base.base_info(finite, valid)
    x, stage_mask = updates, mask
    if stages:
      keys = (jax.random.split(key, len(stages) + 1) if key is not None
              else [None] * (len(stages) + 1))
      key = keys[-1]
      for stage, k in zip(stages, keys):
        x = stage(k, x, stage_mask)
        stage_mask = None  # later stages see excluded rows as NaN rows
      weights = None  # sample-count weights describe clients, not mixed rows
    out, state, extra = inner.update(x, state, key=key, mask=stage_mask,
                                     weights=weights, **context)
    same_rows = x.shape[0] == updates.shape[0]
    for k, v in extra.items():
      if k in info:
        continue  # the input's own row accounting above is the reference
      info[k if same_rows else f"bucket_{k}"] = v
    # A selection among mixed rows says nothing about a client's weight.
    rows_kept = all(stage.row_wise for stage in stages)
    return out, state, base.with_exclusion(info, valid,
                                           use_selection=rows_kept)

  return base.Aggregator(inner.init, update)


def validate(name: str, num_clients: int, **kwargs) -> None:
  """Raises ``ValueError`` if ``get(name, **kwargs)`` cannot work for ``num_clients``."""
  get(name, num_clients=num_clients, **kwargs)
