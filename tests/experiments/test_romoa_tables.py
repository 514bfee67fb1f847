"""Romoa's tables (robustfl_jax.experiments.romoa_tables) on a tiny grid."""

import json
import os

import numpy as np
import pytest

from robustfl_jax.experiments import build_experiment, load_config
from robustfl_jax.experiments import romoa_tables

ROUNDS = 2
METHODS = ("romoa", "baseline")
ROW_FIELDS = {"n", "adversaries", "method", "attack", "error", "final_error",
              "accuracy", "error_curve", "static_f", "seconds", "paper_mnist"}
FACTOR_FIELDS = {"romoa_adversary_factor", "romoa_honest_factor_min",
                 "romoa_honest_factor_max"}


def tiny_table1(**overrides):
  """configs/romoa_table1.py, n = 10 only (f = 1, 3, 4), TPA, two methods."""
  return load_config("romoa_table1.py", {
      "reproduce.participants": (10,), "reproduce.methods": METHODS,
      "reproduce.attacks": ("TPA",), "num_rounds": ROUNDS,
      "reproduce.average_last": 1, **overrides})


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("romoa"))
  base = tiny_table1()
  lines = []
  rows = romoa_tables.run_romoa_tables(base, workdir, log=lines.append)
  return rows, workdir, lines, base


def test_rows_cover_the_grid_with_the_documented_fields(table_run):
  rows, workdir, lines, _ = table_run
  assert [(r["method"], r["adversaries"]) for r in rows] == [
      (m, f) for m in METHODS for f in (1, 3, 4)]
  for row in rows:
    assert set(row) == ROW_FIELDS | (FACTOR_FIELDS if row["method"] == "romoa"
                                     else set())
    assert row["n"] == 10 and row["attack"] == "TPA"
    assert row["static_f"] == row["adversaries"]
    assert 0.0 <= row["error"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
    assert len(row["error_curve"]) == ROUNDS
    # average_last = 1: the error is the last round's.
    assert row["error"] == row["final_error"]
    paper = romoa_tables.PAPER_TABLE1["TPA"][row["method"]][10]
    assert row["paper_mnist"] == paper[(1, 3, 4).index(row["adversaries"])]
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == rows
  assert len(lines) == len(rows) + 2


def test_romoa_rows_report_adversary_and_honest_factors(table_run):
  rows, _, _, _ = table_run
  for row in rows:
    if row["method"] != "romoa":
      continue
    assert row["romoa_adversary_factor"] is not None
    assert 0.0 <= row["romoa_adversary_factor"] <= 1.0
    assert (0.0 <= row["romoa_honest_factor_min"]
            <= row["romoa_honest_factor_max"] <= 1.0)


def test_reused_round_matches_a_fresh_build(table_run):
  """The grid reuses one compiled round per method with the Byzantine set
  swapped as data; a cell built from scratch gives the same numbers."""
  rows, _, _, base = table_run
  config = romoa_tables.cell_config(base, 10, "romoa", "TPA", 3)
  byzantine = np.zeros(10, bool)
  byzantine[:3] = True
  fresh = romoa_tables.run_cell(build_experiment(config), byzantine, config)
  row = next(r for r in rows if (r["method"], r["adversaries"]) == ("romoa", 3))
  for key, value in fresh.items():
    assert row[key] == value, key


def test_table_and_plot(table_run):
  rows, workdir, _, base = table_run
  table = open(os.path.join(workdir, "table.md")).read()
  assert table == romoa_tables.markdown(rows, base) + "\n"
  assert table.count("| TPA |") == len(METHODS)
  assert "**n = 10**" in table
  with open(os.path.join(workdir, "error_vs_fraction.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert romoa_tables.headline(rows, base).startswith(
      "mean error over the 3 cells per method: romoa ")


def test_table2_markdown_and_headline_from_rows():
  base = load_config("romoa_table2.py")
  rows = [{"n": 10, "adversaries": 0 if a == "none" else 1, "method": m,
           "attack": a, "error": e}
          for m, errors in (("baseline", (0.1, 0.2, 0.3)),
                            ("romoa", (0.4, 0.5, 0.6)))
          for a, e in zip(("none", "TPA", "UPA"), errors)]
  lines = romoa_tables.markdown_table(rows, base).splitlines()
  assert lines[0] == ("| method | none ours | none paper (MNIST) | TPA ours | "
                      "TPA paper (MNIST) | UPA ours | UPA paper (MNIST) |")
  assert lines[2] == ("| baseline | 0.1000 | 0.1490 | 0.2000 | 0.8808 | "
                      "0.3000 | 0.8950 |")
  assert romoa_tables.headline(rows, base) == (
      "error none / TPA / UPA: baseline 0.10/0.20/0.30, romoa 0.40/0.50/0.60")


def test_static_f_and_cell_config():
  base = tiny_table1()
  # Krum needs n > 2f + 2: at n = 10 its f stops at 3; the data keeps 4.
  assert romoa_tables.static_f(10, 4) == 3 and romoa_tables.static_f(20, 6) == 6
  krum = romoa_tables.cell_config(base, 10, "krum", "UPA", 4)
  assert (krum.aggregator.name, krum.attack.name,
          krum.attack.num_byzantine) == ("krum", "fang_krum", 3)
  clean = romoa_tables.cell_config(base, 10, "romoa", "none", 3)
  assert (clean.attack.name, clean.attack.num_byzantine) == ("none", 0)
  assert romoa_tables.paper_error(2, "TPA", "romoa", 10, 1, (1,)) == 0.432999


def test_unknown_method_is_a_value_error(tmp_path):
  base = tiny_table1(**{"reproduce.methods": ("romoa", "bulyan")})
  with pytest.raises(ValueError, match="reproduce.methods.*bulyan"):
    romoa_tables.run_romoa_tables(base, str(tmp_path))
