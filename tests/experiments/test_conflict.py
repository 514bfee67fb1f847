"""The conflict grid (robustfl_jax.experiments.conflict) on a tiny grid."""

import json
import os
import subprocess
import sys

import pytest

from robustfl_jax.experiments import conflict
from robustfl_jax.experiments import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROW_FIELDS = {
    "defense", "adversary", "data", "accuracy", "target_accuracy",
    "honest_excluded", "byzantine_excluded", "honest_excluded_last_round",
    "per_class_accuracy", "honest_excluded_per_round",
    "byzantine_excluded_per_round", "skipped_rounds", "seconds"}
ROUNDS = 2
DEFENSES = ("mean", "gan_filter")
ADVERSARIES = ("none", "alie", "validation_evading")


def tiny_config(**overrides):
  """configs/conflict.py, shrunk: 6 clients (2 Byzantine), 2 rounds, a
  GAN of a few steps, a cheap validation-evading adversary."""
  return load_config("conflict.py", {
      "num_rounds": ROUNDS, "num_clients": 6, "attack.num_byzantine": 2,
      "aggregator.num_byzantine": 2, "aggregator.num_trim": 2,
      "aggregator.gan_steps": 3, "aggregator.validation_per_class": 2,
      "attack.poison_steps": 2, "attack.num_candidates": 3,
      "grid.diversity_per_class": 3, "grid.defenses": DEFENSES,
      "grid.adversaries": ADVERSARIES, "grid.partitions": ("iid",),
      **overrides})


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("conflict"))
  lines = []
  result = conflict.run_conflict(tiny_config(), workdir, log=lines.append)
  return result, workdir, lines


def test_rows_cover_the_grid_with_the_documented_fields(grid_run):
  result, _, _ = grid_run
  assert [(r["defense"], r["adversary"], r["data"]) for r in result.rows] == [
      (d, a, "iid") for d in DEFENSES for a in ADVERSARIES]
  for row in result.rows:
    behaviour = row["defense"] == "gan_filter"
    assert set(row) == ROW_FIELDS | ({"filtered_per_round"} if behaviour
                                     else set())
    assert 0.0 <= row["accuracy"] <= 1.0
    assert 0.0 <= row["honest_excluded"] <= 1.0
    assert 0.0 <= row["byzantine_excluded"] <= 1.0
    assert len(row["honest_excluded_per_round"]) == ROUNDS
    assert len(row["per_class_accuracy"]) == 10
    assert row["target_accuracy"] == row["per_class_accuracy"][6]
    if behaviour:
      assert len(row["filtered_per_round"]) == ROUNDS
      assert all(0 <= c < 6 for r in row["filtered_per_round"] for c in r)


def test_the_mean_excludes_no_one_and_the_adversaries_change_the_model(grid_run):
  result, _, _ = grid_run
  rows = {(r["defense"], r["adversary"]): r for r in result.rows}
  for adversary in ADVERSARIES:
    mean = rows[("mean", adversary)]
    assert mean["honest_excluded"] == 0.0 and mean["byzantine_excluded"] == 0.0
  # 'none' is computed too (the Byzantine clients are honest then).
  assert rows[("gan_filter", "none")]["byzantine_excluded"] is not None
  # The adversaries are really switched in: ALIE moves the mean's model.
  assert (rows[("mean", "alie")]["per_class_accuracy"]
          != rows[("mean", "none")]["per_class_accuracy"])


def test_outputs_are_written(grid_run):
  result, workdir, lines = grid_run
  for name in ("results.json", "meta.json", "conflict.md", "conflict.png",
               "gan.json", "gan_samples.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == result.rows
  with open(os.path.join(workdir, "conflict.md")) as f:
    assert f.read() == result.markdown
  assert "| gan_filter | validation_evading |" in result.markdown
  assert result.meta["partitions"] == ["iid"]
  assert result.meta["num_byzantine"] == 2
  assert set(result.gan) >= {"wgan_gp", "gan", "real_test_diversity"}
  assert any(line.startswith("[6/6]") for line in lines)
  assert conflict.headline(result).startswith("best worst-case accuracy: iid ")
  assert "label fidelity" in conflict.report(result)


def test_markdown_table_marks_missing_cells():
  row = {"defense": "mean", "adversary": "none", "data": "iid",
         "accuracy": 0.5, "target_accuracy": 0.25, "honest_excluded": 0.0}
  table = conflict.markdown_table([row], ["mean", "krum"], ["none"], ["iid"])
  assert table.splitlines() == ["| defense | adversary | iid |", "|---|---|---|",
                                "| mean | none | 0.500 / 0.25 / 0.00 |",
                                "| krum | none | n/a |"]


def test_names_accept_flags_and_tuples():
  assert conflict.names("mean, krum,") == ("mean", "krum")
  assert conflict.names(("mean", "krum,median")) == ("mean", "krum", "median")


@pytest.mark.parametrize("overrides, field", [
    ({"grid.defenses": ("mean", "nope")}, "grid.defenses='nope' is not known"),
    ({"grid.adversaries": ("none", "nope")}, "grid.adversaries='nope' is not"),
    ({"grid.partitions": ("iid", "iid")}, "grid.partitions=.* repeats"),
    ({"attack.num_byzantine": 0}, "needs attack.num_byzantine >= 1"),
    ({"grid.partitions": ("dirichlet",), "data.alpha": 0.0}, "data.alpha"),
])
def test_validate_names_the_field(overrides, field):
  with pytest.raises(ValueError, match=field):
    conflict.validate(tiny_config(**overrides))


def test_script_reports_a_bad_grid_in_one_line(tmp_path):
  completed = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "conflict.py"),
       "--config.grid.defenses=mean,nope", f"--workdir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert completed.returncode == 2
  assert completed.stderr.strip().splitlines()[-1].startswith(
      "error: grid.defenses='nope' is not known")
