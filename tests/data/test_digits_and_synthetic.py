"""Tests of the embedded digits and the synthetic Gaussian mixtures."""

import numpy as np
import pytest

from robustfl_jax import data


def test_digits_shapes_range_and_fixed_split():
  ds = data.load_digits()
  assert ds.x_train.shape == (1347, 64) and ds.x_test.shape == (450, 64)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.x_train.min() >= 0.0 and ds.x_train.max() == 1.0
  again = data.load_digits()
  np.testing.assert_array_equal(ds.x_test, again.x_test)
  np.testing.assert_array_equal(ds.y_train, again.y_train)


def test_digits_split_is_stratified_and_disjoint():
  ds = data.load_digits()
  train_counts = np.bincount(ds.y_train, minlength=10)
  test_counts = np.bincount(ds.y_test, minlength=10)
  fraction = test_counts / (train_counts + test_counts)
  assert np.all(np.abs(fraction - 0.25) < 0.01)
  # No image appears in both splits (the 1,797 images are distinct rows).
  train_rows = {r.tobytes() for r in ds.x_train}
  assert not any(r.tobytes() in train_rows for r in ds.x_test[:200])


def test_digits_images_and_other_seed():
  ds = data.load_digits(flatten=False)
  assert ds.x_train.shape[1:] == (8, 8, 1)
  other = data.load_digits(seed=1)
  assert not np.array_equal(other.y_test, data.load_digits().y_test) or (
      not np.array_equal(other.x_test, data.load_digits().x_test))
  with pytest.raises(ValueError, match="test_fraction"):
    data.load_digits(test_fraction=1.5)


def test_registry_names_and_unknown():
  assert data.load("digits").name == "digits"
  with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
    data.load("imagenet")


def test_gaussian_mixture_is_learnable_and_balanced():
  ds = data.gaussian_mixture(num_train=2000, num_test=500, dim=16,
                             separation=4.0, seed=3)
  assert ds.x_train.shape == (2000, 16)
  counts = np.bincount(ds.y_train, minlength=10)
  assert counts.max() - counts.min() <= 1
  means = np.stack([ds.x_train[ds.y_train == k].mean(0) for k in range(10)])
  pred = np.argmin(((ds.x_test[:, None] - means[None]) ** 2).sum(-1), axis=1)
  assert (pred == ds.y_test).mean() > 0.9


def test_gaussian_mixture_clients_layout_and_shared_means():
  cd = data.gaussian_mixture_clients(50, 8, dim=16, separation=4.0, seed=3)
  assert cd.x.shape == (50, 8, 16) and cd.y.shape == (50, 8)
  assert np.all(cd.count == 8)
  ds = data.gaussian_mixture(num_train=1000, dim=16, separation=4.0, seed=3)
  # Same seed, same class means: a client's class-k examples lie near the
  # pooled data set's class-k mean.
  means = np.stack([ds.x_train[ds.y_train == k].mean(0) for k in range(10)])
  x = cd.x.reshape(-1, 16)
  y = cd.y.reshape(-1)
  pred = np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), axis=1)
  assert (pred == y).mean() > 0.9
  with pytest.raises(ValueError):
    data.gaussian_mixture_clients(0, 8)
