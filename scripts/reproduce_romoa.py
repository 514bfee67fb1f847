r"""Reproduces Romoa's Tables 1 and 2 (Mao et al., ESORICS 2021) on our stack.

Example::

  python scripts/reproduce_romoa.py --config=configs/romoa_table1.py
  python scripts/reproduce_romoa.py --config=configs/romoa_table2.py

Writes to ``--workdir`` (default ``runs/<config file name>``):

* ``results.json``: a list of rows ``{n, adversaries, method, attack, error}``
  (plus ``final_error``, ``accuracy``, ``romoa_adversary_factor``, seconds);
* ``table.md``: our error rates beside the paper's MNIST numbers;
* ``error_vs_fraction.png``: error against the adversary fraction.

A method's round function is compiled once per ``(n, attack)`` and reused for
every adversary count (the Byzantine set is data), except Krum, whose ``f`` is
static.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from robustfl_jax.fl import experiment as experiment_lib  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "configs/romoa_table1.py or configs/romoa_table2.py.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Output folder; default runs/<config name>.")

METHOD_RULES = {"baseline": "mean", "romoa": "romoa", "rfa": "rfa",
                "krum": "krum"}

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


def paper_error(table, attack, method, n, adversaries, adversary_counts):
  """The paper's MNIST number for a cell, or None."""
  if table == 2:
    return PAPER_TABLE2.get(method, {}).get(attack)
  row = PAPER_TABLE1.get(attack, {}).get(method, {}).get(n)
  if row is None or adversaries not in adversary_counts:
    return None
  return row[list(adversary_counts).index(adversaries)]


def cell_config(base, n, method, attack, num_byzantine):
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


def needs_static_f(config):
  """Krum and Fang's Krum attack take f as a static hyper-parameter."""
  return config.aggregator.name == "krum" or config.attack.name == "fang_krum"


def static_f(n, num_byzantine):
  """The f that Krum (and Fang's attack on it) assume.

  Krum's score needs n > 2f + 2; beyond that (the paper's n=10, f=4 and
  n=20, f=9) Krum and the attack use the largest f Krum accepts. The
  Byzantine set itself (data) still has all ``num_byzantine`` clients.
  """
  return min(num_byzantine, (n - 3) // 2)


def run_cell(exp, init_host, byzantine, config):
  """Trains one cell; returns its metrics (error averaged over last rounds).

  ``init_host`` is a host copy of ``exp.init_state()``: the jitted round
  donates its input state, so each cell starts from fresh device buffers.
  """
  data = exp.data._replace(byzantine=jax.numpy.asarray(byzantine))
  state = jax.tree.map(jax.numpy.asarray, init_host)
  errors, accuracies, factors = [], [], None
  targeted = config.attack.name in ("tpa", "tpa_am")
  for r in range(config.num_rounds):
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
         "accuracy": accuracies[-1], "error_curve": [round(e, 4) for e in errors]}
  if factors is not None:
    bad = np.asarray(byzantine, bool)
    out["romoa_adversary_factor"] = (float(factors[bad].mean()) if bad.any()
                                     else None)
    out["romoa_honest_factor_min"] = float(factors[~bad].min())
    out["romoa_honest_factor_max"] = float(factors[~bad].max())
  return out


def markdown(rows, base):
  table = int(base.reproduce.table)
  lines = []
  if table == 2:
    attacks = list(base.reproduce.attacks)
    lines.append("| method | " + " | ".join(
        f"{a} ours | {a} paper (MNIST)" for a in attacks) + " |")
    lines.append("|---|" + "---|---|" * len(attacks))
    for method in base.reproduce.methods:
      cells = []
      for a in attacks:
        r = next((x for x in rows if x["method"] == method
                  and x["attack"] == a), None)
        ours = "n/a" if r is None else f"{r['error']:.4f}"
        paper = PAPER_TABLE2.get(method, {}).get(a)
        cells += [ours, "n/a" if paper is None else f"{paper:.4f}"]
      lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
  for n in base.reproduce.participants:
    counts = tuple(base.reproduce.adversaries[str(n)])
    lines.append(f"\n**n = {n}** (error: ours / paper MNIST)\n")
    lines.append("| attack | method | " + " | ".join(
        f"f={f}" for f in counts) + " |")
    lines.append("|---|---|" + "---|" * len(counts))
    for attack in base.reproduce.attacks:
      for method in base.reproduce.methods:
        cells = []
        for f in counts:
          r = next((x for x in rows if x["n"] == n and x["adversaries"] == f
                    and x["method"] == method and x["attack"] == attack), None)
          paper = paper_error(1, attack, method, n, f, counts)
          ours = "n/a" if r is None else f"{r['error']:.3f}"
          cells.append(f"{ours} / {'n/a' if paper is None else f'{paper:.3f}'}")
        lines.append(f"| {attack} | {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(rows, base, path):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  attacks = list(base.reproduce.attacks)
  fig, axes = plt.subplots(1, len(attacks), figsize=(5 * len(attacks), 3.8),
                           squeeze=False)
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
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  base = _CONFIG.value
  if base is None:
    raise app.UsageError("--config=configs/romoa_table1.py is required.")
  workdir = _WORKDIR.value or os.path.join(
      "runs", os.path.splitext(os.path.basename(
          flags.FLAGS["config"].config_filename))[0])
  os.makedirs(workdir, exist_ok=True)
  for method in base.reproduce.methods:
    if method not in METHOD_RULES:
      raise app.UsageError(f"reproduce.methods: unknown {method!r}; choose "
                           f"from {sorted(METHOD_RULES)}.")
  cells = []
  for n in base.reproduce.participants:
    counts = tuple(base.reproduce.adversaries[str(n)])
    for attack in base.reproduce.attacks:
      for method in base.reproduce.methods:
        cells.append((n, attack, method, counts if attack != "none" else (0,)))
  total = sum(len(c[3]) for c in cells)
  rows, t0 = [], time.time()
  for n, attack, method, counts in cells:
    exp, built_f = None, None
    for f in counts:
      config = cell_config(base, n, method, attack, f)
      if exp is None or (needs_static_f(config)
                         and config.attack.num_byzantine != built_f):
        # The Byzantine set is data, so other counts reuse the compiled
        # round, except where f is static (Krum, Fang's attack on Krum).
        exp = experiment_lib.build_experiment(config)
        init_host = jax.device_get(exp.init_state())
        built_f = config.attack.num_byzantine
      byzantine = np.zeros(n, bool)
      if attack != "none":
        byzantine[:f] = True
      t = time.time()
      out = run_cell(exp, init_host, byzantine, config)
      row = {"n": n, "adversaries": f, "method": method, "attack": attack,
             **out, "static_f": config.attack.num_byzantine, "seconds": round(time.time() - t, 2),
             "paper_mnist": paper_error(int(base.reproduce.table), attack,
                                        method, n, f, counts)}
      rows.append(row)
      done = len(rows)
      eta = (time.time() - t0) / done * (total - done)
      extra = ("" if row.get("romoa_adversary_factor") is None else
               f" | adversary factor {row['romoa_adversary_factor']:.4f}")
      print(f"[{done}/{total}] n={n} f={f} {attack} {method:>8}: error "
            f"{row['error']:.4f} (paper {row['paper_mnist']}) acc "
            f"{row['accuracy']:.3f}{extra} | {row['seconds']:.1f}s | eta "
            f"{eta:.0f}s", flush=True)
      with open(os.path.join(workdir, "results.json"), "w") as fp:
        json.dump(rows, fp, indent=1)
  table = markdown(rows, base)
  header = (f"Romoa Table {base.reproduce.table} on {base.data.name} "
            f"({base.data.partition}, {base.num_rounds} rounds x tau="
            f"{base.romoa.tau} lookahead steps, model {base.model.name}); error "
            f"= mean over the last {base.reproduce.average_last} rounds. The "
            "paper's numbers are on MNIST.\n")
  with open(os.path.join(workdir, "table.md"), "w") as fp:
    fp.write(header + "\n" + table + "\n")
  plot(rows, base, os.path.join(workdir, "error_vs_fraction.png"))
  print(table)
  print(f"{total} runs in {time.time() - t0:.0f}s; outputs in {workdir}",
        flush=True)


if __name__ == "__main__":
  app.run(main)
