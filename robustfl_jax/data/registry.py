"""Loading a classification data set by its config name (``data.name``)."""

from __future__ import annotations

from robustfl_jax.data._types import Dataset
from robustfl_jax.data.cifar10 import load_cifar10
from robustfl_jax.data.digits import load_digits
from robustfl_jax.data.mnist import load_mnist
from robustfl_jax.data.synthetic import gaussian_mixture

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "synthetic")


def load(name: str, directory: str = "", *, seed: int = 0,
         flatten: bool = False) -> Dataset:
  """Loads ``name`` (one of :data:`DATASETS`).

  Args:
    name: data set name.
    directory: folder with the files for mnist / fashion_mnist / cifar10.
    seed: seed of the digits split and of the synthetic generator.
    flatten: digits only: ``[N, 64]`` instead of ``[N, 8, 8, 1]``.

  Raises:
    ValueError: unknown name.
    FileNotFoundError: the files of a real data set are missing.
  """
  if name == "digits":
    return load_digits(seed=seed, flatten=flatten)
  if name in ("mnist", "fashion_mnist"):
    return load_mnist(directory, name)
  if name == "cifar10":
    return load_cifar10(directory)
  if name == "synthetic":
    return gaussian_mixture(seed=seed)
  raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}.")
