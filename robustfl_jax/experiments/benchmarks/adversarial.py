"""Adversarial benchmark: PGD-10 as one jitted loop vs a Python loop of steps.

``python scripts/benchmark.py --only=adversarial``.

Both sides compute the same PGD-10 (L-inf, epsilon 0.1, step 0.025, random
start) on the same batch: ``robustfl_jax.adversarial.pgd`` (from
:mod:`robustfl_jax.adversarial.evasion`) runs the ten steps
in one ``lax.fori_loop`` inside one jitted call; the baseline is the way
PyTorch-style code (the seed tutorial, advertorch, torchattacks) runs it: a
Python ``for`` over steps, each one a call of a jitted single step (gradient,
sign step, projection), so it pays one dispatch and one host round trip per
step. Models: the MLP 64-128-10 on digits and the Romoa MNIST CNN on 8x8
digit images. Timings are the best of ``repeats`` runs (a shared CPU only
adds noise upwards), in wall-clock and in process CPU time; the ratio
(loop time / fused time) is what to compare across machines.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from robustfl_jax import adversarial
from robustfl_jax import data as data_lib
from robustfl_jax import models
from robustfl_jax.experiments.benchmarks.base import resolve_settings

DEFAULTS = {"epsilon": 0.1, "num_steps": 10, "repeats": 3, "calls": 50,
            "batch_sizes": (8, 64, 450)}
QUICK = {"repeats": 1, "calls": 2, "batch_sizes": (64,)}


def _best_of(fn, repeats, calls, budget_s=1.0):
  """Best (wall, process-CPU) seconds per call over ``repeats`` runs.

  Slow cases make fewer calls per run (about ``budget_s`` seconds each). The
  process CPU time is reported too because on a shared machine the wall
  clock mostly measures the neighbours.
  """
  jax.block_until_ready(fn())  # compile
  t = time.perf_counter()
  jax.block_until_ready(fn())
  once = time.perf_counter() - t
  calls = int(max(1, min(calls, budget_s / max(once, 1e-9))))
  best_wall = best_cpu = float("inf")
  for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    for _ in range(calls):
      out = fn()
    jax.block_until_ready(out)
    best_wall = min(best_wall, (time.perf_counter() - t) / calls)
    best_cpu = min(best_cpu, (time.process_time() - c) / calls)
  return best_wall, best_cpu


def _time_model(name, model, params, x, y, epsilon, num_steps, repeats, calls):
  logits_fn = adversarial.eval_logits_fn(model.apply)
  step_size = 2.5 * epsilon / num_steps
  key = jax.random.PRNGKey(0)

  def fused():
    return adversarial.pgd(logits_fn, params, x, y, key, epsilon=epsilon,
                           step_size=step_size, num_steps=num_steps)

  @jax.jit
  def start(x, key):
    return adversarial.project(
        adversarial.evasion.random_start(key, x, epsilon, "linf"), x, epsilon,
        "linf")

  @jax.jit
  def one_step(x_adv, x, y):
    return adversarial.pgd_step(logits_fn, params, x_adv, x, y,
                                epsilon=epsilon, step_size=step_size)

  def loop():
    x_adv = start(x, key)
    for _ in range(num_steps):
      x_adv = one_step(x_adv, x, y)
    return x_adv

  same = bool(np.allclose(np.asarray(fused()), np.asarray(loop()), atol=1e-6))
  fused_wall, fused_cpu = _best_of(fused, repeats, calls)
  loop_wall, loop_cpu = _best_of(loop, repeats, calls)
  return {"model": name, "batch": int(x.shape[0]),
          "fused_ms": round(fused_wall * 1e3, 3),
          "loop_ms": round(loop_wall * 1e3, 3),
          "speedup": round(loop_wall / fused_wall, 2),
          "fused_cpu_ms": round(fused_cpu * 1e3, 3),
          "loop_cpu_ms": round(loop_cpu * 1e3, 3),
          "speedup_cpu": round(loop_cpu / max(fused_cpu, 1e-9), 2),
          "same_result": same}


def run(settings: Optional[Mapping[str, Any]] = None, *, quick: bool = False,
        log: Callable[[str], None] = print, **overrides) -> dict:
  """Times PGD fused vs looped for each model and batch size.

  Args:
    settings: any of :data:`DEFAULTS`' names.
    quick: one batch size and few calls: checks that everything runs.
    log: receives a line per model and batch size.
    **overrides: settings by name, winning over ``settings`` and ``quick``.

  Returns:
    A JSON-able dict: ``setting``, ``device``, ``num_devices`` and ``rows``
    (one a model and batch size).
  """
  settings = resolve_settings(DEFAULTS, QUICK, settings, quick, overrides)
  ds = data_lib.load_digits()
  rows = []
  mlp = models.MLP(hidden=(128,), num_classes=10)
  mlp_params = models.init_params(mlp, jax.random.PRNGKey(0), (64,))
  cnn = models.get("romoa_mnist_cnn", 10, (8, 8, 1))
  cnn_params = models.init_params(cnn, jax.random.PRNGKey(0), (8, 8, 1))
  for batch in settings["batch_sizes"]:
    x = jnp.asarray(ds.x_test[:batch])
    y = jnp.asarray(ds.y_test[:batch])
    for name, model, params, inputs in (
        ("MLP 64-128-10", mlp, mlp_params, x),
        ("Romoa MNIST CNN (8x8x1)", cnn, cnn_params, x.reshape(-1, 8, 8, 1))):
      row = _time_model(name, model, params, inputs, y, settings["epsilon"],
                        settings["num_steps"], settings["repeats"],
                        settings["calls"])
      rows.append(row)
      log(f"  {name}, batch {batch}: one jitted PGD {row['fused_ms']} ms, "
          f"loop of steps {row['loop_ms']} ms")
  return {"setting": (f"PGD-{settings['num_steps']}, L-inf eps "
                      f"{settings['epsilon']}, digits test batch"),
          "device": jax.devices()[0].device_kind,
          "num_devices": jax.device_count(), "rows": rows}


def to_markdown(result: dict) -> str:
  """A markdown table of :func:`run`'s result."""
  lines = [f"Adversarial ({result['setting']}; {result['device']}):", "",
           "| model | batch | one jitted PGD-10 (ms) | Python loop of jitted "
           "steps (ms) | ratio (wall) | ratio (process CPU time) | "
           "same result |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in result["rows"]:
    lines.append(f"| {r['model']} | {r['batch']} | {r['fused_ms']} | "
                 f"{r['loop_ms']} | {r['speedup']}x | {r['speedup_cpu']}x | "
                 f"{r['same_result']} |")
  return "\n".join(lines)
