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


def _ranks(updates: Array) -> Array:
  """``int[n, d]``: each entry's rank in its column (a stable sort's order).

  ``rank[i, j] = #{k : x[k, j] < x[i, j]} + #{k < i : x[k, j] == x[i, j]}``,
  a permutation of ``0..n-1`` per column: the position of ``x[i, j]`` in
  ``jnp.argsort(x[:, j], stable=True)``. Computed by ``n^2`` comparisons per
  column, without gradient: on CPU an order of magnitude cheaper than
  ``argsort`` along the rows of ``[n, d]`` for the small ``n`` of a round
  (20 rows, 9610 coordinates, jitted value and gradient of ``|rule|^2`` on
  the shared 2-core CPU, 2026-12-03: median 1.9 ms, trimmed mean 0.7 ms,
  against 23 ms each through ``argsort`` and ``take_along_axis``).
  """
  x = jax.lax.stop_gradient(updates)
  n = x.shape[0]
  less = jnp.sum(x[None, :, :] < x[:, None, :], axis=1)
  earlier = jnp.tril(jnp.ones((n, n), bool), -1)  # [i, k]: k < i
  ties = jnp.sum((x[None, :, :] == x[:, None, :]) & earlier[:, :, None],
                 axis=1)
  return less + ties


def _rank_sum(x: Array, ranks: Array, lo: int, hi: int) -> Array:
  """Column sums of the entries of rank ``lo..hi-1``: exact (the other
  entries add zeros), and the gradient is the rank indicator."""
  return jnp.sum(jnp.where((ranks >= lo) & (ranks < hi), x, 0), axis=0)


def _median(updates: Array) -> Array:
  """The coordinate median, bit for bit the library's on finite rows
  (``0.5 a + 0.5 b`` of the two central order statistics)."""
  n = updates.shape[0]
  x = updates.astype(jnp.float32)
  ranks = _ranks(x)
  lo, hi = (n - 1) // 2, n // 2
  return (0.5 * _rank_sum(x, ranks, lo, lo + 1)
          + 0.5 * _rank_sum(x, ranks, hi, hi + 1))


def _trimmed_mean(updates: Array, num_trim: int) -> Array:
  """The mean of the order statistics ``num_trim .. n - 1 - num_trim`` per
  coordinate (the library sums them by its clipping identity: equal up to
  float rounding)."""
  n = updates.shape[0]
  if not 0 <= 2 * num_trim < n:
    raise ValueError(f"differentiable trimmed_mean needs 0 <= 2 num_trim < n; "
                     f"got num_trim={num_trim}, n={n}.")
  x = updates.astype(jnp.float32)
  return _rank_sum(x, _ranks(x), num_trim, n - num_trim) / (n - 2 * num_trim)


def differentiable_rule(name: str, *, num_byzantine: int = 0,
                        num_trim: Optional[int] = None, radius: float = 10.0,
                        num_iters: int = 1, max_iter: int = 10,
                        center: Optional[Array] = None) -> Rule:
  """A reverse-differentiable ``rule(updates [n, d]) -> [d]`` by name.

  The coordinate median and trimmed mean as sums of the entries of the
  chosen ranks, the ranks found by pairwise comparison without gradient
  (equal to the library's on finite rows: the median bit for bit, the
  trimmed mean up to float rounding; the gradient is the rank indicator); Krum as the
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
