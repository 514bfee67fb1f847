"""robustfl_jax.distributed set-up and the per-process client rows (one
process; the multi-process runs are in test_multiprocess.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from robustfl_jax import distributed
from robustfl_jax.data import ClientData
from robustfl_jax.fl import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("env, expected", [
    ({}, False),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, False),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_PROCID": "2"}, True),
    ({"TPU_WORKER_HOSTNAMES": "t0"}, False),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, True),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
])
def test_cluster_detected(env, expected):
  assert distributed.cluster_detected(env) is expected


@pytest.mark.parametrize("args, field", [
    (("127.0.0.1:1", 0, 0), "--num_processes"),
    (("127.0.0.1:1", 2, 2), "--process_id"),
    (("127.0.0.1:1", 2, None), "go together"),
])
def test_bad_process_flags_are_named(args, field, monkeypatch):
  for k in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_NTASKS",
            "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(k, raising=False)
  with pytest.raises(ValueError, match=field):
    distributed.initialize(*args)


def test_one_process_is_not_initialised():
  assert distributed.initialize(None, 1, 0) is False
  assert distributed.initialize() is False or distributed.cluster_detected()


def test_local_rows_and_padding():
  assert sharding.local_client_rows(6, None) == range(6)
  data = ClientData(np.ones((6, 3, 2), np.float32), np.ones((6, 3), np.int32),
                    np.full((6,), 3, np.int32))
  part = sharding.take_rows(data, range(4, 8))
  assert isinstance(part, ClientData) and part.x.shape == (4, 3, 2)
  assert part.count.tolist() == [3, 3, 0, 0]
  assert sharding.rows_of(np.array([1, 0, 1], bool), range(2, 4)).tolist() == [
      True, False]


def test_train_script_refuses_a_bad_process_id():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "scripts/train.py", "--config=configs/digits_fedavg.py",
       "--coordinator_address=127.0.0.1:1", "--num_processes=2",
       "--process_id=3"], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: --process_id must be in [0, 2); got 3.")
