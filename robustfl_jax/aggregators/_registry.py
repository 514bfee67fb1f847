"""Build any rule by name, as an optax-style :class:`Aggregator`, for configs."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from robustfl_jax.aggregators import _base, _clipping, _coordinatewise, _krum
from robustfl_jax.aggregators import _geometric_median, _preaggregators

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class _Rule:
  impl: Callable  # (updates, mask=..., **hparams) -> (aggregate, extra_info)
  hparams: dict[str, Any]  # accepted hyper-parameters and their defaults
  check: Optional[Callable] = None  # (n, **hparams) -> None, raises ValueError
  takes_weights: bool = False


def _no_check(n, **_):
  del n


_RULES: dict[str, _Rule] = {
    "mean": _Rule(_coordinatewise._mean, {}, takes_weights=True),
    "coordinate_median": _Rule(_coordinatewise._coordinate_median, {}, takes_weights=True),
    "median": _Rule(_coordinatewise._coordinate_median, {}, takes_weights=True),
    "trimmed_mean": _Rule(
        _coordinatewise._trimmed_mean, {"num_trim": None},
        lambda n, num_trim: _coordinatewise.check_trimmed_mean(n, num_trim),
        takes_weights=True),
    "meamed": _Rule(_coordinatewise._meamed, {"num_byzantine": None},
                    lambda n, num_byzantine: _coordinatewise.check_meamed(n, num_byzantine)),
    "krum": _Rule(_krum._krum, {"num_byzantine": None},
                  lambda n, num_byzantine: _krum.check_krum(n, num_byzantine)),
    "multi_krum": _Rule(
        _krum._multi_krum, {"num_byzantine": None, "num_selected": None},
        lambda n, num_byzantine, num_selected: _krum.check_multi_krum(
            n, num_byzantine, n - num_byzantine if num_selected is None else num_selected)),
    "bulyan": _Rule(_krum._bulyan, {"num_byzantine": None},
                    lambda n, num_byzantine: _krum.check_bulyan(n, num_byzantine)),
    "geometric_median": _Rule(
        _geometric_median._geometric_median,
        {"max_iter": 100, "smoothing": 1e-5, "ftol": 1e-6, "init": "mean"},
        takes_weights=True),
    # RFA's reference settings (Pillutla et al.): 4 Weiszfeld steps.
    "rfa": _Rule(_geometric_median._geometric_median,
                 {"max_iter": 4, "smoothing": 1e-5, "ftol": 1e-6, "init": "mean"},
                 takes_weights=True),
}

_STATEFUL = {"centered_clipping": {"radius": 10.0, "num_iters": 1}}
_ROMOA_HPARAMS = ("params", "layer_sizes", "selection_fraction", "beta",
                  "quantile", "pearson", "max_iter")

_PRE: dict[str, tuple[Callable, dict[str, Any], Callable]] = {
    "nnm": (_preaggregators.nnm, {"num_byzantine": None},
            lambda n, num_byzantine: _preaggregators.check_nnm(n, num_byzantine)),
    "arc": (_clipping.arc, {"num_byzantine": None},
            lambda n, num_byzantine: _clipping.check_arc(n, num_byzantine)),
    "clip_by_norm": (_clipping.clip_by_norm, {"max_norm": None}, _no_check),
    "bucketing": (_preaggregators.bucketing, {"bucket_size": None}, _no_check),
}


def names() -> list[str]:
  """Names accepted by :func:`get` (rules) and as ``pre_aggregators``."""
  return sorted(list(_RULES) + list(_STATEFUL) + ["romoa"])


def pre_aggregator_names() -> list[str]:
  return sorted(_PRE)


def hparam_names(name: str) -> list[str]:
  """Hyper-parameters that :func:`get` accepts for rule ``name``.

  Raises:
    ValueError: for an unknown rule name.
  """
  if name in _STATEFUL:
    return sorted(_STATEFUL[name])
  if name == "romoa":
    return sorted(_ROMOA_HPARAMS)
  if name in _RULES:
    return sorted(_RULES[name].hparams)
  raise ValueError(f"unknown aggregator {name!r}; choose from {names()}.")


class CenteredClippingState(NamedTuple):
  """State of stateful centered clipping: the previous aggregate."""
  center: Array


def _resolve(name: str, defaults: dict[str, Any], given: dict[str, Any], what: str):
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f"{what} {name!r} does not take {unknown}; it takes "
                     f"{sorted(defaults) or 'no hyper-parameters'}.")
  out = {**defaults, **given}
  missing = [k for k, v in out.items() if v is None and k != "num_selected"]
  if missing:
    raise ValueError(f"{what} {name!r} needs {missing}.")
  return out


def _build_pre(spec, rule_hparams):
  if isinstance(spec, str):
    name, given = spec, {}
  else:
    name, given = spec[0], dict(spec[1])
  if name not in _PRE:
    raise ValueError(f"unknown pre-aggregator {name!r}; choose from {pre_aggregator_names()}.")
  fn, defaults, check = _PRE[name]
  # A pre-aggregator inherits num_byzantine from the rule unless given.
  inherited = {k: v for k, v in rule_hparams.items() if k in defaults and k not in given}
  hp = _resolve(name, defaults, {**inherited, **given}, "pre-aggregator")
  return name, functools.partial(fn, **hp), functools.partial(check, **hp)


def get(name: str, *, pre_aggregators: Sequence[Union[str, tuple[str, dict]]] = (),
        num_clients: Optional[int] = None, **hparams) -> _base.Aggregator:
  """Builds a rule by name as an :class:`Aggregator`.

  Args:
    name: one of :func:`names` (``"median"`` is an alias of
      ``"coordinate_median"``, ``"rfa"`` the geometric median with RFA's 4
      steps, ``"centered_clipping"`` carries the previous aggregate as its
      center).
    pre_aggregators: names (or ``(name, hparams)`` pairs) applied in order
      before the rule: ``"nnm"``, ``"arc"``, ``"clip_by_norm"``,
      ``"bucketing"``. ``num_byzantine`` is inherited from the rule.
    num_clients: if given, hyper-parameters are checked against it now.
    **hparams: the rule's hyper-parameters (e.g. ``num_byzantine=2``).

  Returns:
    ``Aggregator(init, update)`` with
    ``update(updates, state, *, key=None, mask=None, weights=None) ->
    (aggregate, state, info)``.

  Raises:
    ValueError: unknown name or hyper-parameter, or (with ``num_clients``)
      values the rule cannot work with.
  """
  if name == "romoa":
    # Stateful, per-parameter factors: see robustfl_jax/aggregators/romoa.py.
    from robustfl_jax.aggregators import romoa  # pylint: disable=import-outside-toplevel
    if pre_aggregators:
      raise ValueError("romoa takes no pre_aggregators.")
    unknown = sorted(set(hparams) - set(_ROMOA_HPARAMS))
    if unknown:
      raise ValueError(f"aggregator 'romoa' does not take {unknown}; it takes "
                       f"{sorted(_ROMOA_HPARAMS)}.")
    return romoa.romoa(num_clients=num_clients, **hparams)
  if name in _STATEFUL:
    hp = _resolve(name, _STATEFUL[name], hparams, "aggregator")
    rule = None
  elif name in _RULES:
    rule = _RULES[name]
    hp = _resolve(name, rule.hparams, hparams, "aggregator")
  else:
    raise ValueError(f"unknown aggregator {name!r}; choose from {names()}.")
  pres = [_build_pre(p, hp) for p in pre_aggregators]
  if name == "centered_clipping":
    _clipping._centered_clipping(jnp.zeros((1, 1)), None, hp["radius"], hp["num_iters"])

  def check(n: int) -> None:
    for pre_name, _, pre_check in pres:
      pre_check(n)
      if pre_name == "bucketing":
        n = -(-n // dict(pre_check.keywords)["bucket_size"])
    if rule is not None and rule.check is not None:
      rule.check(n, **hp)

  if num_clients is not None:
    check(int(num_clients))

  def init(params):
    if name == "centered_clipping":
      flat = params if isinstance(params, jax.Array) and params.ndim == 1 else ravel_pytree(params)[0]
      return CenteredClippingState(jnp.zeros_like(flat))
    return _base.EmptyState()

  def update(updates, state, *, key=None, mask=None, weights=None, **context):
    del context  # Behaviour-based rules use it; distance rules do not.
    _base.check_updates(updates, name)
    check(updates.shape[0])
    finite = _base.valid_rows(updates)
    mask = _base.check_mask(mask, updates.shape[0])
    valid = finite if mask is None else finite & mask
    info = _base.base_info(finite, valid)
    x, stage_mask = updates, mask
    keys = jax.random.split(key, len(pres)) if key is not None else [None] * len(pres)
    for (pre_name, fn, _), k in zip(pres, keys):
      if pre_name == "bucketing":
        if k is None:
          raise ValueError("bucketing needs a PRNG key: pass key= to update.")
        x = fn(k, x, mask=stage_mask)
      else:
        x = fn(x, mask=stage_mask)
      stage_mask = None  # later stages see excluded rows as NaN rows
    rule_weights = weights if not pres else None
    if name == "centered_clipping":
      out, extra = _clipping._centered_clipping(x, state.center, hp["radius"],
                                                hp["num_iters"], stage_mask)
      out = out.astype(updates.dtype)
      state = CenteredClippingState(out.astype(state.center.dtype))
    else:
      kwargs = dict(hp)
      if rule.takes_weights:
        kwargs["weights"] = rule_weights
      out, extra = rule.impl(x, mask=stage_mask, **kwargs)
    same_rows = x.shape[0] == updates.shape[0]
    for k, v in extra.items():
      info[k if same_rows else f"bucket_{k}"] = v
    return out, state, info

  return _base.Aggregator(init, update)


def validate(name: str, num_clients: int, **kwargs) -> None:
  """Raises ``ValueError`` if ``get(name, **kwargs)`` cannot work for ``num_clients``."""
  get(name, num_clients=num_clients, **kwargs)
