r"""Grid of attack x aggregator x number of Byzantine clients on digits.

Example::

  python scripts/sweep.py                       # the default grid (~60 runs)
  python scripts/sweep.py --attacks=scaling,alie --aggregators=mean,krum \
      --num_byzantine=1,3 --config.num_rounds=30

Writes to ``--workdir`` (default ``runs/sweep``): ``results.jsonl`` (one line
per run), ``sweep.md`` (a markdown table of final test accuracy with the worst
case over attacks per rule, as ByzFL reports) and ``sweep.png`` (a heatmap).
Every run starts from ``--config`` (default ``configs/digits_fedavg.py``) with
``attack.name``, ``attack.num_byzantine`` and ``aggregator.name`` replaced.
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

from robustfl_jax.fl import runner  # pylint: disable=wrong-import-position

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "digits_fedavg.py"),
    "Base experiment config.", lock_config=True)
_ATTACKS = flags.DEFINE_list(
    "attacks", ["sign_flip", "scaling", "gaussian_noise", "alie", "ipm"],
    "Attacks (attack.name values).")
_AGGREGATORS = flags.DEFINE_list(
    "aggregators", ["mean", "coordinate_median", "trimmed_mean", "krum",
                    "multi_krum", "geometric_median"],
    "Aggregation rules (aggregator.name values).")
_NUM_BYZANTINE = flags.DEFINE_list("num_byzantine", ["1", "3"],
                                   "Numbers of Byzantine clients.")
_WORKDIR = flags.DEFINE_string("workdir", os.path.join("runs", "sweep"),
                               "Output folder.")


def _cell_config(base, attack, aggregator, num_byzantine):
  config = base.copy_and_resolve_references()
  config.attack.name = attack
  config.attack.num_byzantine = num_byzantine
  config.aggregator.name = aggregator
  config.eval_every = config.num_rounds
  return config


def markdown_table(results, attacks, aggregators, fs):
  """Final accuracy per rule (rows) and attack x f (columns), plus worst case."""
  by_key = {(r["aggregator"], r["attack"], r["num_byzantine"]): r
            for r in results}
  header = ["aggregator"] + [f"{a} f={f}" for f in fs for a in attacks] + [
      f"worst f={f}" for f in fs]
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  for rule in aggregators:
    cells, worst = [], {f: None for f in fs}
    for f in fs:
      for a in attacks:
        r = by_key.get((rule, a, f))
        acc = None if r is None else r.get("final_test_accuracy")
        cells.append("n/a" if acc is None else f"{acc:.3f}")
        if acc is not None:
          worst[f] = acc if worst[f] is None else min(worst[f], acc)
    cells += ["n/a" if worst[f] is None else f"**{worst[f]:.3f}**" for f in fs]
    lines.append(f"| {rule} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def heatmap(results, attacks, aggregators, fs, path):
  """Saves a heatmap PNG of final accuracy (rules x attack/f)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  by_key = {(r["aggregator"], r["attack"], r["num_byzantine"]): r
            for r in results}
  cols = [(a, f) for f in fs for a in attacks]
  grid = np.full((len(aggregators), len(cols)), np.nan)
  for i, rule in enumerate(aggregators):
    for j, (a, f) in enumerate(cols):
      r = by_key.get((rule, a, f))
      if r is not None and r.get("final_test_accuracy") is not None:
        grid[i, j] = r["final_test_accuracy"]
  fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(cols),
                                  1.0 + 0.5 * len(aggregators)))
  im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(cols)), [f"{a}\nf={f}" for a, f in cols],
                rotation=45, ha="right", fontsize=8)
  ax.set_yticks(range(len(aggregators)), aggregators)
  for i in range(grid.shape[0]):
    for j in range(grid.shape[1]):
      text = "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}"
      ax.text(j, i, text, ha="center", va="center", fontsize=7,
              color="white" if not grid[i, j] > 0.6 else "black")
  fig.colorbar(im, ax=ax, label="final test accuracy")
  ax.set_title("digits: final test accuracy under attack")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  base = _CONFIG.value
  attacks, aggregators = list(_ATTACKS.value), list(_AGGREGATORS.value)
  fs = [int(f) for f in _NUM_BYZANTINE.value]
  workdir = _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  results = []
  total = len(attacks) * len(aggregators) * len(fs)
  t0 = time.time()
  with open(os.path.join(workdir, "results.jsonl"), "w") as out:
    for f in fs:
      for attack in attacks:
        for rule in aggregators:
          config = _cell_config(base, attack, rule, f)
          row = {"attack": attack, "aggregator": rule, "num_byzantine": f}
          try:
            summary = runner.train(
                config, os.path.join(workdir, f"{attack}_{rule}_f{f}"),
                log=lambda _: None, checkpoint=False, plot=False)
            row.update(final_test_accuracy=summary["final_test_accuracy"],
                       final_test_loss=summary["final_test_loss"])
          except ValueError as e:
            row.update(final_test_accuracy=None, error=str(e))
          results.append(row)
          out.write(json.dumps(row) + "\n")
          out.flush()
          done = len(results)
          eta = (time.time() - t0) / done * (total - done)
          acc = row["final_test_accuracy"]
          print(f"[{done}/{total}] f={f} {attack:>16} {rule:>18}: "
                f"{'n/a (' + row['error'][:60] + ')' if acc is None else format(acc, '.4f')}"
                f" | eta {eta:.0f}s", flush=True)
  table = markdown_table(results, attacks, aggregators, fs)
  with open(os.path.join(workdir, "sweep.md"), "w") as f:
    f.write(f"Final test accuracy on digits ({base.num_clients} clients, "
            f"{base.num_rounds} rounds); the worst case over attacks per rule "
            "is in bold.\n\n" + table + "\n")
  heatmap(results, attacks, aggregators, fs, os.path.join(workdir, "sweep.png"))
  print(table)
  print(f"sweep of {total} runs took {time.time() - t0:.0f}s; outputs in "
        f"{workdir}", flush=True)


if __name__ == "__main__":
  app.run(main)
