"""scripts/train.py end to end: outputs, config errors, kill and resume."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
CONFIG = os.path.join(ROOT, "configs", "digits_fedavg.py")
SMALL = ["--config.model.hidden=(16,)", "--config.num_clients=6",
         "--config.client.local_epochs=1"]


def _cmd(workdir, *overrides):
  return [sys.executable, TRAIN, f"--config={CONFIG}", f"--workdir={workdir}",
          *SMALL, *overrides]


def _env():
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env.pop("XLA_FLAGS", None)
  return env


def _run(cmd, timeout=300):
  return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                        env=_env(), cwd=ROOT)


def test_outputs_and_progress(tmp_path):
  workdir = str(tmp_path / "run")
  proc = _run(_cmd(workdir, "--config.num_rounds=6", "--config.eval_every=3",
                   "--config.checkpoint_every=3"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "round 3/6 | test_acc" in proc.stdout
  assert "round 6/6 | test_acc" in proc.stdout and "eta" in proc.stdout
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["rounds_completed"] == 6
  assert 0.0 <= summary["final_test_accuracy"] <= 1.0
  assert summary["final_test_loss"] > 0
  assert len(summary["params_sha256"]) == 64
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["round"] for r in rows] == [3, 6]
  assert len(rows[-1]["per_class_accuracy"]) == 10
  assert rows[-1]["test_accuracy"] == summary["final_test_accuracy"]
  with open(os.path.join(workdir, "metrics.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert _steps(workdir) == [3, 6]
  # Rerunning a finished run restores round 6 and trains nothing more.
  again = _run(_cmd(workdir, "--config.num_rounds=6", "--config.eval_every=3",
                    "--config.checkpoint_every=3"))
  assert "resumed from the checkpoint of round 6" in again.stdout
  assert json.load(open(os.path.join(workdir, "summary.json")))[
      "params_sha256"] == summary["params_sha256"]


@pytest.mark.parametrize("overrides,message", [
    (["--config.aggregator.name=krum", "--config.attack.name=scaling",
      "--config.attack.num_byzantine=3"],
     "attack.num_byzantine (used as aggregator.num_byzantine)=3 is too large "
     "for krum with num_clients=6"),
    (["--config.attack.name=nope", "--config.attack.num_byzantine=1"],
     "attack.name='nope' is not known"),
    (["--config.aggregator.name=trimmed_mean",
      "--config.aggregator.trim_fraction=0.7"],
     "aggregator.trim_fraction=0.7 must be in (0, 0.5)"),
])
def test_bad_config_fails_before_training(tmp_path, overrides, message):
  proc = _run(_cmd(str(tmp_path / "bad"), *overrides))
  assert proc.returncode != 0
  assert message in proc.stderr
  assert "round 1/" not in proc.stdout
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")


def test_misspelled_field_is_refused(tmp_path):
  proc = _run(_cmd(str(tmp_path / "x"), "--config.aggregator.nmae=krum"))
  assert proc.returncode != 0
  assert "nmae" in proc.stderr


def _steps(workdir):
  names = (os.path.basename(p) for p in
           glob.glob(os.path.join(workdir, "checkpoints", "*")))
  return sorted(int(n) for n in names if n.isdigit())


def test_sigkill_then_resume_is_bit_identical(tmp_path):
  rounds = ["--config.num_rounds=400", "--config.eval_every=200",
            "--config.checkpoint_every=25", "--config.attack.name=sign_flip",
            "--config.attack.num_byzantine=1",
            "--config.aggregator.name=trimmed_mean"]
  reference = str(tmp_path / "reference")
  proc = _run(_cmd(reference, *rounds))
  assert proc.returncode == 0, proc.stderr[-3000:]
  expected = json.load(open(os.path.join(reference, "summary.json")))

  killed = str(tmp_path / "killed")
  child = subprocess.Popen(_cmd(killed, *rounds), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=_env(), cwd=ROOT)
  deadline = time.time() + 240
  while time.time() < deadline and child.poll() is None:
    if len(_steps(killed)) >= 2:
      break
    time.sleep(0.005)
  child.send_signal(signal.SIGKILL)
  child.wait()
  assert child.returncode == -signal.SIGKILL, "the run ended before the kill"
  steps = _steps(killed)
  assert len(steps) >= 2 and steps[-1] < 400

  # Corrupt the newest checkpoint: the rerun must fall back to the one before.
  for path in glob.glob(os.path.join(killed, "checkpoints", str(steps[-1]),
                                     "**", "*"), recursive=True):
    if os.path.isfile(path) and "METADATA" not in path:
      with open(path, "wb") as f:
        f.write(b"\x00")
  resumed = _run(_cmd(killed, *rounds))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"checkpoint step {steps[-1]}" in resumed.stderr
  assert "unreadable" in resumed.stderr
  assert f"resumed from the checkpoint of round {steps[-2]}" in resumed.stdout
  summary = json.load(open(os.path.join(killed, "summary.json")))
  assert summary["rounds_completed"] == 400
  assert summary["params_sha256"] == expected["params_sha256"]
  assert summary["final_test_accuracy"] == expected["final_test_accuracy"]
