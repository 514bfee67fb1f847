"""scripts/reproduce_romoa.py and scripts/certify.py end to end, tiny settings.

(scripts/conflict.py runs end to end in notebooks/06, which the notebook test
executes.)
"""

import json
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


def test_reproduce_romoa_writes_rows_table_and_plot(tmp_path):
  workdir = tmp_path / "romoa"
  _run(["scripts/reproduce_romoa.py", "--config=configs/romoa_table1.py",
        f"--workdir={workdir}", "--config.reproduce.participants=(10,)",
        "--config.reproduce.methods=('romoa','baseline')",
        "--config.reproduce.attacks=('TPA',)", "--config.num_rounds=2",
        "--config.reproduce.average_last=1"])
  rows = json.loads((workdir / "results.json").read_text())
  # n = 10 has the paper's three adversary counts, for each of two methods.
  assert sorted((r["method"], r["adversaries"]) for r in rows) == sorted(
      (m, f) for m in ("romoa", "baseline") for f in (1, 3, 4))
  for row in rows:
    assert row["n"] == 10 and row["attack"] == "TPA"
    assert 0.0 <= row["error"] <= 1.0
  assert (workdir / "table.md").read_text().count("| TPA |") == 2
  assert (workdir / "error_vs_fraction.png").stat().st_size > 0


def test_certify_writes_table_curve_and_per_point_radii(tmp_path):
  workdir = tmp_path / "certify"
  _run(["scripts/certify.py", "--config=configs/digits_certify.py",
        f"--workdir={workdir}", "--config.certify.sigmas=(0.5,)",
        "--config.num_rounds=2", "--config.certify.num_points=3",
        "--config.certify.n=1000", "--config.certify.n0=20"])
  report = json.loads((workdir / "certify.json").read_text())
  (result,) = report["results"]
  assert result["sigma"] == 0.5 and result["num_points"] == 3
  curve = result["certified_accuracy"]
  assert len(curve) == len(result["radii"])
  # Certified accuracy can only fall as the radius grows.
  assert all(a >= b for a, b in zip(curve, curve[1:]))
  assert len(result["radius"]) == 3
  assert (workdir / "certify.md").exists() and (workdir / "certify.png").exists()
