"""Sharding the client axis over 4 forced CPU devices matches one device.

XLA_FLAGS must be set before jax initialises, so the check runs in a
subprocess.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np

from robustfl_jax.fl import sharding
from robustfl_jax.fl.server import FederatedData

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from robustfl_jax.experiments import config as config_lib
    from robustfl_jax.experiments import builders as experiment
    from robustfl_jax.fl.round import round_key
    assert jax.device_count() == 4, jax.devices()

    def run(shard):
      cfg = config_lib.default_config()
      cfg.num_clients = 6          # not a multiple of 4: two padding clients
      cfg.model.hidden = (16,)
      cfg.attack.name = "sign_flip"
      cfg.attack.num_byzantine = 1
      cfg.aggregator.name = "trimmed_mean"
      cfg.shard_clients = shard
      exp = experiment.build_experiment(cfg)
      state = exp.init_state()
      for _ in range(3):
        state, metrics = exp.round_fn(state, exp.data, round_key(state))
      flat = jax.flatten_util.ravel_pytree(jax.device_get(state.params))[0]
      return exp, np.asarray(flat), jax.device_get(metrics)

    sharded, p4, m4 = run(True)
    single, p1, m1 = run(False)
    assert sharded.mesh is not None and single.mesh is None
    assert sharded.data.x.shape[0] == 8 and single.data.x.shape[0] == 6
    assert len(sharded.data.x.sharding.device_set) == 4
    assert sharded.data.x.sharding.spec[0] == "clients"
    np.testing.assert_allclose(p4, p1, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(m4["flagged"], m1["flagged"])
    print("SHARDING_OK", float(np.abs(p4 - p1).max()))
""")


def test_four_devices_match_one():
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True,
                        text=True, timeout=300, env=env, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "SHARDING_OK" in proc.stdout


def test_pad_clients_adds_empty_honest_rows():
  data = FederatedData(np.ones((6, 3, 2), np.float32), np.ones((6, 3), np.int32),
                       np.full((6,), 3, np.int32), np.array([1, 0, 0, 0, 0, 1], bool))
  padded = sharding.pad_clients(data, 4)
  assert padded.x.shape == (8, 3, 2)
  assert padded.count[6:].tolist() == [0, 0]
  assert not padded.byzantine[6:].any()
  assert sharding.pad_clients(data, 3) is data
