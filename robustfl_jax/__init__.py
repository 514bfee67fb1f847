"""robustfl_jax: Byzantine-robust federated learning in JAX.

Subpackages are imported on first use, so ``import robustfl_jax`` stays cheap:
``from robustfl_jax import aggregators, attacks, scoring``.
"""

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("aggregators", "attacks", "scoring", "defenses", "adversarial",
                "fl", "patchcore", "models", "data", "checkpoint", "distributed",
                "experiments", "registry")


def __getattr__(name):
  if name in _SUBPACKAGES:
    return importlib.import_module(f"robustfl_jax.{name}")
  raise AttributeError(f"module 'robustfl_jax' has no attribute {name!r}")
