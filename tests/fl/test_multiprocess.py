"""Two processes x 2 CPU devices (gloo) train like one process and one device.

Every run here is a subprocess with a wall-clock limit, so a broken
collective fails the test instead of hanging CI.

* 3 rounds of digits, 12 clients of which 3 scale their updates x100, with
  the coordinate median and with Krum, run by 2 processes on a free localhost
  port: the final parameters equal a 1-process 4-device run and a 1-device
  run (bit-identical for the median, within 1e-6 for Krum); the median run
  is then resumed from its checkpoint by the 2 processes to round 4 and
  equals the 1-device run resumed the same way (a resumed run equals an
  uninterrupted one: tests/scripts/test_train.py);
* only process 0 writes the outputs;
* ``scripts/train.py`` with ``--coordinator_address/--num_processes/
  --process_id``: a killed process is reported by the other within the
  coordinator timeout, not a hang.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from robustfl_jax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
AGGREGATORS = ("coordinate_median", "krum")

# One process of a run (the flags and cli of scripts/train.py): trains each
# aggregator for 3 rounds, then resumes the median from its checkpoint to
# round 4 (same compiled experiment), saving the final flat params; SHARDS
# lists "1" (all devices) and/or "0" (one device).
_DRIVER = textwrap.dedent("""
    import os
    import jax, numpy as np
    from robustfl_jax.experiments import builders, cli, runner
    from robustfl_jax.experiments.config import load_config
    out = cli.define_output_flags()

    def config(name, rounds, shard):
      return load_config("configs/digits_attack.py", [
          "num_clients=12", f"num_rounds={{rounds}}", "eval_every=3",
          "checkpoint_every=3", f"aggregator.name={{name}}",
          f"shard_clients={{shard == '1'}}"])

    def train(name, rounds, shard, exp):
      workdir = os.path.join(out.workdir.value, shard, name)
      result = runner.train(config(name, rounds, shard), workdir,
                            log=lambda line: None, plot=False, experiment=exp)
      flat = jax.flatten_util.ravel_pytree(
          jax.device_get(result.state.params))[0]
      if jax.process_index() == 0:
        np.save(os.path.join(workdir, f"params_{{rounds}}.npy"),
                np.asarray(flat))
        print("RUN", shard, name, rounds, jax.device_count(),
              jax.process_count(), result.summary["resumed_from_round"],
              flush=True)

    def main(argv):
      for shard in os.environ["SHARDS"].split(","):
        for name in {aggregators!r}:
          exp = builders.build_experiment(config(name, 3, shard))
          train(name, 3, shard, exp)
          if name == "coordinate_median":  # resumed from round 3
            train(name, 4, shard, exp)

    cli.run(main)
""").format(aggregators=AGGREGATORS)


def _env(devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", ROBUSTFL_TRACEBACK="1")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _check(results):
  for i, r in enumerate(results):
    assert r.returncode == 0, (f"process {i} exited {r.returncode}:\n"
                               f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Params of the 2-process runs ("2p") and of one process with 4 devices
  ("4d") and with one ("1d"), keyed ``(label, rule, rounds)``."""
  base = str(tmp_path_factory.mktemp("multiprocess"))
  two = os.path.join(base, "two")
  one = os.path.join(base, "one")
  cmd = [sys.executable, "-c", _DRIVER]
  # The one-process references run beside the two processes (their waits
  # on each other leave the CPU idle at times).
  with subprocess.Popen(cmd + [f"--workdir={one}"], cwd=ROOT,
                        env=dict(_env(4), SHARDS="1,0"),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True) as reference:
    try:
      two_runs = distributed.launch_local(
          cmd + [f"--workdir={two}"], num_processes=2, devices_per_process=2,
          cwd=ROOT, env=dict(_env(2), SHARDS="1"), timeout_s=300)
      stdout, stderr = reference.communicate(timeout=300)
    finally:
      if reference.poll() is None:
        reference.kill()
  one_run = subprocess.CompletedProcess(cmd, reference.returncode, stdout,
                                        stderr)
  _check(two_runs)
  _check([one_run])
  out = {"stdout": two_runs[0].stdout + one_run.stdout,
         "stdout_1": two_runs[1].stdout,
         "files": sorted(os.listdir(os.path.join(two, "1", "krum")))}
  for label, folder in (("2p", os.path.join(two, "1")),
                        ("4d", os.path.join(one, "1")),
                        ("1d", os.path.join(one, "0"))):
    for name, rounds in [(n, 3) for n in AGGREGATORS] + [
        ("coordinate_median", 4)]:
      out[label, name, rounds] = np.load(
          os.path.join(folder, name, f"params_{rounds}.npy"))
  return out


def test_two_processes_train_like_one_and_only_process_zero_writes(runs):
  """One test over the shared runs: with worksteal, tests of one module can
  land on both xdist workers, each then repeating the ~100 s fixture."""
  # The devices asked for.
  # RUN shard rule rounds device_count process_count resumed_from
  assert "RUN 1 krum 3 4 2 0" in runs["stdout"]
  assert "RUN 1 coordinate_median 4 4 2 3" in runs["stdout"]
  assert "RUN 1 krum 3 4 1 0" in runs["stdout"]
  assert "RUN 0 krum 3 4 1 0" in runs["stdout"]

  # Two processes equal one process and one device.
  for rounds in (3, 4):  # 4: resumed from round 3 by the two processes
    key = ("coordinate_median", rounds)
    np.testing.assert_array_equal(runs[("2p",) + key], runs[("1d",) + key])
    np.testing.assert_array_equal(runs[("4d",) + key], runs[("1d",) + key])
  for label in ("2p", "4d"):
    np.testing.assert_allclose(runs[label, "krum", 3], runs["1d", "krum", 3],
                               rtol=1e-6, atol=1e-6)
  # The rounds moved the parameters differently (not untouched inits).
  assert not np.array_equal(runs["1d", "krum", 3],
                            runs["1d", "coordinate_median", 3])

  # Only process 0 writes.
  files = runs["files"]
  assert {"summary.json", "metrics.jsonl", "checkpoints"} <= set(files), files
  assert not [f for f in files if f.startswith("process_")], files
  assert "RUN" not in runs["stdout_1"]


def test_killed_process_is_reported_not_a_hang(tmp_path):
  """Process 1 is killed mid-run; process 0 must stop with the coordination
  service's report within the heartbeat timeout (5 s here), not hang."""
  port = distributed.free_port()
  procs = []
  for i in range(2):
    procs.append(subprocess.Popen(
        [sys.executable, TRAIN, "--config=configs/digits_attack.py",
         "--config.num_rounds=100000",
         "--config.eval_every=100000", "--config.checkpoint_every=100000",
         f"--workdir={tmp_path}", f"--coordinator_address=127.0.0.1:{port}",
         "--num_processes=2", f"--process_id={i}", "--coordinator_timeout=5"],
        cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True))
  try:
    deadline = time.monotonic() + 180
    for line in procs[0].stdout:  # both joined and claimed the workdir
      if line.startswith("digits:") or time.monotonic() > deadline:
        break
    assert procs[0].poll() is None, "process 0 stopped before the kill"
    procs[1].kill()
    killed = time.monotonic()
    out, _ = procs[0].communicate(timeout=90)
    waited = time.monotonic() - killed
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert procs[0].returncode != 0
  assert "stopped sending heartbeats" in out, out[-3000:]
  assert waited < 60, waited
