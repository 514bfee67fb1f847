"""Classification data sets by name (``data.name`` in configs).

Each loader module registers ``loader(*, [directory], [seed], **hparams) ->
Dataset`` with :func:`register`; ``directory`` (``data.dir``) and ``seed``
are supplied by the experiment, other keywords are hyper-parameters.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from robustfl_jax.data._types import Dataset
from robustfl_jax.registry import Registry

DATA_SETS = Registry("data set", context=("directory", "seed"))


def register(name: str, loader: Optional[Callable] = None):
  """Registers ``loader(*, [directory], [seed], **hparams) -> Dataset``."""
  return DATA_SETS.register(name, loader)


def names() -> tuple[str, ...]:
  return DATA_SETS.names()


def load(name: str, directory: str = "", *, seed: int = 0,
         **hparams: Any) -> Dataset:
  """Loads the registered data set ``name``.

  Args:
    name: one of :func:`names` (``digits`` and ``synthetic`` need no files;
      ``mnist``, ``fashion_mnist`` and ``cifar10`` read ``directory``).
    directory: folder with the files of a real data set.
    seed: seed of the digits split and of the synthetic generator.
    **hparams: the loader's own keywords (e.g. ``flatten=True`` for digits).

  Raises:
    ValueError: unknown name (the message lists every data set).
    FileNotFoundError: the files of a real data set are missing.
  """
  return DATA_SETS.build(name, hparams, {"directory": directory, "seed": seed})
