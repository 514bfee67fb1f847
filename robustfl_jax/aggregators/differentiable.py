"""Reverse-differentiable forms of the distance-based rules.

The library's rules are written for speed and exactness: the coordinate-wise
ones read order statistics off a comparator network or a sort, and the
geometric median runs a ``while_loop`` to a tolerance, which has no
reverse-mode derivative. A gradient-based adversary
(:func:`robustfl_jax.attacks.gradient_attack`,
:func:`robustfl_jax.attacks.distance_bounded`) needs ``d rule / d updates``;
:func:`differentiable_rule` returns, by name, a form of the rule with a cheap
gradient that agrees with the library's rule on finite rows.

References:
  Shejwalkar, V., Houmansadr, A.: Manipulating the Byzantine: optimizing
  model poisoning attacks and defenses for federated learning. NDSS (2021).
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from robustfl_jax.aggregators._clipping import centered_clipping
from robustfl_jax.aggregators._coordinatewise import mean
from robustfl_jax.aggregators._krum import krum

Array = jax.Array
Rule = Callable[[Array], Array]

DIFFERENTIABLE_RULES = ("mean", "median", "coordinate_median", "trimmed_mean",
                        "krum", "geometric_median", "centered_clipping")


def _weiszfeld(updates: Array, max_iter: int, smoothing: float) -> Array:
  """Smoothed Weiszfeld with a fixed step count (``fori_loop``: differentiable)."""
  x = updates.astype(jnp.float32)

  def step(_, z):
    dist = jnp.sqrt(jnp.sum(jnp.square(x - z), axis=1) + smoothing ** 2)
    beta = 1.0 / dist
    return (beta / jnp.sum(beta)) @ x

  return jax.lax.fori_loop(0, max_iter, step, jnp.mean(x, axis=0))


def _sorted_rows(updates: Array, lo: int, hi: int) -> Array:
  """Rows ``lo..hi-1`` of the column-wise sort, differentiable as a gather.

  The order is computed without gradient and the values gathered with
  ``take_along_axis``, whose transpose is a cheap scatter (reverse-mode
  through ``jnp.sort`` on ``[n, d]`` is much slower on CPU). Assumes finite
  rows (the attack's and the honest ones are).
  """
  x = updates.astype(jnp.float32)
  order = jnp.argsort(jax.lax.stop_gradient(x), axis=0)[lo:hi]
  return jnp.take_along_axis(x, order, axis=0)


def _median(updates: Array) -> Array:
  n = updates.shape[0]
  rows = _sorted_rows(updates, (n - 1) // 2, n // 2 + 1)
  return 0.5 * (rows[0] + rows[-1])


def _trimmed_mean(updates: Array, num_trim: int) -> Array:
  n = updates.shape[0]
  if not 0 <= 2 * num_trim < n:
    raise ValueError(f"differentiable trimmed_mean needs 0 <= 2 num_trim < n; "
                     f"got num_trim={num_trim}, n={n}.")
  return jnp.mean(_sorted_rows(updates, num_trim, n - num_trim), axis=0)


def differentiable_rule(name: str, *, num_byzantine: int = 0,
                        num_trim: Optional[int] = None, radius: float = 10.0,
                        num_iters: int = 1, max_iter: int = 10,
                        center: Optional[Array] = None) -> Rule:
  """A reverse-differentiable ``rule(updates [n, d]) -> [d]`` by name.

  The coordinate median and trimmed mean as gathers of the column-wise
  order statistics (equal to the library's on finite rows); Krum as the
  library computes it (the gradient reaches the selected row); the geometric
  median as ``max_iter`` smoothed Weiszfeld steps in a ``fori_loop`` (the
  library's ``while_loop`` form has no reverse-mode derivative; with enough
  steps both agree); centered clipping around ``center`` (zeros when None:
  the attacker does not see the server's previous aggregate).

  Raises:
    ValueError: an unknown name (one of :data:`DIFFERENTIABLE_RULES`).
  """
  if name == "mean":
    return mean
  if name in ("median", "coordinate_median"):
    return _median
  if name == "trimmed_mean":
    trim = num_byzantine if num_trim is None else num_trim
    return functools.partial(_trimmed_mean, num_trim=int(trim))
  if name == "krum":
    return functools.partial(krum, num_byzantine=num_byzantine)
  if name == "geometric_median":
    return functools.partial(_weiszfeld, max_iter=max_iter, smoothing=1e-5)
  if name == "centered_clipping":
    return functools.partial(centered_clipping, center=center,
                             radius=radius, num_iters=num_iters)
  raise ValueError(f"no differentiable form of rule {name!r}; choose one of "
                   f"{DIFFERENTIABLE_RULES} or pass a callable.")
