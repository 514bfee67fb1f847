r"""Speed benchmarks: jitted robustfl_jax against NumPy / Python-loop baselines.

``python scripts/benchmark.py`` runs the suites of :data:`SUITES` through
:func:`run_suites`. Each suite is a module with

* ``DEFAULTS`` and ``QUICK``: its settings by name, and the small ones that
  only check that it runs;
* ``run(settings=None, *, quick=False, log=print, **overrides) -> dict``:
  the measurements, JSON-able;
* ``to_markdown(result) -> str``: the table of ratios.

Ratios, not absolute times, are what to compare across machines.

Example::

  from robustfl_jax.experiments import benchmarks
  reports = benchmarks.run_suites(["aggregators"], quick=True,
                                  out_dir="/tmp/bench")
  print(reports["aggregators"].markdown)
"""

from __future__ import annotations

import os
import time
from typing import Callable, NamedTuple, Optional, Sequence

from robustfl_jax.experiments import cli, reporting
from robustfl_jax.experiments.benchmarks import (adversarial, aggregators,
                                                 coreset, scaling, simulation)

SUITES = {
    "aggregators": aggregators,  # robust rules at an (n, d) grid vs NumPy
    "simulation": simulation,  # vmapped clients vs a Python loop
    "coreset": coreset,  # PatchCore coreset and 1-NN scores vs NumPy
    "adversarial": adversarial,  # one jitted PGD vs a loop of steps
    "scaling": scaling,  # aggregation split along d vs gathered, 1-4 devices
}
DEFAULT_OUT_DIR = os.path.join("results", "benchmark")


class SuiteReport(NamedTuple):
  """One suite's outcome: what :func:`run_suites` wrote.

  Attributes:
    result: the suite's measurements, with ``wall_s`` added.
    markdown: its table.
    json_path: ``<out_dir>/benchmark_<suite>.json``.
    markdown_path: ``<out_dir>/benchmark_<suite>.md``.
  """

  result: dict
  markdown: str
  json_path: str
  markdown_path: str


def check_suites(only: Sequence[str]) -> list[str]:
  """The suites to run, in the order given (all for an empty ``only``).

  Raises:
    ValueError: a name is not in :data:`SUITES`.
  """
  unknown = sorted(set(only) - set(SUITES))
  if unknown:
    raise ValueError(f"unknown benchmark suite(s) {unknown}; choose from "
                     f"{sorted(SUITES)}.")
  return list(dict.fromkeys(only)) if only else list(SUITES)


def run_suites(only: Sequence[str] = (), quick: bool = False,
               out_dir: str = DEFAULT_OUT_DIR, repeats: Optional[int] = None,
               log: Callable[[str], None] = print, *,
               publish: bool = False) -> dict[str, SuiteReport]:
  """Runs suites; writes ``benchmark_<suite>.json`` and ``.md`` for each.

  Args:
    only: suite names from :data:`SUITES`; empty runs them all.
    quick: each suite's small settings (seconds: checks that it runs).
    out_dir: where the JSON and markdown files go (created).
    repeats: timed repetitions (the best is kept) for every suite; None
      keeps each suite's own default.
    log: receives progress lines and each suite's table.
    publish: also write ``docs/results/benchmark_<suite>.md`` with
      :func:`robustfl_jax.experiments.reporting.publish`, headed by the
      command line that is running.

  Returns:
    The reports by suite name, in the order they ran.

  Raises:
    ValueError: an unknown suite name (before anything runs).
  """
  suites = check_suites(only)
  overrides = {} if repeats is None else {"repeats": int(repeats)}
  reports = {}
  for suite in suites:
    module = SUITES[suite]
    log(f"[{suite}] running{' (quick)' if quick else ''} ...")
    start = time.perf_counter()
    result = module.run(quick=quick, log=log, **overrides)
    result["wall_s"] = time.perf_counter() - start
    base = os.path.join(out_dir, f"benchmark_{suite}")
    markdown = module.to_markdown(result)
    report = SuiteReport(
        result, markdown,
        reporting.write_json(base + ".json", result, indent=2),
        reporting.write_text(base + ".md", markdown + "\n"))
    log(markdown)
    log(f"[{suite}] wrote {report.json_path} and {report.markdown_path} "
        f"({result['wall_s']:.0f}s)")
    if publish:
      log(f"[{suite}] published " + reporting.publish(
          f"benchmark_{suite}", markdown, command=cli.command_line(),
          headline=(module.headline(result) if hasattr(module, "headline")
                    else None)))
    reports[suite] = report
  return reports
