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


def _one_line_error(proc):
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  return lines[0]


def test_mistakes_are_one_sentence_and_exit_2(tmp_path):
  line = _one_line_error(_run(_cmd(str(tmp_path / "x"),
                                   "--config.aggregator.nmae=krum")))
  assert "aggregator.nmae" in line and "did you mean 'aggregator.name'" in line
  line = _one_line_error(_run([sys.executable, TRAIN, "--config=configs/nope.py"]))
  assert "configs/nope.py" in line and "not found" in line
  line = _one_line_error(_run(_cmd(str(tmp_path / "x"),
                                   "--config.num_rounds=many")))
  assert "num_rounds" in line and "int" in line
  line = _one_line_error(_run(_cmd("/dev/null/x")))
  assert "cannot be written" in line
  help_proc = _run([sys.executable, TRAIN, "--help"])
  assert help_proc.returncode == 0 and "--workdir" in help_proc.stdout


def test_read_only_work_directory_is_refused_at_once(tmp_path):
  if os.geteuid() == 0:  # root writes anywhere chmod allows; /sys it cannot
    target = "/sys/robustfl_jax_test_run"
  else:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    target = str(ro / "run")
  start = time.time()
  line = _one_line_error(_run(_cmd(target)))
  assert time.time() - start < 5 + 10  # process start and imports included
  assert "cannot be written" in line


def test_config_path_resolves_from_any_directory(tmp_path):
  proc = subprocess.run(
      [sys.executable, TRAIN, "--config=digits_fedavg.py", *SMALL,
       "--config.num_rounds=1", f"--workdir={tmp_path / 'run'}"],
      capture_output=True, text=True, timeout=300, env=_env(),
      cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stderr.strip() == ""  # no absl / orbax chatter


def _steps(workdir):
  names = (os.path.basename(p) for p in
           glob.glob(os.path.join(workdir, "checkpoints", "*")))
  return sorted(int(n) for n in names if n.isdigit())


ROUNDS = ["--config.num_rounds=400", "--config.eval_every=200",
          "--config.checkpoint_every=25", "--config.attack.name=sign_flip",
          "--config.attack.num_byzantine=1",
          "--config.aggregator.name=trimmed_mean"]


@pytest.fixture(scope="module")
def reference_hash(tmp_path_factory):
  reference = str(tmp_path_factory.mktemp("reference") / "run")
  proc = _run(_cmd(reference, *ROUNDS))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.load(open(os.path.join(reference, "summary.json")))


def _start_and_wait(workdir, min_steps=2):
  child = subprocess.Popen(_cmd(workdir, *ROUNDS), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=_env(),
                           cwd=ROOT)
  deadline = time.time() + 240
  while time.time() < deadline and child.poll() is None:
    if len(_steps(workdir)) >= min_steps:
      break
    time.sleep(0.005)
  return child


def test_sigkill_then_resume_is_bit_identical(tmp_path, reference_hash):
  killed = str(tmp_path / "killed")
  child = _start_and_wait(killed)
  child.send_signal(signal.SIGKILL)
  child.communicate()
  assert child.returncode == -signal.SIGKILL, "the run ended before the kill"
  steps = _steps(killed)
  assert len(steps) >= 2 and steps[-1] < 400
  resumed = _run(_cmd(killed, *ROUNDS))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from the checkpoint of round" in resumed.stdout
  summary = json.load(open(os.path.join(killed, "summary.json")))
  assert summary["rounds_completed"] == 400
  assert summary["params_sha256"] == reference_hash["params_sha256"]
  assert summary["final_test_accuracy"] == reference_hash["final_test_accuracy"]


def test_ctrl_c_prints_one_line_and_the_rerun_resumes(tmp_path, reference_hash):
  run = str(tmp_path / "interrupted")
  child = _start_and_wait(run)
  child.send_signal(signal.SIGINT)
  _, err = child.communicate(timeout=120)
  assert child.returncode == 130, err[-2000:]
  lines = [l for l in err.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("interrupted at round "), err
  assert "rerun the same command to resume" in lines[0]
  resumed = _run(_cmd(run, *ROUNDS))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  summary = json.load(open(os.path.join(run, "summary.json")))
  assert summary["params_sha256"] == reference_hash["params_sha256"]
