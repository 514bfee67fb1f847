"""scripts/benchmark.py runs every suite it lists (--quick sizes)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITES = ("aggregators", "simulation", "coreset", "adversarial")


def test_every_suite_runs_quick_and_writes_json_and_markdown(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, "scripts/benchmark.py", "--quick",
       f"--out_dir={tmp_path}"], capture_output=True, text=True, timeout=900,
      env=env, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "not available" not in proc.stdout
  for suite in SUITES:
    result = json.loads((tmp_path / f"benchmark_{suite}.json").read_text())
    assert result["wall_s"] > 0
    assert (tmp_path / f"benchmark_{suite}.md").read_text().strip()
