"""Aggregation rules, jitted, against plain NumPy implementations of the same rules.

``python scripts/benchmark.py --only=aggregators``.

NumPy baselines are what a library without XLA would write: ``np.median``,
``np.sort`` along the client axis for the trimmed mean and the
Meamed/Bulyan coordinate phase, and a loop over pairs for the distances of
Krum, Multi-Krum, Bulyan and NNM ("a NumPy pairwise implementation").
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from robustfl_jax import aggregators as agg
from robustfl_jax.experiments.benchmarks.base import best_time, resolve_settings

DEFAULT_SHAPES = ((16, 100_000), (64, 2**20), (128, 100_000), (256, 100_000),
                  (512, 100_000), (1024, 100_000))
QUICK_SHAPES = ((16, 2_000), (32, 5_000))
# The order-statistics rules: past ``all_rules_max_n`` clients only these run
# (the NumPy pairwise loops of Krum, Multi-Krum, NNM take minutes there).
ORDER_STATISTICS_RULES = ("mean", "coordinate_median", "trimmed_mean", "meamed", "bulyan")
# ``rules``: names from :func:`jax_rules` (None: all); ``repeats``: timed
# runs of the jitted rule, ``numpy_repeats`` of the NumPy one (best kept),
# but no further NumPy run once they took ``numpy_budget_s``: one NumPy call
# is noisy (the sort-based trimmed mean at 256 x 1e5 took 0.12 s in one run
# of the command and 0.48 s in the next).
DEFAULTS = {"shapes": DEFAULT_SHAPES, "rules": None, "repeats": 3,
            "numpy_repeats": 3, "numpy_budget_s": 2.0, "all_rules_max_n": 256}
QUICK = {"shapes": QUICK_SHAPES}
GM_ITERS = 8
CC_ITERS = 3


# ---------------------------------------------------------------- NumPy rules
def _np_pairwise(u):
  n = len(u)
  d = np.zeros((n, n), np.float64)
  for i in range(n):
    for j in range(i + 1, n):
      diff = u[i] - u[j]
      d[i, j] = d[j, i] = float(diff @ diff)
  return d


def _np_krum_scores(d, f, rows):
  k = len(rows) - f - 2
  sub = d[np.ix_(rows, rows)]
  return np.array([np.sort(np.delete(sub[i], i))[:max(k, 0)].sum() for i in range(len(rows))])


def _np_pick(scores, d, rows):
  """Smallest Krum score; ties by the sum of distances (as robustfl_jax)."""
  tied = np.flatnonzero(scores == scores.min())
  sub = d[np.ix_(rows, rows)]
  return int(tied[np.argmin(sub[tied].sum(axis=1))])


def _np_mean_nearest(s, center, keep):
  idx = np.argsort(np.abs(s - center), axis=0)[:keep]
  return np.take_along_axis(s, idx, axis=0).mean(axis=0)


def np_rules(f: int) -> dict[str, Callable]:
  """Each rule in NumPy for ``f`` Byzantine rows: ``[n, d] -> [d]`` (NNM: ``[n, d]``)."""
  def trimmed(u):
    return np.sort(u, axis=0)[f:len(u) - f].mean(axis=0)

  def meamed(u):
    return _np_mean_nearest(u, np.median(u, axis=0), len(u) - f)

  def krum(u):
    d, rows = _np_pairwise(u), list(range(len(u)))
    return u[_np_pick(_np_krum_scores(d, f, rows), d, rows)]

  def multi_krum(u):
    scores = _np_krum_scores(_np_pairwise(u), f, list(range(len(u))))
    return u[np.argsort(scores)[:len(u) - f]].mean(axis=0)

  def bulyan(u):
    d = _np_pairwise(u)
    remaining, selected = list(range(len(u))), []
    for _ in range(len(u) - 2 * f):
      best = remaining[_np_pick(_np_krum_scores(d, f, remaining), d, remaining)]
      selected.append(best)
      remaining.remove(best)
    s = u[selected]
    return _np_mean_nearest(s, np.median(s, axis=0), len(s) - 2 * f)

  def geometric_median(u):
    z = u.mean(axis=0)
    for _ in range(GM_ITERS):
      w = 1.0 / np.maximum(1e-5, np.linalg.norm(u - z, axis=1))
      z = (w / w.sum()) @ u
    return z

  def centered_clipping(u):
    v = np.zeros(u.shape[1], u.dtype)
    for _ in range(CC_ITERS):
      diff = u - v
      norms = np.linalg.norm(diff, axis=1)
      v = v + (diff * np.minimum(1.0, 10.0 / np.maximum(norms, 1e-12))[:, None]).mean(axis=0)
    return v

  def nnm(u):
    d = _np_pairwise(u)
    return np.stack([u[np.argsort(d[i])[:len(u) - f]].mean(axis=0) for i in range(len(u))])

  return {
      "mean": lambda u: u.mean(axis=0),
      "coordinate_median": lambda u: np.median(u, axis=0),
      "trimmed_mean": trimmed, "meamed": meamed, "krum": krum, "multi_krum": multi_krum,
      "bulyan": bulyan, "geometric_median": geometric_median,
      "centered_clipping": centered_clipping, "nnm": nnm,
  }


def jax_rules(f: int) -> dict[str, Callable]:
  """The library's rules with the NumPy versions' settings, for ``f``."""
  return {
      "mean": agg.mean,
      "coordinate_median": agg.coordinate_median,
      "trimmed_mean": lambda u: agg.trimmed_mean(u, f),
      "meamed": lambda u: agg.meamed(u, f),
      "krum": lambda u: agg.krum(u, f),
      "multi_krum": lambda u: agg.multi_krum(u, f, u.shape[0] - f),
      "bulyan": lambda u: agg.bulyan(u, f),
      "geometric_median": lambda u: agg.geometric_median(u, max_iter=GM_ITERS, ftol=0.0),
      "centered_clipping": lambda u: agg.centered_clipping(u, None, 10.0, CC_ITERS),
      "nnm": lambda u: agg.nnm(u, f),
  }


# ---------------------------------------------------------------- the suite
def run(settings: Optional[Mapping[str, Any]] = None, *, quick: bool = False,
        log: Callable[[str], None] = print, **overrides) -> dict:
  """Times every rule at every shape.

  Args:
    settings: any of :data:`DEFAULTS`' names.
    quick: small shapes that only check that everything runs (seconds).
    log: receives one line per rule and shape.
    **overrides: settings by name, winning over ``settings`` and ``quick``.

  Returns:
    A JSON-able dict: ``suite``, ``backend``, ``device`` and ``rows`` (one a
    rule and shape: times, speedup, compile time, largest difference).
  """
  s = resolve_settings(DEFAULTS, QUICK, settings, quick, overrides)
  repeats, numpy_repeats = int(s["repeats"]), int(s["numpy_repeats"])
  rows = []
  for n, d in s["shapes"]:
    f = max(1, (n - 3) // 8)  # Bulyan needs n >= 4f + 3
    u_np = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    u = jax.device_put(jnp.asarray(u_np))
    jr, nr = jax_rules(f), np_rules(f)
    names = s["rules"] or list(jr)
    if n > int(s["all_rules_max_n"]):
      names = [r for r in names if r in ORDER_STATISTICS_RULES]
    for name in names:
      fn = jax.jit(jr[name])
      start = time.perf_counter()
      compiled = fn.lower(u).compile()
      compile_s = time.perf_counter() - start
      compiled(u).block_until_ready()  # warm-up
      jax_s, _ = best_time(lambda: compiled(u), repeats, block=True)
      np_s, _ = best_time(lambda: nr[name](u_np), numpy_repeats,
                          budget_s=float(s["numpy_budget_s"]))
      # Same rule, same answer: the comparison is only meaningful if it holds.
      diff = float(np.max(np.abs(np.asarray(compiled(u), np.float64) - nr[name](u_np))))
      row = {"rule": name, "n": n, "d": d, "f": f, "jax_s": jax_s, "numpy_s": np_s,
             "speedup": np_s / jax_s, "compile_s": compile_s, "max_abs_diff": diff}
      rows.append(row)
      log(f"  {name:18s} n={n:<4d} d={d:<8d} jax {jax_s:8.4f}s  numpy {np_s:8.4f}s  "
          f"x{np_s / jax_s:7.1f}  (compile {compile_s:.2f}s, |diff| {diff:.1e})")
  return {"suite": "aggregators", "backend": jax.default_backend(),
          "device": str(jax.devices()[0]), "rows": rows}


def to_markdown(result: dict) -> str:
  """The speed-up table of :func:`run`'s result (a column per shape)."""
  shapes = sorted({(r["n"], r["d"]) for r in result["rows"]})
  rules = list(dict.fromkeys(r["rule"] for r in result["rows"]))
  by = {(r["rule"], r["n"], r["d"]): r for r in result["rows"]}
  head = "| rule | " + " | ".join(f"n={n}, d={d}" for n, d in shapes) + " |"
  lines = [f"Speed-up over NumPy (NumPy time / jitted time; backend: {result['backend']}).",
           "", head, "|---" * (len(shapes) + 1) + "|"]
  for rule in rules:
    cells = []
    for n, d in shapes:
      r = by.get((rule, n, d))
      cells.append("" if r is None else f"{r['speedup']:.1f}x ({r['jax_s'] * 1e3:.0f} ms)")
    lines.append(f"| {rule} | " + " | ".join(cells) + " |")
  lines += ["", "Compile time (s) of the jitted rule:", "", head,
            "|---" * (len(shapes) + 1) + "|"]
  for rule in rules:
    cells = [("" if by.get((rule, n, d)) is None else f"{by[(rule, n, d)]['compile_s']:.1f}")
             for n, d in shapes]
    lines.append(f"| {rule} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def headline(result: dict) -> str:
  """One line for the README: the order-statistics rules at the most clients
  measured and Krum at the widest shape."""
  rows = result["rows"]
  n, d = max(((r["n"], r["d"]) for r in rows), key=lambda s: s[0] * s[1])
  parts = [f"at n={n}, d={d}: " + ", ".join(
      f"{r['rule']} {r['speedup']:.1f}x" for r in rows if (r["n"], r["d"]) == (n, d)
      and r["rule"] in ("coordinate_median", "trimmed_mean", "krum"))]
  krum = [r for r in rows if r["rule"] == "krum" and (r["n"], r["d"]) != (n, d)]
  if krum:
    r = max(krum, key=lambda r: r["n"] * r["d"])
    parts.append(f"krum at n={r['n']}, d={r['d']}: {r['speedup']:.1f}x")
  return "; ".join(parts) + " NumPy's speed"
