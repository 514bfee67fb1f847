"""The conflict grid (robustfl_jax.experiments.conflict) on a tiny grid."""

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from robustfl_jax.experiments import conflict
from robustfl_jax.experiments import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROW_FIELDS = {
    "defense", "adversary", "data", "accuracy", "target_accuracy",
    "honest_excluded", "byzantine_excluded", "honest_excluded_last_round",
    "per_class_accuracy", "honest_excluded_per_round",
    "byzantine_excluded_per_round", "skipped_rounds", "seconds", "seed",
    "honest_excluded_after_warmup", "byzantine_excluded_after_warmup",
    "warmup_rounds"}
ROUNDS = 2
DEFENSES = ("mean", "gan_filter")
ADVERSARIES = ("none", "alie", "alie:z_formula=blades", "validation_evading",
               "distance_bounded:objective=targeted")
SEEDS = (0, 1)


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
      "grid.seeds": SEEDS, "aggregator.warmup_rounds": 1,
      "attack.num_steps": 2, **overrides})


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("conflict"))
  lines = []
  result = conflict.run_conflict(tiny_config(), workdir, log=lines.append)
  return result, workdir, lines


def test_rows_cover_the_grid_with_the_documented_fields(grid_run):
  result, _, _ = grid_run
  assert [(r["defense"], r["adversary"], r["seed"], r["data"])
          for r in result.rows] == [
              (d, a, s, "iid") for d in DEFENSES for a in ADVERSARIES
              for s in SEEDS]
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
  rows = {(r["defense"], r["adversary"]): r for r in result.rows
          if r["seed"] == 0}
  for adversary in ADVERSARIES:
    mean = rows[("mean", adversary)]
    assert mean["honest_excluded"] == 0.0 and mean["byzantine_excluded"] == 0.0
  # 'none' is computed too (the Byzantine clients are honest then).
  assert rows[("gan_filter", "none")]["byzantine_excluded"] is not None
  # The adversaries are really switched in: ALIE moves the mean's model.
  assert (rows[("mean", "alie")]["per_class_accuracy"]
          != rows[("mean", "none")]["per_class_accuracy"])
  # Both ALIE forms are in the grid and differ (z 0.2 vs -0.43 for (6, 2)).
  assert (rows[("mean", "alie")]["per_class_accuracy"]
          != rows[("mean", "alie:z_formula=blades")]["per_class_accuracy"])
  # The GAN filter keeps everyone in the warm-up round.
  gan = rows[("gan_filter", "validation_evading")]
  assert gan["honest_excluded_per_round"][0] == 0.0
  assert gan["byzantine_excluded_per_round"][0] == 0.0
  assert gan["honest_excluded_after_warmup"] == gan[
      "honest_excluded_per_round"][1]


def test_seeds_differ_and_are_summarised_with_their_sd(grid_run):
  result, _, _ = grid_run
  mean_none = [r for r in result.rows
               if (r["defense"], r["adversary"]) == ("mean", "none")]
  assert len(mean_none) == 2
  assert mean_none[0]["per_class_accuracy"] != mean_none[1]["per_class_accuracy"]
  summary = {(r["defense"], r["adversary"]): r
             for r in conflict.summarize(result.rows)}
  s = summary[("mean", "none")]
  accs = [r["accuracy"] for r in mean_none]
  assert s["num_seeds"] == 2
  assert s["accuracy"] == pytest.approx(sum(accs) / 2)
  assert s["accuracy_sd"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
  calibration = result.meta["gan_calibration"]["gan_filter"]
  assert calibration["margin"] >= 0.0
  assert calibration["calibration_false_positives"] <= 0.05 + 1e-9
  assert calibration["rule"] == "robust"
  assert calibration["margin"] == max(calibration["validation_k"],
                                      calibration["bound_k"])
  assert "Cantelli bound" in result.markdown
  assert "warm-up 1 rounds" in result.markdown


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
  assert any(line.startswith("[10/10]") for line in lines)
  assert conflict.headline(result).startswith("best worst-case accuracy: iid ")
  assert "label fidelity" in conflict.report(result)


def test_markdown_table_marks_missing_cells():
  rows = [{"defense": "mean", "adversary": "none", "data": "iid",
           "accuracy": acc, "target_accuracy": 0.25, "honest_excluded": 0.0,
           "honest_excluded_after_warmup": 0.0,
           "byzantine_excluded_after_warmup": 0.5} for acc in (0.5, 0.7)]
  table = conflict.markdown_table(rows, ["mean", "krum"], ["none"], ["iid"])
  assert table.splitlines() == [
      "| defense | adversary | iid |", "|---|---|---|",
      "| mean | none | 0.600±0.141 / 0.25 / 0.00 / 0.50 |",
      "| krum | none | n/a |"]


def test_parse_spec_reads_overrides():
  assert conflict.parse_spec("alie:z_formula=blades;z=1.5") == (
      "alie", {"z_formula": "blades", "z": 1.5})
  assert conflict.parse_spec("gan_filter") == ("gan_filter", {})
  with pytest.raises(ValueError, match="not field=value"):
    conflict.parse_spec("alie:blades")


def test_names_accept_flags_and_tuples():
  assert conflict.names("mean, krum,") == ("mean", "krum")
  assert conflict.names(("mean", "krum,median")) == ("mean", "krum", "median")


@pytest.mark.parametrize("overrides, field", [
    ({"grid.defenses": ("mean", "nope")}, "grid.defenses='nope' is not known"),
    ({"grid.adversaries": ("none", "nope")}, "grid.adversaries='nope' is not"),
    ({"grid.partitions": ("iid", "iid")}, "grid.partitions=.* repeats"),
    ({"attack.num_byzantine": 0}, "needs attack.num_byzantine >= 1"),
    ({"grid.partitions": ("dirichlet",), "data.alpha": 0.0}, "data.alpha"),
    ({"grid.adversaries": ("alie:zz=1",)}, "'zz' is not a field"),
    ({"grid.seeds": (1, 1)}, "grid.seeds"),
    ({"aggregator.validation_split": 0.0}, "aggregator.validation_split > 0"),
    ({"aggregator.threshold_rule": "median"}, "aggregator.threshold_rule in"),
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


def test_calibration_clients_share_the_split_disjointly():
  x_val = np.arange(13, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
  y_val = np.arange(13) % 10
  fed = conflict.calibration_clients(x_val, y_val, 4, seed=0)
  rows = np.asarray(fed.x)[..., 0].astype(int)          # [clients, k]
  assert rows.shape == (4, 3) and np.asarray(fed.count).tolist() == [3] * 4
  assert len(set(rows.ravel().tolist())) == 12           # disjoint shares
  np.testing.assert_array_equal(np.asarray(fed.y), y_val[rows])
  assert not np.asarray(fed.byzantine).any()
  # Fewer examples than clients: one each, repeating examples.
  assert np.asarray(conflict.calibration_clients(x_val[:3], y_val[:3], 5, 0).count).tolist() == [1] * 5
  with pytest.raises(ValueError, match="aggregator.validation_split > 0"):
    conflict.calibration_clients(x_val[:0], y_val[:0], 4, seed=0)


def test_the_margin_is_fitted_from_the_validation_split_only(grid_run):
  """The defense holds out a split disjoint from the generator's sample; the
  calibration reads only that split (its signature takes no data set) and
  depends on it."""
  from robustfl_jax.experiments import builders
  config = tiny_config()
  cell = conflict.cell_config(config, "gan_filter")
  dataset = builders.build_dataset(cell)
  model, params = builders.build_model(cell, dataset)
  defense = builders.build_defense(cell, model=model, params=params,
                                   dataset=dataset)
  gan_idx, val_idx = defense.artifacts["shared_indices"]
  assert val_idx.size > 0 and np.intersect1d(gan_idx, val_idx).size == 0
  assert val_idx.max() < len(dataset.y_train)
  x_val, y_val = defense.artifacts["validation"]
  np.testing.assert_array_equal(x_val, np.asarray(dataset.x_train)[val_idx])
  assert "dataset" not in inspect.signature(conflict.calibrate_gan_filter).parameters
  fit = lambda x, y: conflict.calibrate_gan_filter(
      cell, model=model, params=params, generator=defense.artifacts["generator"],
      x_val=x, y_val=y, log=lambda _: None)
  first = fit(x_val, y_val)
  assert first["validation_examples"] == len(y_val)
  # Deterministic: the grid's calibration is this one (same config, seed
  # and split, fitted in another process step).
  assert result_margin(grid_run) == first["margin"]
  # Other data in place of the split: other gaps.
  other = fit(np.asarray(dataset.x_test)[:len(y_val)], np.asarray(dataset.y_test)[:len(y_val)])
  assert other["honest_gap_quantiles"] != first["honest_gap_quantiles"]


def result_margin(grid_run):
  return grid_run[0].meta["gan_calibration"]["gan_filter"]["margin"]
