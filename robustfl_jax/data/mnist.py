"""MNIST and Fashion-MNIST from IDX files in a user-given directory.

The files are the four canonical ones (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``), each either plain or gzipped (``.gz``).

References:
  LeCun, Y., Bottou, L., Bengio, Y., Haffner, P.: Gradient-based learning
  applied to document recognition. Proc. IEEE 86(11) (1998).
  Xiao, H., Rasul, K., Vollgraf, R.: Fashion-MNIST (2017), arXiv:1708.07747.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from robustfl_jax.data._types import Dataset
from robustfl_jax.data.registry import register

_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_SOURCES = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/ (or "
             "http://yann.lecun.com/exdb/mnist/)",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist "
                     "(data/fashion/)",
}
# IDX type code 0x08 is unsigned byte, the only one these data sets use.
_UBYTE = 0x08


def _missing_message(path: str, name: str, directory: str) -> str:
  return (f"{name}: file {path!r} (or {path}.gz) not found. Download the four "
          f"IDX files {sorted(_FILES.values())} from {_SOURCES[name]} and put "
          f"them, gzipped or not, in {directory!r} (config field data.dir).")


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (plain or gzipped) into a uint8 array.

  Args:
    path: file path; a ``.gz`` suffix means gzip.

  Returns:
    ``uint8`` array with the shape stored in the header.

  Raises:
    ValueError: if the header is not a ubyte IDX header or the payload has the
      wrong size (a truncated or foreign file); the message names the file.
  """
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f"cannot read IDX file {path!r}: {e}. Download it again."
                     ) from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE:
    raise ValueError(
        f"{path!r} is not an unsigned-byte IDX file (bad magic number "
        f"{raw[:4].hex() if raw else 'empty'}); expected 0000 08 0N.")
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"{path!r}: truncated IDX header. Download it again.")
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big")
                for i in range(ndim))
  expected = int(np.prod(shape)) if shape else 0
  if len(raw) - header != expected:
    raise ValueError(
        f"{path!r}: header says shape {shape} ({expected} bytes) but the file "
        f"holds {len(raw) - header} bytes; the file is truncated or corrupt. "
        "Download it again.")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find(directory: str, stem: str, name: str) -> str:
  for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                    stem.replace("-idx", ".idx") + ".gz"):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(_missing_message(os.path.join(directory, stem),
                                           name, directory))


def load_mnist(directory: str, name: str = "mnist") -> Dataset:
  """Loads MNIST or Fashion-MNIST as ``float32[N, 28, 28, 1]`` in [0, 1].

  Args:
    directory: folder holding the four IDX files (config field ``data.dir``).
    name: ``"mnist"`` or ``"fashion_mnist"`` (only changes messages).

  Returns:
    A :class:`Dataset` with 10 classes.

  Raises:
    FileNotFoundError: a file is missing; the message says what to download
      and where to put it.
    ValueError: a file is malformed or images and labels disagree in number.
  """
  if name not in _SOURCES:
    raise ValueError(f"name must be one of {sorted(_SOURCES)}; got {name!r}.")
  if not directory:
    raise FileNotFoundError(
        f"{name} needs data.dir: set --config.data.dir to a folder holding "
        f"the IDX files {sorted(_FILES.values())} from {_SOURCES[name]}.")
  arrays = {}
  for key, stem in _FILES.items():
    path = _find(directory, stem, name)
    arr = read_idx(path)
    want_ndim = 3 if key.startswith("x") else 1
    if arr.ndim != want_ndim:
      raise ValueError(f"{path!r}: expected a {want_ndim}-D IDX array for "
                       f"{key}; got shape {arr.shape}.")
    arrays[key] = arr
  for split in ("train", "test"):
    if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
      raise ValueError(
          f"{name} {split}: {len(arrays[f'x_{split}'])} images but "
          f"{len(arrays[f'y_{split}'])} labels in {directory!r}.")
  def images(a):
    return (a.astype(np.float32) / 255.0)[..., None]
  return Dataset(images(arrays["x_train"]), arrays["y_train"].astype(np.int32),
                 images(arrays["x_test"]), arrays["y_test"].astype(np.int32),
                 num_classes=10, name=name)


@register("mnist")
def _mnist(*, directory: str = "") -> Dataset:
  return load_mnist(directory, "mnist")


@register("fashion_mnist")
def _fashion_mnist(*, directory: str = "") -> Dataset:
  return load_mnist(directory, "fashion_mnist")
