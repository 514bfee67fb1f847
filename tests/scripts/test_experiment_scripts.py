"""scripts/sweep.py, reproduce_romoa.py and certify.py end to end: one cheap
run each (exit code and an output file).

The grid runners themselves are tested in tests/experiments/ (test_sweep.py,
test_romoa_tables.py, test_certification.py).
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                        timeout=timeout, env=env, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_sweep_script(tmp_path):
  workdir = tmp_path / "sweep"
  _run(["scripts/sweep.py", f"--workdir={workdir}", "--attacks=sign_flip",
        "--aggregators=mean", "--num_byzantine=1", "--config.num_rounds=1"])
  assert "| mean | " in (workdir / "sweep.md").read_text()


def test_reproduce_romoa_script(tmp_path):
  workdir = tmp_path / "romoa"
  _run(["scripts/reproduce_romoa.py", "--config=configs/romoa_table2.py",
        f"--workdir={workdir}", "--config.reproduce.methods=('baseline',)",
        "--config.reproduce.attacks=('none',)", "--config.num_rounds=1",
        "--config.reproduce.seeds=(0,)", "--config.reproduce.variants=('',)",
        "--config.reproduce.average_last=1"])
  assert "| baseline | " in (workdir / "table.md").read_text()


def test_certify_script(tmp_path):
  workdir = tmp_path / "certify"
  _run(["scripts/certify.py", "--config=configs/digits_certify.py",
        f"--workdir={workdir}", "--config.certify.sigmas=(0.5,)",
        "--config.num_rounds=1", "--config.certify.num_points=2",
        "--config.certify.n=200", "--config.certify.n0=10"])
  assert (workdir / "certify.json").stat().st_size > 0
