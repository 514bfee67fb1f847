"""Romoa's Tables 1 and 2 (Mao et al., ESORICS 2021) on this library's stack.

A config's ``reproduce`` section (``configs/romoa_table1.py``,
``configs/romoa_table2.py``) names the grid: participants ``n``, adversary
counts per ``n``, methods (``baseline`` = mean, ``romoa``, ``rfa``,
``krum``), attacks (``TPA``, ``UPA``, ``none``) and how many of the last
rounds the error averages. Every cell is one run of the config's protocol
with the first ``adversaries`` clients Byzantine. TPA's error is the mean
confidence of the target label on the source-class test points; otherwise
the error is 1 - test accuracy.

Outputs in the work directory:

* ``results.json``: a list of rows ``{n, adversaries, method, attack, error,
  final_error, accuracy, error_curve, static_f, seconds, paper_mnist}``, with
  Romoa's ``romoa_adversary_factor``, ``romoa_honest_factor_min`` and
  ``romoa_honest_factor_max`` where the rule reports sanitizing factors;
* ``table.md``: our error rates beside the paper's MNIST numbers;
* ``error_vs_fraction.png``: error against the adversary fraction.

A method's round function is compiled once per ``(n, attack)`` and reused for
every adversary count (the Byzantine set is data), except where ``f`` is
static (Krum, Fang's attack on Krum).

References:
  Mao et al., "Romoa: Robust Model Aggregation for the Resistance of
  Federated Learning to Model Poisoning Attacks", ESORICS 2021.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np

from robustfl_jax.experiments import reporting
from robustfl_jax.experiments import workdir as workdir_lib
from robustfl_jax.experiments.builders import Experiment, build_experiment

METHOD_RULES = {"baseline": "mean", "romoa": "romoa", "rfa": "rfa",
                "krum": "krum"}
ATTACKS = ("TPA", "UPA", "none")

# The paper's MNIST numbers: Table 1 [attack][method][n] -> errors for the
# three adversary counts; Table 2 [method] -> (no attack, TPA, UPA).
PAPER_TABLE1 = {
    "TPA": {
        "baseline": {10: (0.969517, 0.944382, 0.985758),
                     20: (0.973807, 0.963074, 0.990942),
                     100: (0.995910, 0.995476, 0.995090),
                     200: (0.995910, 0.995476, 0.995090)},
        "romoa": {10: (0.008289, 0.000183, 0.000571),
                  20: (0.021465, 0.013944, 0.001301),
                  100: (0.051435, 0.136652, 0.152566),
                  200: (0.108603, 0.189824, 0.211517)},
        "rfa": {10: (0.004690, 0.564633, 0.687104),
                20: (0.009044, 0.61265, 0.61265),
                100: (0.034294, 0.532786, 0.988208),
                200: (0.091589, 0.682731, 0.995961)},
        "krum": {10: (0.046238, 0.062209, 0.360937),
                 20: (0.058969, 0.094315, 0.461042),
                 100: (0.106764, 0.102102, 0.999547),
                 200: (0.131459, 0.767544, 0.987186)},
    },
    "UPA": {
        "baseline": {10: (0.884297, 0.886125, 0.886371),
                     20: (0.881747, 0.886246, 0.886527),
                     100: (0.867507, 0.886444, 0.886500),
                     200: (0.873398, 0.886481, 0.886500)},
        "romoa": {10: (0.014700, 0.043952, 0.042849),
                  20: (0.087651, 0.068632, 0.108119),
                  100: (0.122615, 0.189103, 0.225616),
                  200: (0.188722, 0.291795, 0.292397)},
        "rfa": {10: (0.033200, 0.105942, 0.884133),
                20: (0.048608, 0.143554, 0.886077),
                100: (0.138354, 0.885578, 0.887790),
                200: (0.195785, 0.682731, 0.995961)},
        "krum": {10: (0.111384, 0.171478, 0.898100),
                 20: (0.137760, 0.160500, 0.899100),
                 100: (0.296960, 0.884200, 0.931200),
                 200: (0.853001, 0.875300, 0.870700)},
    },
}
PAPER_TABLE2 = {"baseline": {"none": 0.149003, "TPA": 0.880771,
                             "UPA": 0.895005},
                "romoa": {"none": 0.133656, "TPA": 0.432999, "UPA": 0.16347}}


def paper_error(table: int, attack: str, method: str, n: int,
                adversaries: int, adversary_counts: Sequence[int]
                ) -> Optional[float]:
  """The paper's MNIST number for a cell, or None."""
  if table == 2:
    return PAPER_TABLE2.get(method, {}).get(attack)
  row = PAPER_TABLE1.get(attack, {}).get(method, {}).get(n)
  if row is None or adversaries not in adversary_counts:
    return None
  return row[list(adversary_counts).index(adversaries)]


def validate(base: ml_collections.ConfigDict) -> None:
  """Checks the ``reproduce`` section; the message names the field.

  Raises:
    ValueError: no ``reproduce`` section, an unknown method or attack, or
      participants without adversary counts.
  """
  if "reproduce" not in base:
    raise ValueError("the config has no 'reproduce' section; use "
                     "configs/romoa_table1.py or configs/romoa_table2.py.")
  r = base.reproduce
  for method in r.methods:
    if method not in METHOD_RULES:
      raise ValueError(f"reproduce.methods: unknown {method!r}; choose from "
                       f"{sorted(METHOD_RULES)}.")
  for attack in r.attacks:
    if attack not in ATTACKS:
      raise ValueError(f"reproduce.attacks: unknown {attack!r}; choose from "
                       f"{list(ATTACKS)}.")
  for n in r.participants:
    if str(n) not in r.adversaries:
      raise ValueError(f"reproduce.adversaries has no counts for n={n}; it "
                       f"has {sorted(r.adversaries.keys())}.")
  if int(r.table) not in (1, 2):
    raise ValueError(f"reproduce.table must be 1 or 2; got {r.table}.")


def needs_static_f(config: ml_collections.ConfigDict) -> bool:
  """Krum and Fang's Krum attack take f as a static hyper-parameter."""
  return config.aggregator.name == "krum" or config.attack.name == "fang_krum"


def static_f(n: int, num_byzantine: int) -> int:
  """The f that Krum (and Fang's attack on it) assume.

  Krum's score needs n > 2f + 2; beyond that (the paper's n=10, f=4 and
  n=20, f=9) Krum and the attack use the largest f Krum accepts. The
  Byzantine set itself (data) still has all ``num_byzantine`` clients.
  """
  return min(num_byzantine, (n - 3) // 2)


def cell_config(base: ml_collections.ConfigDict, n: int, method: str,
                attack: str, num_byzantine: int) -> ml_collections.ConfigDict:
  """``base`` with ``n`` clients, the method's rule and the attack's name."""
  config = base.copy_and_resolve_references()
  config.num_clients = n
  config.aggregator.name = METHOD_RULES[method]
  config.attack.num_byzantine = num_byzantine
  config.attack.name = {"TPA": base.reproduce.tpa_attack,
                        "UPA": base.reproduce.upa_attack,
                        "none": "none"}[attack]
  if attack == "none":
    config.attack.num_byzantine = 0
  if needs_static_f(config):
    config.attack.num_byzantine = static_f(n, num_byzantine)
  return config


def run_cell(exp: Experiment, byzantine: np.ndarray,
             config: ml_collections.ConfigDict) -> dict:
  """Trains one cell from ``exp``'s initial state with ``byzantine`` clients.

  Args:
    exp: the experiment built for the cell's ``(n, attack, method)``; its
      compiled round is reused, with the Byzantine set replaced.
    byzantine: ``bool[n]``, the cell's Byzantine clients.
    config: the cell's config (``num_rounds``, ``attack.name``,
      ``reproduce.average_last``).

  Returns:
    ``error`` (mean over the last ``reproduce.average_last`` rounds),
    ``final_error``, ``accuracy``, ``error_curve`` and, where the rule reports
    sanitizing factors (Romoa), the mean factor of the adversaries and the
    honest clients' smallest and largest.
  """
  data = exp.data._replace(byzantine=jax.numpy.asarray(byzantine))
  state = exp.init_state()  # fresh buffers: the jitted round donates its state
  errors, accuracies, factors = [], [], None
  targeted = config.attack.name in ("tpa", "tpa_am")
  for _ in range(config.num_rounds):
    state, metrics = exp.round_fn(state, data)
    ev = jax.device_get(exp.eval_fn(state.params))
    err = float(ev["targeted_confidence"]) if targeted else float(
        1.0 - ev["accuracy"])
    errors.append(err)
    accuracies.append(float(ev["accuracy"]))
    if "factor_mean" in metrics:
      factors = np.asarray(jax.device_get(metrics["factor_mean"]))
  k = max(1, int(config.reproduce.average_last))
  out = {"error": float(np.mean(errors[-k:])), "final_error": errors[-1],
         "accuracy": accuracies[-1],
         "error_curve": [round(e, 4) for e in errors]}
  if factors is not None:
    bad = np.asarray(byzantine, bool)
    out["romoa_adversary_factor"] = (float(factors[bad].mean()) if bad.any()
                                     else None)
    out["romoa_honest_factor_min"] = float(factors[~bad].min())
    out["romoa_honest_factor_max"] = float(factors[~bad].max())
  return out


def cells(base: ml_collections.ConfigDict) -> list[tuple]:
  """``[(n, attack, method, adversary counts)]`` in the order they run."""
  out = []
  for n in base.reproduce.participants:
    counts = tuple(base.reproduce.adversaries[str(n)])
    for attack in base.reproduce.attacks:
      for method in base.reproduce.methods:
        out.append((n, attack, method, counts if attack != "none" else (0,)))
  return out


def run_romoa_tables(base: ml_collections.ConfigDict, workdir: str, *,
                     log: Callable[[str], None] = print,
                     fresh: bool = False) -> list[dict]:
  """Runs every cell of ``base.reproduce`` and writes the outputs.

  Args:
    base: a Romoa table config (``configs/romoa_table1.py``).
    workdir: output folder (created); ``results.json`` is rewritten after
      every cell.
    log: progress sink, one line per cell and the table at the end.
    fresh: move what ``workdir`` holds to ``previous/<date-time>/`` and
      start anew (a directory of another experiment is refused otherwise).

  Returns:
    The rows of ``results.json``.

  Raises:
    ValueError: the ``reproduce`` section or a cell's config cannot work.
  """
  validate(base)
  workdir_lib.prepare(workdir, base, kind="romoa_tables", fresh=fresh, log=log)
  table = int(base.reproduce.table)
  grid = cells(base)
  total = sum(len(c[3]) for c in grid)
  rows, t0 = [], time.time()
  for n, attack, method, counts in grid:
    exp, built_f = None, None
    for f in counts:
      config = cell_config(base, n, method, attack, f)
      if exp is None or (needs_static_f(config)
                         and config.attack.num_byzantine != built_f):
        exp = build_experiment(config)
        built_f = config.attack.num_byzantine
      byzantine = np.zeros(n, bool)
      if attack != "none":
        byzantine[:f] = True
      t = time.time()
      out = run_cell(exp, byzantine, config)
      row = {"n": n, "adversaries": f, "method": method, "attack": attack,
             **out, "static_f": config.attack.num_byzantine,
             "seconds": round(time.time() - t, 2),
             "paper_mnist": paper_error(table, attack, method, n, f, counts)}
      rows.append(row)
      done = len(rows)
      eta = (time.time() - t0) / done * (total - done)
      extra = ("" if row.get("romoa_adversary_factor") is None else
               f" | adversary factor {row['romoa_adversary_factor']:.4f}")
      log(f"[{done}/{total}] n={n} f={f} {attack} {method:>8}: error "
          f"{row['error']:.4f} (paper {row['paper_mnist']}) acc "
          f"{row['accuracy']:.3f}{extra} | {row['seconds']:.1f}s | eta "
          f"{eta:.0f}s")
      reporting.write_json(os.path.join(workdir, "results.json"), rows)
  reporting.write_text(os.path.join(workdir, "table.md"),
                       markdown(rows, base) + "\n")
  plot(rows, base, os.path.join(workdir, "error_vs_fraction.png"))
  log(markdown_table(rows, base))
  log(f"{total} runs in {time.time() - t0:.0f}s; outputs in {workdir}")
  return rows


def _find(rows: Sequence[dict], **fields) -> Optional[dict]:
  return next((r for r in rows
               if all(r[k] == v for k, v in fields.items())), None)


def markdown_table(rows: Sequence[dict], base: ml_collections.ConfigDict
                   ) -> str:
  """Our errors beside the paper's MNIST numbers (Table 1: one table per n)."""
  r = base.reproduce
  lines = []
  if int(r.table) == 2:
    attacks = list(r.attacks)
    lines.append("| method | " + " | ".join(
        f"{a} ours | {a} paper (MNIST)" for a in attacks) + " |")
    lines.append("|---|" + "---|---|" * len(attacks))
    for method in r.methods:
      cells_ = []
      for a in attacks:
        row = _find(rows, method=method, attack=a)
        cells_ += [reporting.fmt(None if row is None else row["error"], ".4f"),
                   reporting.fmt(PAPER_TABLE2.get(method, {}).get(a), ".4f")]
      lines.append(f"| {method} | " + " | ".join(cells_) + " |")
    return "\n".join(lines)
  for n in r.participants:
    counts = tuple(r.adversaries[str(n)])
    lines.append(f"\n**n = {n}** (error: ours / paper MNIST)\n")
    lines.append("| attack | method | " + " | ".join(
        f"f={f}" for f in counts) + " |")
    lines.append("|---|---|" + "---|" * len(counts))
    for attack in r.attacks:
      for method in r.methods:
        cells_ = []
        for f in counts:
          row = _find(rows, n=n, adversaries=f, method=method, attack=attack)
          ours = reporting.fmt(None if row is None else row["error"])
          paper = reporting.fmt(paper_error(1, attack, method, n, f, counts))
          cells_.append(f"{ours} / {paper}")
        lines.append(f"| {attack} | {method} | " + " | ".join(cells_) + " |")
  return "\n".join(lines)


def markdown(rows: Sequence[dict], base: ml_collections.ConfigDict) -> str:
  """``table.md``: the setting in one paragraph, then :func:`markdown_table`."""
  return (f"Romoa Table {base.reproduce.table} on {base.data.name} "
          f"({base.data.partition}, {base.num_rounds} rounds x tau="
          f"{base.romoa.tau} lookahead steps, model {base.model.name}); error "
          f"= mean over the last {base.reproduce.average_last} rounds. The "
          "paper's numbers are on MNIST.\n\n" + markdown_table(rows, base))


def headline(rows: Sequence[dict], base: ml_collections.ConfigDict) -> str:
  """One line for the README: the mean error per method (Table 2: per attack)."""
  r = base.reproduce
  if int(r.table) == 2:
    return f"error {' / '.join(r.attacks)}: " + ", ".join(
        method + " " + "/".join(
            reporting.fmt(None if row is None else row["error"], ".2f")
            for row in (_find(rows, method=method, attack=a)
                        for a in r.attacks))
        for method in r.methods)
  parts = []
  for method in r.methods:
    errors = [row["error"] for row in rows if row["method"] == method]
    mean = float(np.nanmean(errors)) if errors else None
    parts.append(f"{method} {reporting.fmt(mean, '.2f')}")
  return (f"mean error over the {len(rows) // max(len(r.methods), 1)} cells "
          "per method: " + ", ".join(parts))


def plot(rows: Sequence[dict], base: ml_collections.ConfigDict,
         path: str) -> str:
  """Error against the adversary fraction, one panel per attack."""
  attacks = list(base.reproduce.attacks)
  fig = reporting.new_figure((5 * len(attacks), 3.8))
  axes = fig.subplots(1, len(attacks), squeeze=False)
  for ax, attack in zip(axes[0], attacks):
    for method in base.reproduce.methods:
      for n in base.reproduce.participants:
        pts = sorted((r["adversaries"] / r["n"], r["error"]) for r in rows
                     if r["method"] == method and r["attack"] == attack
                     and r["n"] == n)
        if pts:
          ax.plot(*zip(*pts), marker="o", label=f"{method} n={n}")
    ax.set_title(f"{attack}")
    ax.set_xlabel("adversary fraction")
    ax.set_ylabel("error rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(-0.02, 0.52)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"Romoa Table {base.reproduce.table} on {base.data.name}")
  fig.tight_layout()
  return reporting.save_figure(fig, path)


__all__ = ["ATTACKS", "METHOD_RULES", "PAPER_TABLE1", "PAPER_TABLE2",
           "cell_config", "cells", "headline", "markdown", "markdown_table",
           "needs_static_f", "paper_error", "plot", "run_cell",
           "run_romoa_tables", "static_f", "validate"]
