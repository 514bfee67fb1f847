"""scikit-learn's handwritten digits: the embedded default data set.

1,797 real 8x8 grey-scale images of the digits 0-9 that ship inside the
scikit-learn wheel, so no run needs the network.

References:
  Alpaydin, E., Kaynak, C.: Optical Recognition of Handwritten Digits. UCI
  Machine Learning Repository (1998).
"""

from __future__ import annotations

import numpy as np

from robustfl_jax.data._types import Dataset
from robustfl_jax.data.registry import register

# Pixel intensities in the scikit-learn copy are integers 0..16.
_MAX_INTENSITY = 16.0


@register("digits")
def _digits(*, seed: int = 0, flatten: bool = False) -> Dataset:
  """Scikit-learn's digits, embedded (no download)."""
  return load_digits(seed=seed, flatten=flatten)


def load_digits(test_fraction: float = 0.25, seed: int = 0,
                flatten: bool = True) -> Dataset:
  """Loads the digits, scaled to [0, 1], with a fixed stratified split.

  Args:
    test_fraction: fraction of each class held out for testing, in (0, 1).
    seed: seed of the split; the default split is the same on every machine.
    flatten: if True inputs are ``[N, 64]``; otherwise images ``[N, 8, 8, 1]``.

  Returns:
    A :class:`Dataset` with ``num_classes=10``.

  Raises:
    ValueError: if ``test_fraction`` is outside (0, 1).

  Example:
    >>> ds = load_digits()
    >>> ds.x_train.shape, ds.x_test.shape
    ((1347, 64), (450, 64))
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(
        f"test_fraction must be in (0, 1); got {test_fraction}.")
  from sklearn.datasets import load_digits as _sk_load  # pylint: disable=import-outside-toplevel
  bunch = _sk_load()
  x = (np.asarray(bunch.data, np.float32) / _MAX_INTENSITY).clip(0.0, 1.0)
  y = np.asarray(bunch.target, np.int32)
  rng = np.random.default_rng(seed)
  train_idx, test_idx = [], []
  for label in range(10):
    idx = np.flatnonzero(y == label)
    idx = idx[rng.permutation(len(idx))]
    num_test = int(round(test_fraction * len(idx)))
    test_idx.append(idx[:num_test])
    train_idx.append(idx[num_test:])
  train_idx = np.sort(np.concatenate(train_idx))
  test_idx = np.sort(np.concatenate(test_idx))
  if not flatten:
    x = x.reshape(-1, 8, 8, 1)
  return Dataset(x[train_idx], y[train_idx], x[test_idx], y[test_idx],
                 num_classes=10, name="digits")
