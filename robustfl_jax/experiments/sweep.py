"""A grid of attack x aggregation rule x number of Byzantine clients.

Every cell is one training run (:func:`robustfl_jax.experiments.train`, no
checkpoints, one evaluation at the end) of a base config with
``attack.name``, ``attack.num_byzantine`` and ``aggregator.name`` replaced.
A cell whose config cannot work (e.g. Krum with too many Byzantine clients)
is a row with an ``error`` instead of an accuracy; the grid goes on.

Outputs in the work directory:

* ``results.jsonl``: one row per cell, ``{attack, aggregator, num_byzantine,
  final_test_accuracy, final_test_loss}`` (or ``final_test_accuracy: null``
  and ``error``), written as the cells finish;
* ``sweep.md``: final test accuracy per rule (rows) and attack x f (columns),
  with the worst case over attacks per rule in bold, as ByzFL reports;
* ``sweep.png``: the same as a heatmap;
* ``<attack>_<rule>_f<f>/``: each cell's ``config.json``, ``metrics.jsonl``
  and ``summary.json``.

Example::

  from robustfl_jax import experiments
  from robustfl_jax.experiments import sweep
  base = experiments.load_config("digits_fedavg.py", {"num_rounds": 5})
  rows = sweep.run_sweep(base, "runs/sweep_quick", attacks=["alie"],
                         aggregators=["mean", "krum"], num_byzantine=[1, 3])
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional, Sequence

import ml_collections
import numpy as np

from robustfl_jax.experiments import reporting
from robustfl_jax.experiments import workdir as workdir_lib
from robustfl_jax.experiments.builders import (aggregator_names, attack_names,
                                               check_choice)
from robustfl_jax.experiments.runner import train

ATTACKS = ("sign_flip", "scaling", "gaussian_noise", "alie", "ipm")
AGGREGATORS = ("mean", "coordinate_median", "trimmed_mean", "krum",
               "multi_krum", "geometric_median")
NUM_BYZANTINE = (1, 3)


def cell_config(base: ml_collections.ConfigDict, *, attack: str,
                aggregator: str, num_byzantine: int
                ) -> ml_collections.ConfigDict:
  """``base`` with one cell's attack, rule and f; evaluated at the end only."""
  config = base.copy_and_resolve_references()
  config.attack.name = attack
  config.attack.num_byzantine = num_byzantine
  config.aggregator.name = aggregator
  config.eval_every = config.num_rounds
  return config


def run_cell(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains one cell; its row's result fields (accuracy and loss, or error)."""
  try:
    summary = train(config, workdir, log=lambda _: None, checkpoint=False,
                    plot=False).summary
  except ValueError as e:
    return {"final_test_accuracy": None, "error": str(e)}
  return {"final_test_accuracy": summary["final_test_accuracy"],
          "final_test_loss": summary["final_test_loss"]}


def run_sweep(base_config: ml_collections.ConfigDict, workdir: str, *,
              attacks: Sequence[str] = ATTACKS,
              aggregators: Sequence[str] = AGGREGATORS,
              num_byzantine: Sequence[int] = NUM_BYZANTINE,
              log: Callable[[str], None] = print,
              fresh: bool = False) -> list[dict]:
  """Runs the grid and writes ``results.jsonl``, ``sweep.md``, ``sweep.png``.

  Args:
    base_config: the config every cell starts from.
    workdir: output folder (created).
    attacks: ``attack.name`` values.
    aggregators: ``aggregator.name`` values.
    num_byzantine: numbers of Byzantine clients (``attack.num_byzantine``;
      whole numbers or their strings).
    log: progress sink, one line per cell and the table at the end.
    fresh: move what ``workdir`` holds to ``previous/<date-time>/`` and
      start anew (a directory of another experiment is refused otherwise).

  Returns:
    The rows of ``results.jsonl``, in the order f, attack, rule.

  Raises:
    ValueError: an unknown attack or rule name, or a bad ``num_byzantine``
      (a cell whose config cannot work is a row with an ``error``).
  """
  fs = _check_grid(attacks, aggregators, num_byzantine)
  workdir_lib.prepare(workdir, base_config, kind="sweep", fresh=fresh, log=log)
  total = len(attacks) * len(aggregators) * len(fs)
  rows, t0 = [], time.time()
  jsonl = os.path.join(workdir, "results.jsonl")
  reporting.write_text(jsonl, "")
  for f in fs:
    for attack in attacks:
      for rule in aggregators:
        config = cell_config(base_config, attack=attack, aggregator=rule,
                             num_byzantine=f)
        row = {"attack": attack, "aggregator": rule, "num_byzantine": f}
        row.update(run_cell(config, os.path.join(workdir,
                                                 f"{attack}_{rule}_f{f}")))
        rows.append(row)
        reporting.append_json_line(jsonl, row)
        done = len(rows)
        eta = (time.time() - t0) / done * (total - done)
        acc = row["final_test_accuracy"]
        result = (f"n/a ({row['error'][:60]})" if acc is None
                  else format(acc, ".4f"))
        log(f"[{done}/{total}] f={f} {attack:>16} {rule:>18}: {result} | "
            f"eta {eta:.0f}s")
  reporting.write_text(os.path.join(workdir, "sweep.md"),
                       markdown(rows, base_config) + "\n")
  plot(rows, os.path.join(workdir, "sweep.png"))
  log(markdown_table(rows, *grid_axes(rows)))
  log(f"sweep of {total} runs took {time.time() - t0:.0f}s; outputs in "
      f"{workdir}")
  return rows


def _check_grid(attacks, aggregators, num_byzantine) -> list[int]:
  """Fails fast on a misspelled name (a cell that cannot work is a row with
  an error instead); returns the numbers of Byzantine clients as ints."""
  for attack in attacks:
    check_choice("attacks", attack, attack_names())
  for rule in aggregators:
    check_choice("aggregators", rule, aggregator_names())
  try:
    fs = [int(f) for f in num_byzantine]
  except (TypeError, ValueError):
    raise ValueError(f"num_byzantine must be whole numbers; got "
                     f"{list(num_byzantine)}.") from None
  if any(f < 0 for f in fs):
    raise ValueError(f"num_byzantine must be >= 0; got {fs}.")
  return fs


def grid_axes(rows: Sequence[dict]) -> tuple[list, list, list]:
  """``(attacks, aggregators, fs)`` in the order the rows first name them."""
  def unique(key):
    return list(dict.fromkeys(r[key] for r in rows))
  return unique("attack"), unique("aggregator"), unique("num_byzantine")


def worst_case(rows: Sequence[dict]) -> dict[tuple[str, int], Optional[float]]:
  """``{(rule, f): lowest final accuracy over the attacks}``; None if no cell
  of that rule and f gave one (all failed)."""
  worst: dict = {}
  for r in rows:
    key = (r["aggregator"], r["num_byzantine"])
    acc = r.get("final_test_accuracy")
    worst.setdefault(key, None)
    if acc is not None:
      worst[key] = acc if worst[key] is None else min(worst[key], acc)
  return worst


def markdown_table(rows: Sequence[dict], attacks: Sequence[str],
                   aggregators: Sequence[str], fs: Sequence[int]) -> str:
  """Final accuracy per rule (rows) and attack x f (columns), plus the worst
  case per rule and f in bold; a missing or failed cell is ``n/a``."""
  by_key = {(r["aggregator"], r["attack"], r["num_byzantine"]): r
            for r in rows}
  worst = worst_case(rows)
  header = (["aggregator"] + [f"{a} f={f}" for f in fs for a in attacks]
            + [f"worst f={f}" for f in fs])
  table = []
  for rule in aggregators:
    cells = [reporting.fmt(by_key.get((rule, a, f), {}).get(
        "final_test_accuracy")) for f in fs for a in attacks]
    for f in fs:
      low = worst.get((rule, f))
      cells.append("n/a" if low is None else f"**{low:.3f}**")
    table.append([rule] + cells)
  return reporting.markdown_table(header, table)


def markdown(rows: Sequence[dict], base_config: ml_collections.ConfigDict
             ) -> str:
  """``sweep.md``: a sentence on the setting and :func:`markdown_table`."""
  return (f"Final test accuracy on digits ({base_config.num_clients} clients, "
          f"{base_config.num_rounds} rounds); the worst case over attacks per "
          "rule is in bold.\n\n" + markdown_table(rows, *grid_axes(rows)))


def headline(rows: Sequence[dict]) -> str:
  """One line for the README: the worst case per rule at the largest f."""
  attacks, aggregators, fs = grid_axes(rows)
  f = max(fs)
  worst = worst_case(rows)
  return (f"worst case over {len(attacks)} attacks at f={f}: " + ", ".join(
      f"{rule} {reporting.fmt(worst.get((rule, f)))}" for rule in aggregators))


def plot(rows: Sequence[dict], path: str) -> str:
  """Saves a heatmap of final accuracy (rules x attack/f) to ``path``."""
  attacks, aggregators, fs = grid_axes(rows)
  by_key = {(r["aggregator"], r["attack"], r["num_byzantine"]): r
            for r in rows}
  cols = [(a, f) for f in fs for a in attacks]
  grid = np.full((len(aggregators), len(cols)), np.nan)
  for i, rule in enumerate(aggregators):
    for j, (a, f) in enumerate(cols):
      acc = by_key.get((rule, a, f), {}).get("final_test_accuracy")
      if acc is not None:
        grid[i, j] = acc
  fig = reporting.new_figure((1.0 + 0.9 * len(cols),
                              1.0 + 0.5 * len(aggregators)))
  ax = fig.subplots()
  im = reporting.heatmap(ax, grid, aggregators,
                         [f"{a}\nf={f}" for a, f in cols])
  fig.colorbar(im, ax=ax, label="final test accuracy")
  ax.set_title("digits: final test accuracy under attack")
  fig.tight_layout()
  return reporting.save_figure(fig, path)


__all__ = ["AGGREGATORS", "ATTACKS", "NUM_BYZANTINE", "cell_config",
           "grid_axes", "headline", "markdown", "markdown_table", "plot",
           "run_cell", "run_sweep", "worst_case"]
