"""Shared pytest settings: hypothesis profile sized for a 2-core CI machine,
and a compilation cache shared by the whole run."""

import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

# JAX compiles each new shape once; keep the number of examples modest and
# never fail on the (compile-dominated) duration of an example.
settings.register_profile(
    "ci", max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "12")),
    deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True)
settings.load_profile("ci")

import sys

# Test helpers shared across folders (e.g. numpy_reference.py) live here.
sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
  """One persistent compilation cache for the whole run.

  The xdist workers, and the scripts, notebook kernels and multi-process
  runs they start, inherit ``JAX_COMPILATION_CACHE_DIR``: a program one of
  them compiled (the digits round of every ``scripts/train.py`` run, for
  one) is loaded by the others instead of compiled again. The folder is
  removed when the run ends; a cache the caller set up is used as it is.
  """
  if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return
  cache = tempfile.mkdtemp(prefix="robustfl_jax_test_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
  config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))

