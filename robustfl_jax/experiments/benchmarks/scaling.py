"""Scaling benchmark: aggregation sharded along the parameters vs gathered.

``python scripts/benchmark.py --only=scaling``.

For each device count ``D`` in ``devices`` (1, 2, 4) and each ``(C, d)`` in
``shapes`` ({(64, 2^22), (256, 2^20)}), every rule of ``rules`` is compiled
twice over a 1-D mesh of ``D`` devices with the ``[C, d]`` updates arriving
split over clients (as local training leaves them):

* **sharded**: what the round does
  (:func:`robustfl_jax.fl.sharding.aggregation_sharding`): resharded along
  ``d`` one column chunk at a time (:class:`~robustfl_jax.fl.sharding.
  ChunkedResharding`, an all-to-all per chunk) and aggregated chunk-locally
  / with summed partial Grams and norms (on one device: the plain rule);
* **gathered**: gathered whole onto every device (what a rule that cannot
  shard gets, and what every rule got before the parameter split).

Reported per device: ``memory_analysis()`` bytes (arguments + temporaries +
outputs) of the compiled aggregation, and the best wall-clock time of
``repeats`` calls after one warm-up call (``skip_time``: compile only,
nothing allocated). The machine's load averages (``os.getloadavg``) are
recorded at the start and the end, since times on a shared machine are
noisy. ``rfa`` (the geometric median with RFA's 4 Weiszfeld steps) stands
for the iterative rules: the default 100-step geometric median costs 25
times as many passes over the matrix. On CPU
the ``D`` devices are forced host devices
(``--xla_force_host_platform_device_count``), each count in its own
subprocess, so they share the machine's cores: the memory column is the
point there, the times only show the overhead of the split. On an
accelerator host the real devices are used (counts above the number
present are skipped).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from typing import Any, Callable, Mapping, Optional

from robustfl_jax.experiments import reporting
from robustfl_jax.experiments.benchmarks.base import best_time, resolve_settings

DEFAULTS = {
    "devices": (1, 2, 4),
    "shapes": ((64, 1 << 22), (256, 1 << 20)),
    "rules": ("coordinate_median", "krum", "rfa"),
    "num_byzantine": 3,
    "skip_time": False,
    "repeats": 3,
    "timeout_s": 3600,
}
QUICK = {"shapes": ((16, 1 << 14),), "rules": ("coordinate_median", "krum"),
         "repeats": 1, "timeout_s": 600}

_WORKER = ("import sys; from robustfl_jax.experiments.benchmarks import "
           "scaling; scaling.worker(sys.argv[1])")


def _per_device_bytes(compiled) -> int:
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.temp_size_in_bytes
             + m.output_size_in_bytes)


def measure(num_devices: int, shapes, rules, num_byzantine: int,
            repeats: int, skip_time: bool) -> list[dict]:
  """Rows of one device count, measured in this process (its first
  ``num_devices`` devices)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from robustfl_jax import aggregators  # pylint: disable=import-outside-toplevel
  from robustfl_jax.fl import sharding  # pylint: disable=import-outside-toplevel
  mesh = sharding.client_mesh(jax.devices()[:num_devices])
  arriving = sharding.client_sharding(mesh, 2)
  rows = []
  for num_clients, dim in shapes:
    if skip_time:  # compile only: no [C, d] is ever allocated
      updates = jax.ShapeDtypeStruct((num_clients, dim), jnp.float32,
                                     sharding=arriving)
    else:
      updates = jax.jit(
          lambda k, c=num_clients, n=dim: jax.random.normal(k, (c, n)),
          out_shardings=arriving)(jax.random.PRNGKey(0))
    for rule in rules:
      hp = {"num_byzantine": num_byzantine} if (
          "num_byzantine" in aggregators.RULES.hparams(rule)) else {}
      agg = aggregators.get(rule, num_clients=num_clients, **hp)
      state = jax.eval_shape(agg.init, jax.ShapeDtypeStruct((dim,),
                                                            jnp.float32))
      if not skip_time:
        state = agg.init(jnp.zeros((dim,)))
      row = {"devices": num_devices, "num_clients": num_clients, "dim": dim,
             "rule": rule, "matrix_bytes": num_clients * dim * 4}
      sharded = sharding.aggregation_sharding(mesh, rule)
      for mode, placed in (("sharded", sharded),
                           ("gathered", sharding.replicated(mesh))):
        def aggregate(u, s, placed=placed):
          plan = contextlib.nullcontext()
          if isinstance(placed, sharding.ChunkedResharding):
            plan = placed.plan()
          elif placed is not None:
            u = jax.lax.with_sharding_constraint(u, placed)
          with plan:
            return agg.update(u, s, key=jax.random.PRNGKey(1))[0]
        compiled = jax.jit(aggregate).lower(updates, state).compile()
        row[f"{mode}_bytes"] = _per_device_bytes(compiled)
        if not skip_time:
          jax.block_until_ready(compiled(updates, state))  # warm-up
          seconds, _ = best_time(lambda c=compiled: c(updates, state),
                                 repeats, block=True)
          row[f"{mode}_s"] = seconds
      rows.append(row)
      del agg, state
    del updates
  return rows


def worker(arguments: str) -> None:
  """Subprocess entry: measure and print the rows as one JSON line."""
  args = json.loads(arguments)
  rows = measure(**args)
  print("SCALING_ROWS " + json.dumps(rows), flush=True)


def _run_forced(num_devices: int, args: dict, timeout_s: float) -> list[dict]:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform"
                      f"_device_count={num_devices}").strip()
  args = dict(args, num_devices=num_devices)
  proc = subprocess.run([sys.executable, "-c", _WORKER, json.dumps(args)],
                        env=env, capture_output=True, text=True,
                        timeout=timeout_s)
  for line in proc.stdout.splitlines():
    if line.startswith("SCALING_ROWS "):
      return json.loads(line[len("SCALING_ROWS "):])
  raise RuntimeError(f"the {num_devices}-device scaling run failed "
                     f"(exit {proc.returncode}): {proc.stderr[-2000:]}")


def run(settings: Optional[Mapping[str, Any]] = None, *, quick: bool = False,
        log: Callable[[str], None] = print, **overrides) -> dict:
  """Measures every device count; returns ``{"settings", "backend",
  "rows"}`` (one row per device count, shape and rule)."""
  import jax  # pylint: disable=import-outside-toplevel
  s = resolve_settings(DEFAULTS, QUICK, settings, quick, overrides)
  backend = jax.default_backend()
  args = {"shapes": [list(x) for x in s["shapes"]], "rules": list(s["rules"]),
          "num_byzantine": int(s["num_byzantine"]),
          "repeats": int(s["repeats"]), "skip_time": bool(s["skip_time"])}
  load_start = os.getloadavg()
  rows = []
  for num_devices in s["devices"]:
    if backend == "cpu":
      found = _run_forced(int(num_devices), args, s["timeout_s"])
    elif num_devices <= jax.device_count():
      found = measure(int(num_devices), **args)
    else:
      log(f"[scaling] {num_devices} devices: only {jax.device_count()} "
          "present; skipped")
      continue
    for row in found:
      log(f"[scaling] D={row['devices']} C={row['num_clients']} "
          f"d={row['dim']} {row['rule']}: sharded "
          f"{row['sharded_bytes'] / 2**20:.1f} MiB, gathered "
          f"{row['gathered_bytes'] / 2**20:.1f} MiB per device")
    rows += found
  return {"settings": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in s.items()},
          "backend": backend, "rows": rows, "load_start": list(load_start),
          "load_end": list(os.getloadavg())}


def per_device_factor(result: dict) -> float:
  """The largest measured sharded bytes per device in units of
  ``C x d x 4 / D`` (the client-split input), over the rows with D > 1."""
  ratios = [r["sharded_bytes"] / (r["matrix_bytes"] / r["devices"])
            for r in result["rows"] if r["devices"] > 1]
  return max(ratios, default=float("nan"))


def headline(result: dict) -> str:
  factor = per_device_factor(result)
  return (f"sharded aggregation: at most {factor:.2f} x C d 4 / D bytes per "
          f"device (1,000 clients x 1e8 parameters on 8 devices: "
          f"{factor * 1000 * 1e8 * 4 / 8 / 1e9:.0f} GB each)")


def to_markdown(result: dict) -> str:
  """Per-device memory (in units of the ``[C, d]`` matrix, and MiB) and time
  of the sharded and gathered aggregation."""
  timed = any("sharded_s" in r for r in result["rows"])
  header = ["D", "C", "d", "rule", "sharded MiB", "gathered MiB",
            "sharded / (C d 4 / D)", "gathered / (C d 4)"]
  if timed:
    header += ["sharded s", "gathered s"]
  table = []
  for r in result["rows"]:
    share = r["matrix_bytes"] / r["devices"]
    line = [r["devices"], r["num_clients"], r["dim"], r["rule"],
            f"{r['sharded_bytes'] / 2**20:.1f}",
            f"{r['gathered_bytes'] / 2**20:.1f}",
            f"{r['sharded_bytes'] / share:.2f}",
            f"{r['gathered_bytes'] / r['matrix_bytes']:.2f}"]
    if timed:
      line += [f"{r['sharded_s']:.4f}", f"{r['gathered_s']:.4f}"]
    table.append(line)
  factor = per_device_factor(result)
  gathered = max((r["gathered_bytes"] / r["matrix_bytes"]
                  for r in result["rows"] if r["devices"] > 1),
                 default=float("nan"))
  load = ""
  if "load_start" in result:
    load = (" Load averages (1, 5, 15 min) at the start: "
            + ", ".join(f"{v:.2f}" for v in result["load_start"])
            + "; at the end: "
            + ", ".join(f"{v:.2f}" for v in result["load_end"]) + ".")
  estimate = ""
  if factor == factor:  # measured with more than one device
    estimate = (
        f"\n\nMeasured per-device formula (sharded, D > 1): at most "
        f"{factor:.2f} x C x d x 4 / D bytes (the client-split input is "
        f"1.00 of it). A 1,000-client round of a 100M-parameter model "
        f"(C x d x 4 = 400 GB) needs by it {factor * 400:.0f} GB / D per "
        f"device: {factor * 400 / 8:.1f} GB on 8 devices, "
        f"{factor * 400 / 64:.2f} GB on 64. Gathered, every device holds "
        f"{gathered:.2f} x C x d x 4 at most as measured here (at least the "
        f"matrix itself): {gathered * 400:.0f} GB whatever D.")
  return (f"Aggregation per device ({result['backend']} backend; bytes from "
          "the compiled aggregation's memory_analysis: arguments + "
          "temporaries + outputs; the updates arrive split over clients)."
          + load + "\n\n" + reporting.markdown_table(header, table)
          + estimate)
