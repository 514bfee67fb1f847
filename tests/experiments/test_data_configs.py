"""configs/mnist.py and configs/cifar10.py run end to end on tiny files.

The real data sets are not on the build machine (no network), so the test
writes a few examples in the real formats (IDX, CIFAR python batches) and
runs each config for one round with the config's own model, partition and
optimizer. It proves the wiring, not the accuracy.
"""

import gzip
import os
import pickle

import numpy as np
import pytest

from robustfl_jax.experiments import load_config, train


def _idx(arr):
  arr = np.asarray(arr, np.uint8)
  return bytes([0, 0, 0x08, arr.ndim]) + b"".join(
      int(s).to_bytes(4, "big") for s in arr.shape) + arr.tobytes()


def _write_mnist(directory, n_train=24, n_test=8):
  rng = np.random.default_rng(0)
  files = {
      "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
      "train-labels-idx1-ubyte": np.arange(n_train) % 10,
      "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
      "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
  }
  for name, arr in files.items():
    with gzip.open(os.path.join(directory, name + ".gz"), "wb") as f:
      f.write(_idx(arr))


def _write_cifar(directory, per_batch=4):
  rng = np.random.default_rng(0)
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
             b"labels": [int(v) for v in np.arange(per_batch) % 10]}
    with open(os.path.join(directory, name), "wb") as f:
      pickle.dump(batch, f)


@pytest.mark.parametrize("name,writer", [("mnist", _write_mnist),
                                         ("cifar10", _write_cifar)])
def test_config_runs_one_round_on_tiny_files(tmp_path, name, writer):
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  writer(str(data_dir))
  config = load_config(f"{name}.py", {
      "data.dir": str(data_dir), "num_clients": 4, "num_rounds": 1,
      "eval_every": 1, "checkpoint_every": 1, "client.batch_size": 4})
  lines = []
  summary = train(config, str(tmp_path / "run"), log=lines.append,
                  plot=False).summary
  assert summary["rounds_completed"] == 1
  assert np.isfinite(summary["final_test_loss"])
  assert 0.0 <= summary["final_test_accuracy"] <= 1.0
  assert os.path.exists(tmp_path / "run" / "metrics.jsonl")
