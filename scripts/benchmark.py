r"""Speed benchmarks: jitted robustfl_jax against plain NumPy / Python-loop baselines.

Usage::

  python scripts/benchmark.py                      # every suite available
  python scripts/benchmark.py --only=aggregators   # robust rules at (n, d) grid
  python scripts/benchmark.py --only=aggregators --quick   # small shapes, seconds

Writes ``<out_dir>/benchmark_<suite>.json`` and ``.md`` (a table of ratios) and
prints the table. Ratios, not absolute times, are what to compare across
machines.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SUITES = {
    "aggregators": "_bench_aggregators",
    "simulation": "_bench_simulation",
    "coreset": "_bench_coreset",
    "adversarial": "_bench_adversarial",
}

_ONLY = flags.DEFINE_list("only", [], f"Suites to run, from {sorted(SUITES)}; default all.")
_QUICK = flags.DEFINE_bool("quick", False, "Small shapes: checks that everything runs.")
_OUT = flags.DEFINE_string("out_dir", "results/benchmark", "Where JSON and markdown go.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (the best is kept).")


def _load(suite: str):
  try:
    return importlib.import_module(SUITES[suite])
  except ModuleNotFoundError as err:
    if err.name == SUITES[suite]:
      return None
    raise


def main(argv):
  del argv
  unknown = sorted(set(_ONLY.value) - set(SUITES))
  if unknown:
    raise app.UsageError(f"--only: unknown suite(s) {unknown}; choose from {sorted(SUITES)}.")
  os.makedirs(_OUT.value, exist_ok=True)
  for suite in _ONLY.value or list(SUITES):
    module = _load(suite)
    if module is None:
      print(f"[{suite}] not available in this checkout; skipped.")
      continue
    print(f"[{suite}] running{' (quick)' if _QUICK.value else ''} ...", flush=True)
    start = time.perf_counter()
    result = module.run(**module_kwargs(module, suite))
    result["wall_s"] = time.perf_counter() - start
    base = os.path.join(_OUT.value, f"benchmark_{suite}")
    with open(base + ".json", "w") as fh:
      json.dump(result, fh, indent=2)
    table = module.to_markdown(result)
    with open(base + ".md", "w") as fh:
      fh.write(table + "\n")
    print(table)
    print(f"[{suite}] wrote {base}.json and {base}.md ({result['wall_s']:.0f}s)", flush=True)


def module_kwargs(module, suite):
  if suite == "aggregators":
    shapes = module.QUICK_SHAPES if _QUICK.value else module.DEFAULT_SHAPES
    return {"shapes": shapes, "repeats": _REPEATS.value,
            "log": lambda line: print(line, flush=True)}
  if suite == "coreset":
    # The coreset suite reads command-line style flags; --quick uses the
    # tiny sizes its test runs.
    return {"argv_flags": module.QUICK_FLAGS if _QUICK.value else None}
  return {"quick": _QUICK.value}


if __name__ == "__main__":
  app.run(main)
