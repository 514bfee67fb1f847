r"""Coreset and nearest-neighbour timings: JAX against NumPy implementations.

``python scripts/benchmark.py --only=coreset``; other sizes through
``run(num_points=..., dim=...)``.

Two tasks (the issue's targets):

* approximate greedy coreset of 10% of 100,000 x 1024 features (random
  projection to 128 dims, 10 starting points; a mixture of 50 Gaussian
  clusters, as patch features cluster), `robustfl_jax.patchcore.greedy_coreset`
  twice: with its default `method="dense"` (one pass over all points per
  step, the reference's computation) and with `method="auto"` (exact leaf
  pruning, which pays off on clustered features), against two NumPy
  versions of the dense algorithm: "numpy_reference" computes
  distances as the PatchCore reference's `_compute_batchwise_differences`
  does (row norms recomputed at every step), "numpy_tuned" precomputes the
  norms (one matrix-vector product per step). NumPy runs for
  `numpy_iterations` greedy steps and its time is scaled to the full count
  (the per-step cost is constant); JAX runs all steps. The selections of
  JAX and NumPy are compared on the timed prefix.
* nearest-neighbour scores of 10,000 queries against a 20,000-patch bank,
  `nearest_neighbor_scores` against NumPy with the same blockwise
  matrix-product formulation.

Times are the best of `repeats` runs after one warm-up (JAX compile excluded,
reported separately). On a shared machine, run it when the CPUs are idle:
both sides slow down under contention, but not always equally.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from robustfl_jax.experiments.benchmarks.base import best_time, resolve_settings
from robustfl_jax.patchcore import coreset, nearest_neighbor

DEFAULTS = {"num_points": 100_000, "dim": 1024, "fraction": 0.1, "projection_dim": 128,
            "num_starts": 10, "numpy_iterations": 1000, "num_queries": 10_000,
            "bank_size": 20_000, "nn_dim": 1024, "block_size": 1024, "repeats": 2, "seed": 0}
# Tiny sizes for `scripts/benchmark.py --quick` (seconds: checks that it runs).
QUICK = {"num_points": 3000, "dim": 200, "numpy_iterations": 50,
         "num_queries": 300, "bank_size": 500, "nn_dim": 32, "repeats": 1}


def numpy_greedy(points: np.ndarray, starts: np.ndarray, num_steps: int, tuned: bool) -> np.ndarray:
  """The approximate greedy rule in NumPy on already-projected points."""

  def distances(a, b):  # sqrt(clamp(|a|^2 - 2 a.b + |b|^2)), as the reference computes it
    a_sq = norms if tuned else np.einsum("ij,ij->i", a, a)
    return np.sqrt(np.maximum(a_sq[:, None] - 2.0 * (a @ b.T) + np.einsum("ij,ij->i", b, b)[None],
                              0.0))

  norms = np.einsum("ij,ij->i", points, points)
  min_dist = distances(points, points[starts]).mean(axis=1)
  selected = np.empty(num_steps, np.int64)
  for i in range(num_steps):
    chosen = int(np.argmax(min_dist))
    selected[i] = chosen
    min_dist = np.minimum(min_dist, distances(points, points[chosen:chosen + 1])[:, 0])
    min_dist[chosen] = 0.0
  return selected


def numpy_nearest(queries, bank, block_size):
  """Distance of each query to its nearest bank row, blockwise, in NumPy."""
  bank_sq = np.einsum("ij,ij->i", bank, bank)
  out = np.empty(len(queries), np.float32)
  for lo in range(0, len(queries), block_size):
    q = queries[lo:lo + block_size]
    sq = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * (q @ bank.T) + bank_sq[None]
    out[lo:lo + block_size] = np.sqrt(np.maximum(sq.min(axis=1), 0.0))
  return out


def run(settings: Optional[Mapping[str, Any]] = None, *, quick: bool = False,
        log: Callable[[str], None] = print, **overrides) -> dict[str, Any]:
  """Runs both benchmarks.

  Args:
    settings: any of :data:`DEFAULTS`' names.
    quick: tiny sizes that only check that everything runs (seconds).
    log: receives a line as each task is timed.
    **overrides: settings by name, winning over ``settings`` and ``quick``.

  Returns:
    A JSON-able dict: ``params`` (the settings used), ``device``,
    ``cpu_count``, ``coreset`` and ``nearest_neighbor`` (timings, ratios and
    agreement checks).
  """
  p = resolve_settings(DEFAULTS, QUICK, settings, quick, overrides)
  rng = np.random.default_rng(p["seed"])
  result: dict[str, Any] = {"params": p, "device": str(jax.devices()[0]),
                            "cpu_count": os.cpu_count()}

  # Coreset.
  features = rng.normal(size=(p["num_points"], p["dim"])).astype(np.float32)
  features += 3.0 * rng.normal(size=(50, p["dim"])).astype(np.float32)[
    rng.integers(0, 50, p["num_points"])]  # clustered, as patch features are
  num_selected = int(p["fraction"] * p["num_points"])
  key = jax.random.key(p["seed"])
  feats = jnp.asarray(features)
  start = time.perf_counter()
  jax_fn = lambda method="dense": np.asarray(coreset.greedy_coreset(  # noqa: E731
    key, feats, num_selected, p["projection_dim"], p["num_starts"], method=method))
  jax_fn()
  compile_and_first = time.perf_counter() - start
  dense_time, dense_idx = best_time(jax_fn, p["repeats"])
  jax_fn("auto")
  jax_time, jax_idx = best_time(lambda: jax_fn("auto"), p["repeats"])
  # Same projection and starting points for NumPy (drawn as greedy_coreset draws them).
  project_key, start_key = jax.random.split(key)
  if p["projection_dim"] < p["dim"]:
    projection = np.asarray(jax.random.normal(project_key, (p["dim"], p["projection_dim"]))
                            / np.sqrt(p["projection_dim"]))
  else:  # greedy_coreset skips the projection then
    projection = np.eye(p["dim"], dtype=np.float32)
  starts = np.asarray(jax.random.choice(start_key, p["num_points"], (p["num_starts"],),
                                        replace=False))
  steps = min(p["numpy_iterations"], num_selected)
  coreset_res = {"num_points": p["num_points"], "dim": p["dim"], "num_selected": num_selected,
                 "jax_seconds": dense_time, "jax_first_call_seconds": compile_and_first,
                 "jax_auto_seconds": jax_time,
                 "speedup_auto_vs_dense": dense_time / jax_time,
                 "same_set_auto_vs_dense": len(set(jax_idx.tolist()) & set(dense_idx.tolist()))
                                           / num_selected}
  for variant in ("numpy_reference", "numpy_tuned"):
    def numpy_fn(variant=variant):
      t0 = time.perf_counter()
      points = features @ projection
      project_time = time.perf_counter() - t0
      t1 = time.perf_counter()
      idx = numpy_greedy(points, starts, steps, tuned=variant == "numpy_tuned")
      loop_time = time.perf_counter() - t1
      return project_time + loop_time * num_selected / steps, idx
    (_, (estimate, np_idx)) = best_time(numpy_fn, 1)
    coreset_res[f"{variant}_seconds"] = estimate
    coreset_res[f"speedup_vs_{variant}"] = estimate / dense_time
    coreset_res[f"auto_speedup_vs_{variant}"] = estimate / jax_time
    coreset_res[f"agreement_{variant}"] = float(np.mean(np_idx == dense_idx[:steps]))
  coreset_res["numpy_timed_steps"] = steps
  result["coreset"] = coreset_res
  log(f"  coreset: JAX dense {dense_time:.2f}s, auto {jax_time:.2f}s, NumPy "
      f"{coreset_res['numpy_reference_seconds']:.2f}s (reference-style)")

  # Nearest-neighbour scoring.
  queries = rng.normal(size=(p["num_queries"], p["nn_dim"])).astype(np.float32)
  bank = rng.normal(size=(p["bank_size"], p["nn_dim"])).astype(np.float32)
  q, b = jnp.asarray(queries), jnp.asarray(bank)
  nn_fn = lambda: np.asarray(nearest_neighbor.nearest_neighbor_scores(  # noqa: E731
    q, b, 1, p["block_size"]))
  start = time.perf_counter()
  nn_fn()
  nn_first = time.perf_counter() - start
  nn_time, nn_scores = best_time(nn_fn, p["repeats"])
  np_time, np_scores = best_time(lambda: numpy_nearest(queries, bank, p["block_size"]),
                                 p["repeats"])
  result["nearest_neighbor"] = {
    "num_queries": p["num_queries"], "bank_size": p["bank_size"], "dim": p["nn_dim"],
    "jax_seconds": nn_time, "jax_first_call_seconds": nn_first, "numpy_seconds": np_time,
    "speedup_vs_numpy": np_time / nn_time,
    "max_abs_difference": float(np.max(np.abs(nn_scores - np_scores)))}
  return result


def to_markdown(result: dict[str, Any]) -> str:
  """A markdown table of :func:`run`'s result."""
  c, n = result["coreset"], result["nearest_neighbor"]
  lines = [
    f"Coreset and nearest-neighbour benchmark ({result['device']}, {result['cpu_count']} CPUs)",
    "",
    "| task | JAX (s) | NumPy (s) | speedup | notes |",
    "|---|---|---|---|---|",
    f"| approx. greedy coreset {c['num_selected']} of {c['num_points']} x {c['dim']} "
    f"| {c['jax_seconds']:.2f} | {c['numpy_reference_seconds']:.2f} (reference-style) "
    f"| {c['speedup_vs_numpy_reference']:.2f}x | NumPy timed on {c['numpy_timed_steps']} steps, "
    f"scaled; same picks on {100 * c['agreement_numpy_reference']:.0f}% of them |",
    f"| same, NumPy with precomputed norms | {c['jax_seconds']:.2f} "
    f"| {c['numpy_tuned_seconds']:.2f} | {c['speedup_vs_numpy_tuned']:.2f}x "
    f"| JAX first call (compile + one run) {c['jax_first_call_seconds']:.2f}s |",
    f"| same, JAX method='auto' (leaf pruning) vs reference-style | {c['jax_auto_seconds']:.2f} "
    f"| {c['numpy_reference_seconds']:.2f} | {c['auto_speedup_vs_numpy_reference']:.2f}x "
    f"| {c['speedup_auto_vs_dense']:.2f}x JAX dense; "
    f"{100 * c['same_set_auto_vs_dense']:.1f}% of its patches |",
    f"| same, JAX method='auto' vs precomputed norms | {c['jax_auto_seconds']:.2f} "
    f"| {c['numpy_tuned_seconds']:.2f} | {c['auto_speedup_vs_numpy_tuned']:.2f}x | |",
    f"| 1-NN scores, {n['num_queries']} queries vs {n['bank_size']} bank x {n['dim']} "
    f"| {n['jax_seconds']:.2f} | {n['numpy_seconds']:.2f} | {n['speedup_vs_numpy']:.2f}x "
    f"| max abs diff {n['max_abs_difference']:.1e} |",
  ]
  return "\n".join(lines) + "\n"
