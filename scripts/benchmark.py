r"""Speed benchmarks: jitted robustfl_jax against plain NumPy / Python-loop baselines.

Usage::

  python scripts/benchmark.py --only=all           # every suite, one JSON
  python scripts/benchmark.py --only=aggregators   # robust rules at (n, d) grid
  python scripts/benchmark.py --only=aggregators --quick   # small shapes, seconds
  python scripts/benchmark.py --only=coreset --publish     # also docs/results/

Writes ``<out_dir>/benchmark_<suite>.json`` and ``.md`` (a table of ratios) and
prints the table; with several suites also ``benchmark_all.json`` (backend,
device kind, JAX version, load, every suite's ratios); ``--publish`` also writes
``docs/results/benchmark_<suite>.md``. Ratios, not absolute times, are what to
compare across machines. The suites live in
:mod:`robustfl_jax.experiments.benchmarks`.
"""

from absl import flags

from robustfl_jax.experiments import benchmarks, cli

_ONLY = flags.DEFINE_list(
    "only", [], f"Suites to run, from {list(benchmarks.SUITES)} or 'all' (the default).")
_QUICK = flags.DEFINE_bool("quick", False, "Small shapes: checks that everything runs.")
_OUT = flags.DEFINE_string("out_dir", benchmarks.DEFAULT_OUT_DIR,
                           "Where JSON and markdown go.")
_REPEATS = flags.DEFINE_integer(
    "repeats", None, "Timed repetitions (the best is kept); default: each suite's own.")
_COMPILE_ONLY = flags.DEFINE_bool(
    "compile_only", False,
    "Suites that can (scaling) only compile and report memory, no timing.")
_PUBLISH = flags.DEFINE_bool(
    "publish", False, "Also write docs/results/benchmark_<suite>.md.")


def main(argv):
  del argv
  return cli.run_or_exit(lambda: benchmarks.run_suites(
      _ONLY.value, quick=_QUICK.value, out_dir=_OUT.value,
      repeats=_REPEATS.value, log=cli.say, publish=_PUBLISH.value,
      compile_only=_COMPILE_ONLY.value))


if __name__ == "__main__":
  cli.run(main)
