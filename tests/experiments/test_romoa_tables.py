"""Romoa's tables (robustfl_jax.experiments.romoa_tables) on a tiny grid."""

import json
import os

import numpy as np
import pytest

from robustfl_jax.experiments import build_experiment, load_config
from robustfl_jax.experiments import romoa_tables

ROUNDS = 2
METHODS = ("romoa", "baseline")
SEEDS = (0, 1)
RUN_FIELDS = {"variant", "n", "adversaries", "method", "attack", "seed",
              "error", "final_error", "accuracy", "diverged", "error_curve",
              "accuracy_curve", "attack_name", "attack_params", "moving_rate",
              "static_f", "seconds"}
FACTOR_FIELDS = {"romoa_adversary_factor", "romoa_honest_factor_min",
                 "romoa_honest_factor_max"}


def tiny_table1(**overrides):
  """configs/romoa_table1.py, n = 10 only (f = 1, 3), TPA, two methods."""
  return load_config("romoa_table1.py", {
      "reproduce.participants": (10,), "reproduce.methods": METHODS,
      "reproduce.adversaries": {"10": (1, 3)},
      "reproduce.attacks": ("TPA",), "num_rounds": ROUNDS,
      "reproduce.seeds": SEEDS, "reproduce.average_last": 1, **overrides})


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("romoa"))
  base = tiny_table1()
  lines = []
  results = romoa_tables.run_romoa_tables(base, workdir, log=lines.append)
  return results, workdir, lines, base


def test_runs_cover_the_grid_and_seeds_with_the_documented_fields(table_run):
  results, workdir, lines, _ = table_run
  runs = results["runs"]
  assert [(r["method"], r["seed"], r["adversaries"]) for r in runs] == [
      (m, s, f) for m in METHODS for s in SEEDS for f in (1, 3)]
  for run in runs:
    assert set(run) == RUN_FIELDS | (FACTOR_FIELDS if run["method"] == "romoa"
                                     else set())
    assert run["n"] == 10 and run["attack"] == "TPA"
    assert run["moving_rate"] == 1.0
    assert run["attack_params"]["boost"] == 10.0
    assert 0.0 <= run["error"] <= 1.0 and 0.0 <= run["accuracy"] <= 1.0
    assert len(run["error_curve"]) == ROUNDS
    assert run["error"] == run["final_error"]  # average_last = 1
  # Seeds differ (initialisation, data order).
  a, b = (r["error_curve"] for r in runs[:4:2])
  assert a != b
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == json.loads(json.dumps(results))
  assert results["settings"]["elementwise"] == "client"
  assert results["settings"]["moving_rate"] == "1"
  assert len(lines) == len(runs) + 2


def test_cells_average_the_seeds_and_keep_the_paper_number(table_run):
  results, _, _, _ = table_run
  for cell in results["cells"]:
    runs = [r for r in results["runs"] if (r["method"], r["adversaries"]) ==
            (cell["method"], cell["adversaries"])]
    ok = [r["error"] for r in runs if not r["diverged"]]
    assert cell["seeds"] == len(SEEDS)
    assert cell["diverged"] == len(runs) - len(ok)
    if ok:
      np.testing.assert_allclose(cell["error"], np.mean(ok))
    np.testing.assert_allclose(cell["accuracy"],
                               np.mean([r["accuracy"] for r in runs]))
    paper = romoa_tables.PAPER_TABLE1["TPA"][cell["method"]][10]
    assert cell["paper_mnist"] == paper[(1, 3).index(cell["adversaries"])]


def test_factor_traces_for_the_first_seed_only(table_run):
  _, workdir, _, _ = table_run
  with open(os.path.join(workdir, "factor_traces.json")) as f:
    traces = json.load(f)
  assert sorted(traces) == ["|n=10|f=1|TPA|romoa|seed=0",
                            "|n=10|f=3|TPA|romoa|seed=0"]
  for trace in traces.values():
    assert len(trace["factor_mean"]) == ROUNDS
    assert all(len(row) == 10 for row in trace["factor_mean"])
    assert sum(trace["byzantine"]) in (1, 3)


def test_reused_round_matches_a_fresh_build(table_run):
  """The grid reuses one compiled round per (method, seed) with the
  Byzantine set swapped as data; a run built from scratch is the same."""
  results, _, _, base = table_run
  config = romoa_tables.cell_config(base, 10, "romoa", "TPA", 3, seed=1)
  byzantine = np.zeros(10, bool)
  byzantine[:3] = True
  fresh = romoa_tables.run_cell(build_experiment(config), byzantine, config)
  run = next(r for r in results["runs"]
             if (r["method"], r["adversaries"], r["seed"]) == ("romoa", 3, 1))
  for key, value in fresh.items():
    assert run[key] == value, key


def test_diverged_runs_are_flagged_and_never_averaged():
  # A constructed divergent run: chance-level accuracy or a NaN round.
  assert romoa_tables.is_diverged(0.10, 10, 0.05, False)
  assert romoa_tables.is_diverged(0.9, 10, 0.05, True)
  assert romoa_tables.is_diverged(float("nan"), 10, 0.05, False)
  assert not romoa_tables.is_diverged(0.2, 10, 0.05, False)
  runs = [{"variant": "", "n": 10, "adversaries": 1, "method": "baseline",
           "attack": "UPA", "seed": s, "error": e, "final_error": e,
           "accuracy": 1 - e, "diverged": d}
          for s, (e, d) in enumerate(((0.2, False), (0.4, False),
                                      (0.9, True)))]
  cell, = romoa_tables.summarize(runs, 1, lambda n: (1, 3, 4))
  assert cell["diverged"] == 1 and cell["error"] == pytest.approx(0.3)
  assert cell["error_sd"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
  assert cell["diverged_error"] == pytest.approx(0.9)
  assert romoa_tables.cell_text(cell).endswith("; 1/3 diverged")
  all_div, = romoa_tables.summarize(
      [dict(r, diverged=True) for r in runs], 1, lambda n: (1, 3, 4))
  assert all_div["error"] is None
  assert romoa_tables.cell_text(all_div).startswith("diverged 3/3")


def test_run_with_an_exploding_attack_is_flagged_diverged():
  """A constructed divergent run through run_cell: a x1e4 scaling client
  against the mean sends the model to chance level."""
  base = tiny_table1(**{"num_rounds": 2})
  config = romoa_tables.cell_config(base, 10, "baseline", "none", 0)
  config.attack.name = "scaling"
  config.attack.num_byzantine = 1
  config.attack.factor = -1e4
  byzantine = np.zeros(10, bool)
  byzantine[0] = True
  out = romoa_tables.run_cell(build_experiment(config), byzantine, config)
  assert out["diverged"], out


def test_tailored_upa_against_the_mean_reaches_error_one_half():
  """UPA tailored to the mean (the unbounded deviation, lambda_scale of
  configs/romoa_table1.py) at n = 10, f = 1 on digits: error >= 0.5."""
  base = tiny_table1(**{"num_rounds": 3, "reproduce.average_last": 3})
  config = romoa_tables.cell_config(base, 10, "baseline", "UPA", 1)
  assert config.attack.name == "fang_deviation"
  byzantine = np.zeros(10, bool)
  byzantine[0] = True
  out = romoa_tables.run_cell(build_experiment(config), byzantine, config)
  assert out["error"] >= 0.5, out["error_curve"]
  assert romoa_tables.attack_params(config)["lambda_scale"] == 30.0


def test_table_note_and_plot(table_run, tmp_path):
  results, workdir, _, base = table_run
  table = open(os.path.join(workdir, "table.md")).read()
  assert table == romoa_tables.markdown(results, base) + "\n"
  assert table.count("| TPA | romoa |") == 2
  assert "**config as given, n = 10**" in table
  with open(os.path.join(workdir, "error_vs_fraction.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  line = romoa_tables.headline(results, base)
  assert line.startswith("n = 10, f = 1, error ours (paper MNIST), 2 seeds")
  assert "TPA romoa " in line and "(0.01), baseline " in line
  (tmp_path / "romoa_table1.md").write_text("# romoa_table1\n\nTABLE ONE\n")
  path = romoa_tables.publish_note(str(tmp_path))
  note = open(path).read()
  assert "TABLE ONE" in note and "Table 2" not in note.split("## Where")[0]
  for name, _ in romoa_tables.SILENT_OR_INCONSISTENT:
    assert f"**{name}**" in note


def test_table2_markdown_and_headline_from_cells():
  base = load_config("romoa_table2.py", {"reproduce.variants": ("",)})
  cells = [{"variant": "", "n": 10, "adversaries": 0 if a == "none" else 1,
            "method": m, "attack": a, "error": e, "error_sd": 0.01,
            "final_error": e, "final_error_sd": None, "accuracy": 0.9,
            "accuracy_sd": None, "diverged": 0, "seeds": 3,
            "paper_mnist": romoa_tables.PAPER_TABLE2[m][a]}
           for m, errors in (("baseline", (0.1, 0.2, 0.3)),
                             ("romoa", (0.4, 0.5, 0.6)))
           for a, e in zip(("none", "TPA", "UPA"), errors)]
  lines = romoa_tables.markdown_table(cells, base).splitlines()
  assert lines[0].startswith("| attack | method | f | error (last 5) |")
  assert lines[2] == ("| none | baseline | 0 | 0.100 +- 0.010 | 0.100 | "
                      "0.900 | 0.1490 |")
  assert romoa_tables.headline({"cells": cells}, base) == (
      "error none / TPA / UPA: baseline 0.10/0.20/0.30, romoa "
      "0.40/0.50/0.60 (paper romoa 0.13/0.43/0.16; 3 seeds)")


def test_variants_static_f_and_cell_config():
  base = tiny_table1()
  assert romoa_tables.static_f(10, 4) == 3 and romoa_tables.static_f(20, 6) == 6
  krum = romoa_tables.cell_config(base, 10, "krum", "UPA", 4)
  assert (krum.aggregator.name, krum.attack.name,
          krum.attack.num_byzantine) == ("krum", "fang_krum", 3)
  clean = romoa_tables.cell_config(base, 10, "romoa", "none", 3)
  assert (clean.attack.name, clean.attack.num_byzantine) == ("none", 0)
  assert romoa_tables.paper_error(2, "TPA", "romoa", 10, 1, (1,)) == 0.432999
  v = romoa_tables.cell_config(base, 10, "romoa", "TPA", 1, seed=4,
                               variant="romoa.tau=1;attack.boost=1;"
                               "romoa.moving_rate=1/n")
  assert (v.romoa.tau, v.attack.boost, v.romoa.moving_rate, v.seed) == (
      1, 1.0, "1/n", 4)
  assert romoa_tables.paper_suspect("UPA", "rfa", 200, 66, (1, 66, 99))
  assert romoa_tables.paper_suspect("UPA", "romoa", 10, 1, (1, 3, 4)) is None


def test_bad_sections_are_value_errors_naming_the_field(tmp_path):
  base = tiny_table1(**{"reproduce.methods": ("romoa", "bulyan")})
  with pytest.raises(ValueError, match="reproduce.methods.*bulyan"):
    romoa_tables.run_romoa_tables(base, str(tmp_path))
  base = tiny_table1(**{"reproduce.variants": ("romoa.speed=1",)})
  with pytest.raises(ValueError, match="reproduce.variants.*romoa.speed"):
    romoa_tables.validate(base)
  with pytest.raises(ValueError, match="reproduce.variants"):
    romoa_tables.parse_variant("tau")
