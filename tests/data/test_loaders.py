"""MNIST IDX and CIFAR-10 batch loaders on small files written here."""

import gzip
import os
import pickle

import numpy as np
import pytest

from robustfl_jax import data


def _idx_bytes(arr):
  arr = np.asarray(arr, np.uint8)
  header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(
      int(s).to_bytes(4, "big") for s in arr.shape)
  return header + arr.tobytes()


def _write_mnist(directory, gz, n_train=12, n_test=5):
  rng = np.random.default_rng(0)
  arrays = {
      "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
      "train-labels-idx1-ubyte": rng.integers(0, 10, (n_train,)),
      "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
      "t10k-labels-idx1-ubyte": rng.integers(0, 10, (n_test,)),
  }
  for name, arr in arrays.items():
    payload = _idx_bytes(arr)
    if gz:
      with gzip.open(os.path.join(directory, name + ".gz"), "wb") as f:
        f.write(payload)
    else:
      with open(os.path.join(directory, name), "wb") as f:
        f.write(payload)
  return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_plain_and_gzipped(tmp_path, gz):
  arrays = _write_mnist(str(tmp_path), gz)
  ds = data.load_mnist(str(tmp_path))
  assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1)
  np.testing.assert_allclose(ds.x_train[..., 0] * 255.0,
                             arrays["train-images-idx3-ubyte"], atol=1e-3)
  np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
  assert data.load("fashion_mnist", str(tmp_path)).name == "fashion_mnist"


def test_mnist_missing_file_names_file_and_field(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    data.load_mnist(str(tmp_path))
  message = str(e.value)
  assert "train-images-idx3-ubyte" in message and "data.dir" in message
  assert "Download" in message
  with pytest.raises(FileNotFoundError, match="data.dir"):
    data.load_mnist("")


def test_mnist_truncated_and_foreign_files(tmp_path):
  _write_mnist(str(tmp_path), gz=False)
  path = os.path.join(str(tmp_path), "train-images-idx3-ubyte")
  with open(path, "rb") as f:
    raw = f.read()
  with open(path, "wb") as f:
    f.write(raw[:-100])
  with pytest.raises(ValueError, match="truncated or corrupt"):
    data.load_mnist(str(tmp_path))
  with open(path, "wb") as f:
    f.write(b"PK\x03\x04 not an idx file")
  with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
    data.load_mnist(str(tmp_path))


def _write_cifar(directory, per_batch=4):
  rng = np.random.default_rng(0)
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  for name in names:
    batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
             b"labels": list(rng.integers(0, 10, per_batch).tolist())}
    with open(os.path.join(directory, name), "wb") as f:
      pickle.dump(batch, f)


class _Evil:

  def __reduce__(self):
    return (os.system, ("echo pwned",))


def test_cifar_loads_layout_and_refuses_code(tmp_path):
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  _write_cifar(str(folder))
  ds = data.load_cifar10(str(tmp_path))  # the parent folder works too
  assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
  with open(folder / "data_batch_1", "rb") as f:
    raw = pickle.load(f)
  first = raw[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
  np.testing.assert_allclose(ds.x_train[0] * 255.0, first, atol=1e-3)
  with open(folder / "test_batch", "wb") as f:
    pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
  with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
    data.load_cifar10(str(folder))


def test_cifar_missing_names_file_and_url(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    data.load_cifar10(str(tmp_path))
  assert "data_batch_1" in str(e.value)
  assert "cifar-10-python.tar.gz" in str(e.value)
  assert "data.dir" in str(e.value)
