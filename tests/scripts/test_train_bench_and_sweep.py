"""The simulation benchmark's interface and the sweep's table."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(ROOT, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_bench_simulation_run_and_markdown():
  bench = _load("_bench_simulation")
  result = bench.run({"num_clients": 10, "timed_rounds": 2, "loop_rounds": 1,
                      "repeats": 1, "skip_scale": True})
  assert result["rounds_per_second"] > 0 and result["loop_rounds_per_second"] > 0
  assert abs(result["speedup"] - result["rounds_per_second"]
             / result["loop_rounds_per_second"]) < 0.1
  assert result["scale"] is None
  text = bench.to_markdown(result)
  assert "| speedup |" in text and "Scale" not in text


@pytest.mark.benchmark
def test_bench_simulation_scale_run():
  bench = _load("_bench_simulation")
  result = bench.run({"num_clients": 10, "timed_rounds": 2, "loop_rounds": 1,
                      "repeats": 1, "scale_clients": 40, "scale_examples": 4})
  assert result["scale"]["num_clients"] == 40
  assert result["scale"]["updates_gib"] > 0
  assert "40 synthetic clients" in bench.to_markdown(result)


def test_sweep_table_marks_worst_case_and_missing():
  sweep = _load("sweep")
  results = [
      {"attack": "a", "aggregator": "mean", "num_byzantine": 1,
       "final_test_accuracy": 0.9},
      {"attack": "b", "aggregator": "mean", "num_byzantine": 1,
       "final_test_accuracy": 0.1},
      {"attack": "a", "aggregator": "krum", "num_byzantine": 1,
       "final_test_accuracy": 0.8},
      {"attack": "b", "aggregator": "krum", "num_byzantine": 1,
       "final_test_accuracy": None, "error": "too large"},
  ]
  table = sweep.markdown_table(results, ["a", "b"], ["mean", "krum"], [1])
  lines = table.splitlines()
  assert lines[0] == "| aggregator | a f=1 | b f=1 | worst f=1 |"
  assert lines[2] == "| mean | 0.900 | 0.100 | **0.100** |"
  assert lines[3] == "| krum | 0.800 | n/a | **0.800** |"
