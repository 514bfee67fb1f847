"""Synthetic class-conditional Gaussian mixtures for scale tests."""

from __future__ import annotations

import numpy as np

from robustfl_jax.data._types import ClientData, Dataset
from robustfl_jax.data.registry import register


def _means(rng, num_classes, dim, separation):
  means = rng.normal(size=(num_classes, dim)).astype(np.float32)
  means /= np.linalg.norm(means, axis=1, keepdims=True)
  return means * separation


def gaussian_mixture(num_train: int = 10_000, num_test: int = 2_000,
                     num_classes: int = 10, dim: int = 64,
                     separation: float = 3.0, noise: float = 1.0,
                     seed: int = 0) -> Dataset:
  """A data set whose class ``k`` inputs are ``N(mu_k, noise^2 I)``.

  Class means lie on a sphere of radius ``separation``; larger separation makes
  the task easier. Labels are balanced up to one example.

  Args:
    num_train: number of training examples.
    num_test: number of test examples.
    num_classes: number of classes (>= 2).
    dim: input dimension.
    separation: norm of each class mean.
    noise: standard deviation of the isotropic noise.
    seed: numpy seed.

  Returns:
    A :class:`Dataset` with inputs ``float32[N, dim]``.

  Raises:
    ValueError: on non-positive sizes.
  """
  if num_classes < 2 or dim < 1 or num_train < 1 or num_test < 1:
    raise ValueError(
        "gaussian_mixture needs num_classes >= 2, dim >= 1, num_train >= 1 "
        f"and num_test >= 1; got {num_classes}, {dim}, {num_train}, {num_test}.")
  rng = np.random.default_rng(seed)
  means = _means(rng, num_classes, dim, separation)

  def sample(n):
    y = (np.arange(n) % num_classes).astype(np.int32)
    rng.shuffle(y)
    x = means[y] + noise * rng.normal(size=(n, dim)).astype(np.float32)
    return x.astype(np.float32), y

  x_train, y_train = sample(num_train)
  x_test, y_test = sample(num_test)
  return Dataset(x_train, y_train, x_test, y_test, num_classes=num_classes,
                 name="synthetic")


def gaussian_mixture_clients(num_clients: int, examples_per_client: int,
                             num_classes: int = 10, dim: int = 64,
                             separation: float = 3.0, noise: float = 1.0,
                             seed: int = 0) -> ClientData:
  """Padded client data drawn directly per client, for any number of clients.

  Builds ``[C, M, dim]`` without materialising a pooled data set first, so
  10,000 clients cost only the final array.

  Args:
    num_clients: ``C``.
    examples_per_client: ``M`` (every client is full: ``count == M``).
    num_classes: number of classes.
    dim: input dimension.
    separation: norm of each class mean.
    noise: noise standard deviation.
    seed: numpy seed.

  Returns:
    :class:`ClientData` with IID labels.
  """
  if num_clients < 1 or examples_per_client < 1:
    raise ValueError("gaussian_mixture_clients needs num_clients >= 1 and "
                     f"examples_per_client >= 1; got {num_clients}, "
                     f"{examples_per_client}.")
  rng = np.random.default_rng(seed)
  means = _means(rng, num_classes, dim, separation)
  y = rng.integers(0, num_classes, size=(num_clients, examples_per_client),
                   dtype=np.int32)
  x = means[y]
  x += noise * rng.standard_normal(size=x.shape, dtype=np.float32)
  count = np.full((num_clients,), examples_per_client, np.int32)
  return ClientData(x.astype(np.float32, copy=False), y, count)


@register("synthetic")
def _synthetic(*, seed: int = 0) -> Dataset:
  return gaussian_mixture(seed=seed)
