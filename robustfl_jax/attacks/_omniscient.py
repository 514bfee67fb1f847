"""Omniscient attacks built from honest statistics: ALIE, IPM and Mimic."""

from __future__ import annotations

import functools
import math
import statistics
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax.scipy import special

from robustfl_jax.attacks import _common
from robustfl_jax.attacks._registry import register_attack

Array = jax.Array


Z_FORMULAS = ("paper", "blades")
STATS_SOURCES = ("honest", "byzantine")


def _check_choice(fn: str, field: str, value: str, choices) -> str:
  if value not in choices:
    raise ValueError(f"{fn}: {field}={value!r} is not known; choose one of "
                     f"{choices}.")
  return value


def alie_z_max(num_clients: int, num_byzantine: int,
               formula: str = "paper") -> float:
  """ALIE's ``z_max`` (Baruch et al. 2019, Algorithm 1).

  ``s = floor(n / 2 + 1) - f`` is the number of honest workers the attacker
  needs on its side for a majority. Two formulas are offered:

  * ``"paper"`` (default): Algorithm 1 of the paper, "set ``z_max`` such that
    ``Phi(z) < (n - s) / n``": ``z_max = Phi^-1((n - s) / n)``. The authors'
    public code (``malicious.py``) uses the same quantile. For ``(n, f) =
    (20, 4)``: ``s = 7``, ``z_max = Phi^-1(13 / 20) = 0.385``; for
    ``(50, 10)``: ``Phi^-1(34 / 50) = 0.4677``.
  * ``"blades"``: ``z_max = Phi^-1((n - f - s) / (n - f))``, the quantile
    among the honest workers only (Blades, FLPoison; this library's default
    before). It is smaller: 0.157 for (20, 4), 0.2533 for (50, 10), and
    negative (a sign flip) when few workers are Byzantine, e.g. (10, 1).

  The paper's text is the reference for the default; the difference is
  tested (``tests/attacks/test_attacks_omniscient.py``).

  Args:
    num_clients: ``n`` >= 1.
    num_byzantine: ``f`` with ``0 <= f <= n``.
    formula: ``"paper"`` or ``"blades"``.

  Returns:
    ``z_max`` as a Python float. ``s`` is clamped so that the quantile stays
    finite: to ``[1, n - 1]`` (``"paper"``) or ``[1, n - f - 1]``
    (``"blades"``; a Byzantine majority needs no supporter); with fewer than
    two honest workers ``z_max = 0``.

  Raises:
    ValueError: if ``n < 1``, ``f`` is outside ``[0, n]`` or ``formula`` is
      unknown.
  """
  n = _common.static_int("alie_z_max", "num_clients", num_clients, minimum=1)
  f = _common.static_int("alie_z_max", "num_byzantine", num_byzantine)
  _check_choice("alie_z_max", "z_formula", formula, Z_FORMULAS)
  if f > n:
    raise ValueError(
        f"alie_z_max needs num_byzantine <= num_clients; got f={f}, n={n}.")
  honest = n - f
  if honest < 2:
    return 0.0
  pool = n if formula == "paper" else honest
  s = min(max(math.floor(n / 2 + 1) - f, 1), pool - 1)
  return statistics.NormalDist().inv_cdf((pool - s) / pool)


def _alie_z_traced(num_clients: int, num_byzantine: Array, dtype: Any,
                   formula: str) -> Array:
  """``alie_z_max`` for a traced Byzantine count (same formula, in jnp)."""
  n = jnp.asarray(num_clients, dtype)
  f = num_byzantine.astype(dtype)
  honest = n - f
  pool = n if formula == "paper" else honest
  s = jnp.clip(jnp.floor(n / 2 + 1) - f, 1, jnp.maximum(pool - 1, 1))
  z = special.ndtri((pool - s) / jnp.maximum(pool, 1))
  return jnp.where(honest >= 2, z, 0.0)


@register_attack()
def alie(key: Optional[Array], updates: Array, byzantine_mask: Array,
         z: Optional[float] = None, num_byzantine: Optional[int] = None,
         z_formula: str = "paper", stats_from: str = "honest") -> Array:
  """"A Little Is Enough" (ALIE): every Byzantine row sends ``mean - z * std``.

  The attacker moves each coordinate by ``z`` standard deviations, small
  enough that the crafted value still looks like an honest one to median- and
  distance-based rules, so that with ``f`` colluders it outvotes ``s`` honest
  clients. ``z`` defaults to ``z_max`` by ``z_formula`` (see
  :func:`alie_z_max`; ``"paper"``, Algorithm 1's ``Phi(z) < (n - s) / n``, is
  the default), computed from ``num_byzantine`` if given, else from the
  mask's count (so a traced mask works).

  Statistics (``stats_from``): ``"honest"`` (default) takes mean and std over
  the honest rows (the omniscient form of Blades and FLPoison);
  ``"byzantine"`` over the Byzantine clients' own (honestly computed)
  updates, as the paper's Algorithm 1 and the authors' ``malicious.py`` do:
  the attacker estimates the honest distribution from the workers it
  corrupts. With one Byzantine row its std is 0 and it sends its own update.
  We keep the omniscient statistics as the default so that the other
  experiments stay comparable; this departs from the paper (tested).

  Sign convention: the paper lets the attacker pick any value in
  ``(mean - z std, mean + z std)``; we use ``mean - z * std``, as the
  authors' code does. Pass a negative ``z`` for ``mean + |z| std``.

  References:
    M. Baruch, G. Baruch, Y. Goldberg. A Little Is Enough: Circumventing
    Defenses For Distributed Learning. NeurIPS 2019 (Algorithm 1).

  Args:
    key: unused.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.
    z: the number of standard deviations; ``None`` for ``z_max``.
    num_byzantine: static ``f`` for ``z_max``; ``None`` counts the mask
      (ignored when ``z`` is given).
    z_formula: ``"paper"`` or ``"blades"`` (see :func:`alie_z_max`).
    stats_from: ``"honest"`` or ``"byzantine"`` rows.

  Returns:
    ``[n, d]`` updates; all Byzantine rows equal ``mean - z * std`` where mean
    and std (population, ddof=0) are per coordinate over the rows of
    ``stats_from``.

  Raises:
    ValueError: if ``num_byzantine`` is given and not in ``[0, n]``, or an
      unknown ``z_formula`` / ``stats_from``.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: mean and std are taken
    over all rows (the attacker's own updates). One honest row (honest
    statistics): std is 0 and the Byzantine rows copy it.
  """
  del key
  updates, byzantine_mask = _common.check_inputs("alie", updates, byzantine_mask)
  _check_choice("alie", "z_formula", z_formula, Z_FORMULAS)
  _check_choice("alie", "stats_from", stats_from, STATS_SOURCES)
  n = updates.shape[0]
  if z is None and num_byzantine is not None:
    f = _common.static_int("alie", "num_byzantine", num_byzantine)
    if f > n:
      raise ValueError(
          f"alie needs num_byzantine <= n; got num_byzantine={f}, n={n}.")
    z = alie_z_max(n, f, z_formula)
  return _alie(updates, byzantine_mask, z, z_formula, stats_from)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _alie(updates: Array, byzantine_mask: Array, z: Any, z_formula: str,
          stats_from: str) -> Array:
  ct = _common.compute_dtype(updates.dtype)
  x = updates.astype(ct)
  if z is None:
    z = _alie_z_traced(updates.shape[0], jnp.sum(byzantine_mask), ct,
                       z_formula)
  if stats_from == "honest":
    mean, std = _common.honest_mean_and_std(x, byzantine_mask)
  else:
    rows = jnp.where(jnp.any(byzantine_mask), byzantine_mask,
                     jnp.ones_like(byzantine_mask))
    mean = _common.masked_mean(x, rows)
    std = _common.masked_std(x, rows, mean)
  return _common.replace_rows(updates, byzantine_mask, mean - jnp.asarray(z, ct) * std)


@register_attack()
def ipm(key: Optional[Array], updates: Array, byzantine_mask: Array,
        epsilon: Any = 0.1) -> Array:
  """Inner-product manipulation (IPM): every Byzantine row sends ``-epsilon * mean``.

  With a small ``epsilon`` the crafted rows are close to the honest ones, yet
  they pull the aggregate's inner product with the true gradient towards or
  below zero. (Xie et al. use ``epsilon = 0.1`` against median-like rules and a
  large ``epsilon`` against the mean.)

  References:
    C. Xie, O. Koyejo, I. Gupta. Fall of Empires: Breaking Byzantine-tolerant
    SGD by Inner Product Manipulation. UAI 2019 / PMLR 115, 2020.

  Args:
    key: unused.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.
    epsilon: scale of the reversed honest mean.

  Returns:
    ``[n, d]`` updates; Byzantine rows equal ``-epsilon * honest mean``.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: the mean of all rows.
  """
  del key
  updates, byzantine_mask = _common.check_inputs("ipm", updates, byzantine_mask)
  ct = _common.compute_dtype(updates.dtype)
  x = updates.astype(ct)
  mean = _common.masked_mean(x, _common.reference_mask(byzantine_mask))
  return _common.replace_rows(updates, byzantine_mask, -jnp.asarray(epsilon, ct) * mean)


def mimic_target(updates: Array, byzantine_mask: Array) -> Array:
  """The row Mimic copies: the honest row farthest along the top principal axis.

  ``i* = argmax_{i honest} |z^T (u_i - mean)|`` with ``z`` the top eigenvector
  of the honest covariance ``sum_i (u_i - mean)(u_i - mean)^T``. It is computed
  exactly through the ``[n, n]`` Gram matrix ``C C^T`` of the centred honest
  rows: if ``v`` is its top eigenvector then ``C z`` is proportional to ``v``,
  so ``i* = argmax |v_i|``.

  Returns:
    An int32 scalar index (a traced array under jit).
  """
  updates, byzantine_mask = _common.check_inputs("mimic_target", updates, byzantine_mask)
  return _mimic_target(updates, byzantine_mask)


@jax.jit
def _mimic_target(updates: Array, byzantine_mask: Array) -> Array:
  x = updates.astype(_common.compute_dtype(updates.dtype))
  rows = _common.reference_mask(byzantine_mask)
  centred = jnp.where(rows[:, None], x - _common.masked_mean(x, rows), 0)
  gram = jnp.matmul(centred, centred.T, precision=jax.lax.Precision.HIGHEST)
  _, eigenvectors = jnp.linalg.eigh(gram)
  top = jnp.abs(eigenvectors[:, -1])
  return jnp.argmax(jnp.where(rows, top, -1.0)).astype(jnp.int32)


@register_attack(exclude=("target",))
def mimic(key: Optional[Array], updates: Array, byzantine_mask: Array,
          target: Optional[int] = None) -> Array:
  """Mimic: every Byzantine row copies one honest client's update.

  Copying a real update cannot be told apart from honesty, but it
  over-represents that client, which under data heterogeneity biases the
  aggregate. The paper's heuristic (``target=None``) copies the honest row that
  lies farthest along the honest updates' top principal direction (see
  :func:`mimic_target`); the paper estimates that direction online over the
  first rounds, here it is computed exactly from the current round.

  References:
    S. P. Karimireddy, L. He, M. Jaggi. Byzantine-Robust Learning on
    Heterogeneous Datasets via Bucketing. ICLR 2022 (Section 3, "mimic").

  Args:
    key: unused.
    updates: ``[n, d]`` client updates.
    byzantine_mask: ``bool[n]``.
    target: static row index to copy; ``None`` for the paper's choice. If the
      target row is itself Byzantine its (incoming) update is copied.

  Returns:
    ``[n, d]`` updates; all Byzantine rows equal the target row.

  Raises:
    ValueError: if ``target`` is not an int in ``[0, n)``.

  Edge cases:
    No Byzantine rows: unchanged. All rows Byzantine: the heuristic runs over
    all rows. All honest rows equal: any of them (the first) is copied.
  """
  del key
  updates, byzantine_mask = _common.check_inputs("mimic", updates, byzantine_mask)
  n = updates.shape[0]
  if target is None:
    index = mimic_target(updates, byzantine_mask)
  else:
    index = _common.static_int("mimic", "target", target)
    if index >= n:
      raise ValueError(f"mimic needs 0 <= target < n; got target={index}, n={n}.")
  return _common.replace_rows(updates, byzantine_mask, updates[index])
