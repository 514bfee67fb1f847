"""The attack x rule x f grid (robustfl_jax.experiments.sweep) on a tiny grid."""

import json
import os

import pytest

from robustfl_jax.experiments import load_config
from robustfl_jax.experiments import sweep

ATTACKS = ("sign_flip", "scaling")
AGGREGATORS = ("mean", "krum")
# Krum needs n > 2f + 2: with 6 clients f=2 fails, rows with an error (and
# only two cells compile a round).
NUM_BYZANTINE = (2,)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sweep"))
  base = load_config("digits_fedavg.py", {
      "num_rounds": 1, "num_clients": 6, "model.hidden": (16,),
      "client.local_epochs": 1})
  lines = []
  rows = sweep.run_sweep(base, workdir, attacks=ATTACKS,
                         aggregators=AGGREGATORS, num_byzantine=NUM_BYZANTINE,
                         log=lines.append)
  return rows, workdir, lines, base


def test_rows_cover_the_grid_with_the_documented_fields(sweep_run):
  rows, workdir, lines, _ = sweep_run
  assert [(r["num_byzantine"], r["attack"], r["aggregator"]) for r in rows] == [
      (f, a, g) for f in NUM_BYZANTINE for a in ATTACKS for g in AGGREGATORS]
  for row in rows:
    failed = row["aggregator"] == "krum"
    if failed:
      assert set(row) == {"attack", "aggregator", "num_byzantine",
                          "final_test_accuracy", "error"}
      assert row["final_test_accuracy"] is None and "krum" in row["error"]
    else:
      assert set(row) == {"attack", "aggregator", "num_byzantine",
                          "final_test_accuracy", "final_test_loss"}
      assert 0.0 <= row["final_test_accuracy"] <= 1.0
  with open(os.path.join(workdir, "results.jsonl")) as f:
    assert [json.loads(line) for line in f] == rows
  assert len(lines) >= len(rows) and lines[0].startswith("[1/4]")


def test_outputs_and_cell_folders(sweep_run):
  rows, workdir, _, base = sweep_run
  with open(os.path.join(workdir, "sweep.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(os.path.join(workdir, "sweep.md")) as f:
    assert f.read() == sweep.markdown(rows, base) + "\n"
  summary = json.load(open(os.path.join(workdir, "scaling_mean_f2",
                                        "summary.json")))
  row = next(r for r in rows if (r["attack"], r["aggregator"],
                                 r["num_byzantine"]) == ("scaling", "mean", 2))
  assert summary["final_test_accuracy"] == row["final_test_accuracy"]
  assert summary["rounds_completed"] == 1


def test_worst_case_column_is_the_min_over_attacks(sweep_run):
  rows, _, _, _ = sweep_run
  worst = sweep.worst_case(rows)
  table = sweep.markdown_table(rows, ATTACKS, AGGREGATORS, NUM_BYZANTINE)
  for rule in AGGREGATORS:
    line = next(l for l in table.splitlines() if l.startswith(f"| {rule} |"))
    cells = line.strip("| ").split(" | ")[1:]
    for k, f in enumerate(NUM_BYZANTINE):
      accs = [r["final_test_accuracy"] for r in rows
              if r["aggregator"] == rule and r["num_byzantine"] == f
              and r["final_test_accuracy"] is not None]
      assert worst[(rule, f)] == (min(accs) if accs else None)
      per_attack = cells[k * len(ATTACKS):(k + 1) * len(ATTACKS)]
      shown = [float(c) for c in per_attack if c != "n/a"]
      worst_cell = cells[len(ATTACKS) * len(NUM_BYZANTINE) + k]
      assert worst_cell == (f"**{min(shown):.3f}**" if shown else "n/a")
  assert sweep.headline(rows).startswith("worst case over 2 attacks at f=2: ")


def test_table_marks_worst_case_and_missing():
  rows = [
      {"attack": "a", "aggregator": "mean", "num_byzantine": 1,
       "final_test_accuracy": 0.9},
      {"attack": "b", "aggregator": "mean", "num_byzantine": 1,
       "final_test_accuracy": 0.1},
      {"attack": "a", "aggregator": "krum", "num_byzantine": 1,
       "final_test_accuracy": 0.8},
      {"attack": "b", "aggregator": "krum", "num_byzantine": 1,
       "final_test_accuracy": None, "error": "too large"},
  ]
  assert sweep.grid_axes(rows) == (["a", "b"], ["mean", "krum"], [1])
  lines = sweep.markdown_table(rows, ["a", "b"], ["mean", "krum"],
                               [1]).splitlines()
  assert lines[0] == "| aggregator | a f=1 | b f=1 | worst f=1 |"
  assert lines[2] == "| mean | 0.900 | 0.100 | **0.100** |"
  assert lines[3] == "| krum | 0.800 | n/a | **0.800** |"
  assert sweep.headline(rows) == ("worst case over 2 attacks at f=1: "
                                  "mean 0.100, krum 0.800")


def test_cell_config_replaces_only_the_cell_fields():
  base = load_config("digits_fedavg.py")
  config = sweep.cell_config(base, attack="alie", aggregator="krum",
                             num_byzantine=3)
  assert (config.attack.name, config.aggregator.name,
          config.attack.num_byzantine) == ("alie", "krum", 3)
  assert config.eval_every == config.num_rounds == base.num_rounds
  assert base.attack.name == "none"  # the base is left alone


@pytest.mark.parametrize("grid, message", [
    ({"attacks": ["sign_flp"]}, "attacks='sign_flp' is not known"),
    ({"aggregators": ["krun"]}, "aggregators='krun' is not known"),
    ({"num_byzantine": ["x"]}, "num_byzantine must be whole numbers"),
])
def test_misspelled_grid_fails_before_any_run(tmp_path, grid, message):
  base = load_config("digits_fedavg.py")
  with pytest.raises(ValueError, match=message):
    sweep.run_sweep(base, str(tmp_path / "run"), **grid)
  assert not os.path.exists(tmp_path / "run")
