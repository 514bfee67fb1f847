"""Shared pytest settings: hypothesis profile sized for a 2-core CI machine."""

import os

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
