"""CIFAR-10 from the python pickled batches in a user-given directory.

Expects ``data_batch_1`` ... ``data_batch_5`` and ``test_batch`` as found in
``cifar-10-python.tar.gz`` (the folder ``cifar-10-batches-py``).

The batches are plain dicts of bytes and a uint8 array; they are read with a
restricted unpickler that refuses every global, so a tampered file cannot run
code.

References:
  Krizhevsky, A.: Learning multiple layers of features from tiny images (2009).
"""

from __future__ import annotations

import io
import os
import pickle

import numpy as np

from robustfl_jax.data._types import Dataset
from robustfl_jax.data.registry import register

_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = "test_batch"
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar")}


class _SafeUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
  try:
    with open(path, "rb") as f:
      batch = _SafeUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise ValueError(f"{path!r} is not a CIFAR-10 python batch ({e}); "
                     f"download {_URL} again.") from e
  if not isinstance(batch, dict) or b"data" not in batch or (
      b"labels" not in batch):
    raise ValueError(f"{path!r} is not a CIFAR-10 python batch (no data/labels "
                     f"entries); download {_URL} again.")
  data = np.asarray(batch[b"data"], np.uint8)
  labels = np.asarray(batch[b"labels"], np.int32)
  if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
    raise ValueError(f"{path!r}: expected data [N, 3072] and N labels; got "
                     f"{data.shape} and {labels.shape}.")
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels


def load_cifar10(directory: str) -> Dataset:
  """Loads CIFAR-10 as ``float32[N, 32, 32, 3]`` in [0, 1].

  Args:
    directory: folder holding the six batch files (config field ``data.dir``);
      either ``cifar-10-batches-py`` itself or its parent.

  Returns:
    A :class:`Dataset` with 10 classes (50,000 train, 10,000 test images).

  Raises:
    FileNotFoundError: a batch file is missing; the message says what to
      download and where to put it.
    ValueError: a file is malformed.
  """
  if directory and os.path.isdir(os.path.join(directory, "cifar-10-batches-py")):
    directory = os.path.join(directory, "cifar-10-batches-py")
  parts = []
  for stem in _TRAIN + (_TEST,):
    path = os.path.join(directory or "", stem)
    if not directory or not os.path.isfile(path):
      raise FileNotFoundError(
          f"cifar10: file {path!r} not found. Download {_URL}, extract it and "
          f"set --config.data.dir to the folder cifar-10-batches-py (holding "
          f"{', '.join(_TRAIN)} and {_TEST}).")
    parts.append(_read_batch(path))
  x_train = np.concatenate([p[0] for p in parts[:-1]])
  y_train = np.concatenate([p[1] for p in parts[:-1]])
  x_test, y_test = parts[-1]
  def scale(a):
    return a.astype(np.float32) / 255.0
  return Dataset(scale(x_train), y_train, scale(x_test), y_test.astype(np.int32),
                 num_classes=10, name="cifar10")


@register("cifar10")
def _cifar10(*, directory: str = "") -> Dataset:
  return load_cifar10(directory)
