"""robustfl_jax.experiments.benchmarks: each suite on tiny sizes, and the dispatch."""

import functools
import json
import types

import pytest

from robustfl_jax.experiments import benchmarks, reporting
from robustfl_jax.experiments.benchmarks import (adversarial, aggregators,
                                                 coreset, simulation)


def test_aggregator_rules_agree_with_numpy():
  lines = []
  result = aggregators.run(shapes=((8, 64),), repeats=1,
                           rules=["mean", "coordinate_median", "krum", "nnm"],
                           log=lines.append)
  assert [r["rule"] for r in result["rows"]] == [
      "mean", "coordinate_median", "krum", "nnm"]
  for row in result["rows"]:
    assert (row["n"], row["d"], row["f"]) == (8, 64, 1)
    assert row["max_abs_diff"] < 1e-4 and row["speedup"] > 0
  assert len(lines) == 4
  text = aggregators.to_markdown(result)
  assert "| rule | n=8, d=64 |" in text and "| krum |" in text


def test_bench_simulation_run_and_markdown():
  result = simulation.run({"num_clients": 10, "timed_rounds": 2, "loop_rounds": 1,
                           "repeats": 1, "skip_scale": True}, log=lambda _: None)
  assert result["rounds_per_second"] > 0 and result["loop_rounds_per_second"] > 0
  assert abs(result["speedup"] - result["rounds_per_second"]
             / result["loop_rounds_per_second"]) < 0.1
  assert result["arithmetic_floor_ms"] > 0
  assert result["scale"] is None
  text = simulation.to_markdown(result)
  assert "| speedup |" in text and "Scale" not in text


@pytest.mark.benchmark
def test_bench_simulation_scale_run():
  result = simulation.run({"num_clients": 10, "timed_rounds": 2, "loop_rounds": 1,
                           "repeats": 1, "scale_clients": 40, "scale_examples": 4})
  assert result["scale"]["num_clients"] == 40
  assert result["scale"]["updates_gib"] > 0
  assert "40 synthetic clients" in simulation.to_markdown(result)


def test_coreset_run_and_markdown_on_tiny_sizes():
  # quick sizes, with overrides winning over them.
  result = coreset.run(quick=True, num_points=1000, log=lambda _: None)
  assert result["params"]["dim"] == coreset.QUICK["dim"]
  assert result["coreset"]["num_selected"] == 100
  # JAX and NumPy implement the same algorithm: identical picks on the timed prefix.
  assert result["coreset"]["agreement_numpy_tuned"] == 1.0
  assert result["coreset"]["agreement_numpy_reference"] == 1.0
  assert result["nearest_neighbor"]["max_abs_difference"] < 1e-3
  text = coreset.to_markdown(result)
  assert "greedy coreset 100 of 1000 x 200" in text and "1-NN" in text


def test_adversarial_fused_pgd_equals_the_loop():
  result = adversarial.run({"batch_sizes": (8,), "repeats": 1, "calls": 1},
                           log=lambda _: None)
  assert [(r["model"], r["batch"]) for r in result["rows"]] == [
      ("MLP 64-128-10", 8), ("Romoa MNIST CNN (8x8x1)", 8)]
  assert all(r["same_result"] and r["fused_ms"] > 0 for r in result["rows"])
  assert "| MLP 64-128-10 | 8 |" in adversarial.to_markdown(result)


@pytest.fixture
def fake_suite(monkeypatch):
  calls = []

  def run(settings=None, *, quick=False, log=print, **overrides):
    calls.append({"quick": quick, **overrides})
    log("  fake line")
    return {"rows": [{"value": 1.5}]}

  suite = types.SimpleNamespace(run=run, to_markdown=lambda r: "| fake |\n|---|")
  monkeypatch.setitem(benchmarks.SUITES, "fake", suite)
  return calls


def test_run_suites_writes_json_and_markdown(tmp_path, fake_suite):
  lines = []
  reports = benchmarks.run_suites(["fake"], quick=True, out_dir=str(tmp_path / "out"),
                                  repeats=2, log=lines.append)
  assert fake_suite == [{"quick": True, "repeats": 2}]
  report = reports["fake"]
  saved = json.loads((tmp_path / "out" / "benchmark_fake.json").read_text())
  assert saved["rows"] == [{"value": 1.5}] and saved["wall_s"] >= 0
  assert report.result == saved
  assert (tmp_path / "out" / "benchmark_fake.md").read_text() == "| fake |\n|---|\n"
  assert lines[0] == "[fake] running (quick) ..." and "  fake line" in lines
  assert "| fake |\n|---|" in lines
  # None keeps each suite's own repetitions.
  benchmarks.run_suites(["fake"], out_dir=str(tmp_path / "out"), log=lines.append)
  assert fake_suite[-1] == {"quick": False}


def test_run_suites_publishes(tmp_path, monkeypatch, fake_suite):
  docs = tmp_path / "docs"
  monkeypatch.setattr(reporting, "publish", functools.partial(
      reporting.publish, docs_dir=str(docs), readme=str(tmp_path / "README.md")))
  benchmarks.run_suites(["fake"], out_dir=str(tmp_path / "out"), log=lambda _: None,
                        publish=True)
  text = (docs / "benchmark_fake.md").read_text()
  assert text.startswith("# benchmark_fake\n\nWritten by `python ")
  assert "| fake |\n|---|" in text
  combined = (docs / "benchmark.md").read_text()
  assert "- at the start: " in combined and "- at the end: " in combined
  assert "load average" in combined and "## fake (" in combined
  assert "| fake |\n|---|" in combined


def test_unknown_suite_fails_before_running(tmp_path, fake_suite):
  with pytest.raises(ValueError, match=r"unknown benchmark suite\(s\) \['nope'\]; "
                     r"choose from \[.*'aggregators'"):
    benchmarks.run_suites(["fake", "nope"], out_dir=str(tmp_path))
  assert not fake_suite and not list(tmp_path.iterdir())
  assert benchmarks.check_suites([]) == list(benchmarks.SUITES)
  assert benchmarks.check_suites(["coreset", "aggregators"]) == ["coreset", "aggregators"]


def test_scaling_rows_and_markdown():
  """One device in this process: both placements measured, sharded bytes
  reported per device; the table has a row per rule."""
  from robustfl_jax.experiments.benchmarks import scaling  # pylint: disable=import-outside-toplevel
  rows = scaling.measure(1, shapes=[(8, 256)], rules=["coordinate_median",
                                                       "krum"],
                         num_byzantine=1, repeats=1, skip_time=False)
  assert [r["rule"] for r in rows] == ["coordinate_median", "krum"]
  for r in rows:
    assert r["matrix_bytes"] == 8 * 256 * 4
    assert r["sharded_bytes"] >= r["matrix_bytes"]  # the input is counted
    assert r["sharded_s"] > 0 and r["gathered_s"] > 0
  text = scaling.to_markdown({"backend": "cpu", "rows": rows})
  assert "| 1 | 8 | 256 | krum |" in text


def test_all_runs_every_suite_and_writes_one_json_with_every_ratio(tmp_path, monkeypatch):
  class _Suite:
    def __init__(self, speedup):
      self.speedup = speedup

    def run(self, quick=False, log=print, **overrides):
      return {"rows": [{"rule": "x", "speedup": self.speedup}], "ratio_note": "n/a"}

    def to_markdown(self, result):
      return f"| x | {result['rows'][0]['speedup']}x |"

  monkeypatch.setattr(benchmarks, "SUITES", {"a": _Suite(2.5), "b": _Suite(0.5)})
  assert benchmarks.check_suites(["all"]) == ["a", "b"]
  with pytest.raises(ValueError, match="'all' cannot be combined"):
    benchmarks.check_suites(["all", "a"])
  with pytest.raises(ValueError, match="or 'all'"):
    benchmarks.check_suites(["nope"])
  benchmarks.run_suites(["all"], out_dir=str(tmp_path), log=lambda _: None)
  combined = json.loads((tmp_path / "benchmark_all.json").read_text())
  assert {k: v["ratios"] for k, v in combined["suites"].items()} == {
      "a": {"rows/0/speedup": 2.5}, "b": {"rows/0/speedup": 0.5}}
  env = combined["environment_before"]
  assert env["backend"] == "cpu" and env["jax_version"] and env["device_count"] >= 1
  assert "load average" in env["machine"]
  # One suite alone writes no combined file.
  benchmarks.run_suites(["a"], out_dir=str(tmp_path / "one"), log=lambda _: None)
  assert not (tmp_path / "one" / "benchmark_all.json").exists()


def test_aggregator_suite_keeps_order_statistics_rules_past_the_cutoff():
  result = aggregators.run(shapes=((8, 64), (12, 64)), repeats=1, all_rules_max_n=8,
                           rules=["krum", "trimmed_mean"], log=lambda _: None)
  assert [(r["rule"], r["n"]) for r in result["rows"]] == [
      ("krum", 8), ("trimmed_mean", 8), ("trimmed_mean", 12)]
  text = aggregators.to_markdown(result)
  assert "Compile time (s)" in text and text.count("| trimmed_mean |") == 2
  line = aggregators.headline(result)
  assert line.startswith("at n=12, d=64: trimmed_mean ") and "; krum at n=8, d=64: " in line
