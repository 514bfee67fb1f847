"""Attacks by name, for configs: ``get(name, **hparams)`` and ``names()``."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from robustfl_jax.attacks import _adaptive
from robustfl_jax.attacks import _fang
from robustfl_jax.attacks import _min_max
from robustfl_jax.attacks import _omniscient
from robustfl_jax.attacks import _simple

Attack = Callable[..., Any]

# Attacks with the signature ``attack(key, updates, byzantine_mask, **hparams)``.
_ATTACKS: dict[str, Attack] = {
    fn.__name__: fn
    for fn in (
        _simple.sign_flip, _simple.scaling, _simple.gaussian_noise,
        _simple.random, _simple.zero, _simple.non_finite,
        _simple.model_replacement, _omniscient.alie, _omniscient.ipm,
        _omniscient.mimic, _fang.fang_trimmed_mean, _fang.fang_krum,
        _min_max.min_max, _min_max.min_sum,
    )
}

# Factories ``factory(**hparams) -> attack(key, updates, byzantine_mask)``.
_FACTORIES: dict[str, Callable[..., Attack]] = {
    fn.__name__: fn
    for fn in (_adaptive.aggregator_aware, _adaptive.gradient_attack, _adaptive.stealth)
}


def names() -> tuple[str, ...]:
  """The names :func:`get` accepts (the attack functions' names), sorted."""
  return tuple(sorted((*_ATTACKS, *_FACTORIES)))


def get(name: str, **hparams: Any) -> Callable[[Any, Any, Any], Any]:
  """Returns the attack ``name`` with ``hparams`` bound.

  The result is a callable ``attack(key, updates, byzantine_mask) ->
  updates``, ready for ``jax.jit`` (string and shape-deciding hyper-parameters
  are bound, not traced). For the factories (``aggregator_aware``,
  ``gradient_attack``, ``stealth``) ``hparams`` are the factory's arguments,
  e.g. ``get("stealth", attack=get("alie"), alpha=0.5)``; for configs the
  inner attack of ``stealth`` may be a name, with its hyper-parameters in
  ``attack_hparams``: ``get("stealth", attack="ipm", attack_hparams={"epsilon":
  2.0}, alpha=0.5)``.

  Args:
    name: one of :func:`names`.
    **hparams: keyword hyper-parameters of that attack.

  Returns:
    ``attack(key, updates, byzantine_mask) -> updates``.

  Raises:
    ValueError: for an unknown name or a hyper-parameter the attack does not
      take (and whatever the attack's own validation raises).
  """
  if name in _FACTORIES:
    if name == "stealth" and isinstance(hparams.get("attack"), str):
      # Config-friendly: get("stealth", attack="alie", attack_hparams={...}).
      inner = hparams.pop("attack")
      hparams["attack"] = get(inner, **hparams.pop("attack_hparams", {}))
    return _FACTORIES[name](**hparams)
  if name not in _ATTACKS:
    raise ValueError(
        f"Unknown attack {name!r}; known attacks: {', '.join(names())}.")
  fn = _ATTACKS[name]
  params = inspect.signature(fn).parameters
  allowed = tuple(params)[3:]
  unknown = sorted(set(hparams) - set(allowed))
  if unknown:
    raise ValueError(
        f"Attack {name!r} takes hyper-parameters {allowed or '()'}; got unknown "
        f"{', '.join(unknown)}.")
  bound = functools.partial(fn, **hparams)
  functools.update_wrapper(bound, fn)
  return bound
