"""Containers shared by the data loaders and partitioners."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
  """A classification data set held in host memory (numpy).

  Attributes:
    x_train: ``float32[N, ...]`` inputs scaled to [0, 1] (images are NHWC).
    y_train: ``int32[N]`` labels in ``[0, num_classes)``.
    x_test: ``float32[N_test, ...]``.
    y_test: ``int32[N_test]``.
    num_classes: number of classes.
    name: short name used in logs.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


class ClientData(NamedTuple):
  """Client data stored padded so that local training vmaps over clients.

  Attributes:
    x: ``float32[C, M, ...]``; rows ``count[c]:`` of client ``c`` are padding.
    y: ``int32[C, M]``; padding rows hold label 0.
    count: ``int32[C]`` number of real examples per client.
  """

  x: np.ndarray
  y: np.ndarray
  count: np.ndarray

  @property
  def num_clients(self) -> int:
    return int(self.y.shape[0])

  @property
  def max_examples(self) -> int:
    return int(self.y.shape[1])

  def example_mask(self) -> np.ndarray:
    """``bool[C, M]``: True where an entry is a real example."""
    return np.arange(self.max_examples)[None, :] < np.asarray(self.count)[:, None]
