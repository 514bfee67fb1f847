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
from typing import Any, Callable, NamedTuple, Optional, Sequence

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
  if "all" in only:
    if len(only) > 1:
      raise ValueError("benchmark suite 'all' cannot be combined with other "
                       f"names; got {list(only)}.")
    return list(SUITES)
  unknown = sorted(set(only) - set(SUITES))
  if unknown:
    raise ValueError(f"unknown benchmark suite(s) {unknown}; choose from "
                     f"{sorted(SUITES)} or 'all'.")
  return list(dict.fromkeys(only)) if only else list(SUITES)


def collect_ratios(result: Any, prefix: str = "") -> dict[str, float]:
  """Every ratio of a suite's result, by its path (``"rows/3/speedup"``).

  A ratio is a number under a key that contains ``speedup`` or ``ratio``;
  lists are indexed by position, dicts by key.
  """
  found = {}
  if isinstance(result, dict):
    items = result.items()
  elif isinstance(result, (list, tuple)):
    items = enumerate(result)
  else:
    return found
  for key, value in items:
    path = f"{prefix}{key}"
    if isinstance(value, (dict, list, tuple)):
      found.update(collect_ratios(value, path + "/"))
    elif (isinstance(value, (int, float)) and not isinstance(value, bool)
          and ("speedup" in str(key) or "ratio" in str(key))):
      found[path] = float(value)
  return found


def environment() -> dict[str, Any]:
  """The backend, device kind and count, JAX version and machine line."""
  import jax  # pylint: disable=import-outside-toplevel
  device = jax.devices()[0]
  return {"backend": jax.default_backend(), "device_kind": device.device_kind,
          "device_count": jax.device_count(), "jax_version": jax.__version__,
          "machine": reporting.machine_line()}


def combined_markdown(reports: dict[str, SuiteReport], before: dict,
                      after: dict) -> str:
  """One document for every suite of a run: the environment, then each table.

  The machine's load at the start and at the end frames the ratios (a loaded
  machine slows the two sides of a ratio unevenly).
  """
  lines = [f"Backend {before['backend']} ({before['device_kind']}, "
           f"{before['device_count']} device(s)), JAX {before['jax_version']}.",
           "", f"- at the start: {before['machine']}", f"- at the end: {after['machine']}"]
  for name, report in reports.items():
    lines += ["", f"## {name} ({report.result['wall_s']:.0f} s)", "",
              report.markdown.strip()]
  return "\n".join(lines)


def run_suites(only: Sequence[str] = (), quick: bool = False,
               out_dir: str = DEFAULT_OUT_DIR, repeats: Optional[int] = None,
               log: Callable[[str], None] = print, *,
               publish: bool = False,
               compile_only: bool = False) -> dict[str, SuiteReport]:
  """Runs suites; writes ``benchmark_<suite>.json`` and ``.md`` for each.

  When more than one suite runs (``only=["all"]`` runs every one), also
  ``benchmark_all.json``: :func:`environment` before and after, and per
  suite its result and every ratio (:func:`collect_ratios`), so that one run
  on any device gives the whole table.

  Args:
    only: suite names from :data:`SUITES`; empty or ``["all"]`` runs them
      all.
    quick: each suite's small settings (seconds: checks that it runs).
    out_dir: where the JSON and markdown files go (created).
    repeats: timed repetitions (the best is kept) for every suite; None
      keeps each suite's own default.
    log: receives progress lines and each suite's table.
    publish: also write ``docs/results/benchmark_<suite>.md`` with
      :func:`robustfl_jax.experiments.reporting.publish`, headed by the
      command line that is running, and ``docs/results/benchmark.md``
      with every suite of the run (:func:`combined_markdown`).
    compile_only: suites that can (``skip_time`` among their settings:
      scaling) only compile and report memory, allocating nothing.

  Returns:
    The reports by suite name, in the order they ran.

  Raises:
    ValueError: an unknown suite name (before anything runs).
  """
  suites = check_suites(only)
  overrides = {} if repeats is None else {"repeats": int(repeats)}
  if compile_only:
    overrides["skip_time"] = True
  reports = {}
  before = environment()
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
  if publish:
    log("published " + reporting.publish(
        "benchmark", combined_markdown(reports, before, environment()),
        command=cli.command_line()))
  if len(suites) > 1:
    path = reporting.write_json(os.path.join(out_dir, "benchmark_all.json"), {
        "environment_before": before, "environment_after": environment(),
        "quick": bool(quick),
        "suites": {name: {"ratios": collect_ratios(r.result), "result": r.result}
                   for name, r in reports.items()}}, indent=2)
    log(f"wrote {path}")
  return reports
