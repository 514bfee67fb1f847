"""scripts/benchmark.py: its flags reach robustfl_jax.experiments.benchmarks."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITES = ("aggregators", "simulation", "coreset", "adversarial", "scaling")


def _run(*args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "scripts/benchmark.py", *args],
                        capture_output=True, text=True, timeout=timeout,
                        env=env, cwd=ROOT)


def test_unknown_suite_is_a_one_line_error(tmp_path):
  proc = _run("--only=aggregators,nope", f"--out_dir={tmp_path}")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "error: unknown benchmark suite(s) ['nope']")
  assert not list(tmp_path.iterdir())


def test_one_suite_writes_json_and_markdown(tmp_path):
  proc = _run("--only=coreset", "--quick", "--repeats=1", f"--out_dir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / "benchmark_coreset.json").read_text())
  assert result["wall_s"] > 0 and result["params"]["repeats"] == 1
  assert result["params"]["num_points"] == 3000  # the quick size
  table = (tmp_path / "benchmark_coreset.md").read_text()
  assert "1-NN" in table and table.strip() in proc.stdout


@pytest.mark.benchmark
def test_every_suite_runs_quick_and_writes_json_and_markdown(tmp_path):
  proc = _run("--quick", f"--out_dir={tmp_path}", timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for suite in SUITES:
    result = json.loads((tmp_path / f"benchmark_{suite}.json").read_text())
    assert result["wall_s"] > 0
    assert (tmp_path / f"benchmark_{suite}.md").read_text().strip()
