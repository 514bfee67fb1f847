"""The training loop behind ``scripts/train.py``: rounds, evaluation, outputs.

Writes into a work directory:

* ``metrics.jsonl``: one JSON object per evaluation (``round``,
  ``test_accuracy``, ``test_loss``, ``test_error_rate``, ``per_class_accuracy``,
  ``train_loss``, ``num_rejected``, ``flagged_clients``, ``tpr``, ``fpr``,
  ``skipped``, and with targeted or backdoor attacks
  ``targeted_flip_rate``, ``targeted_confidence``, ``backdoor_success``);
* ``summary.json``: ``final_test_accuracy``, ``final_test_loss``,
  ``rounds_completed``, ``params_sha256`` and more;
* ``metrics.png``: test accuracy and loss against rounds;
* ``checkpoints/``: orbax checkpoints of the whole server state.

Rerunning with the same work directory resumes from the newest readable
checkpoint; since round ``t`` draws its randomness from ``fold_in(key, t)``,
the resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np

from robustfl_jax.checkpoint import Checkpointer
from robustfl_jax.fl.experiment import Experiment, build_experiment
from robustfl_jax.fl.server import params_sha256


def _to_json(value: Any) -> Any:
  arr = np.asarray(value)
  if arr.ndim == 0:
    item = arr.item()
    if isinstance(item, float) and not math.isfinite(item):
      return None  # JSON has no NaN/Inf.
    return item
  return [_to_json(v) for v in arr]


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _read_metrics(path: str, up_to_round: int) -> list[dict]:
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue  # A line cut by a kill.
      if row.get("round", math.inf) <= up_to_round:
        rows.append(row)
  return rows


def plot_metrics(rows: list[dict], path: str, title: str = "") -> None:
  """Saves a PNG of test accuracy and loss against rounds."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rounds = [r["round"] for r in rows]
  fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8))
  acc = [np.nan if r["test_accuracy"] is None else r["test_accuracy"]
         for r in rows]
  loss = [np.nan if r["test_loss"] is None else r["test_loss"] for r in rows]
  ax_acc.plot(rounds, acc, marker="o", ms=3)
  ax_acc.set_xlabel("round")
  ax_acc.set_ylabel("test accuracy")
  ax_acc.set_ylim(0, 1)
  ax_acc.grid(alpha=0.3)
  ax_loss.plot(rounds, loss, marker="o", ms=3, color="tab:red")
  ax_loss.set_xlabel("round")
  ax_loss.set_ylabel("test loss")
  ax_loss.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def train(config: ml_collections.ConfigDict, workdir: str, *,
          log: Callable[[str], None] = print, checkpoint: bool = True,
          plot: bool = True, experiment: Optional[Experiment] = None) -> dict:
  """Runs (or resumes) the experiment of ``config`` in ``workdir``.

  Args:
    config: experiment config (validated here).
    workdir: output folder (created).
    log: progress sink, one line per evaluation.
    checkpoint: write and resume from checkpoints.
    plot: write ``metrics.png``.
    experiment: a prebuilt experiment for ``config`` (sweeps reuse compiles).

  Returns:
    The summary dict also written to ``summary.json``.

  Raises:
    ValueError: the config cannot work (message names the field).
  """
  os.makedirs(workdir, exist_ok=True)
  # Multi-host: every process trains and checkpoints (orbax coordinates the
  # shared checkpoint folder); only process 0 logs and writes the outputs.
  out_dir = workdir
  if jax.process_index() != 0:
    out_dir = os.path.join(workdir, f"process_{jax.process_index()}")
    os.makedirs(out_dir, exist_ok=True)
    log = lambda _: None
  exp = experiment if experiment is not None else build_experiment(config)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  num_rounds = int(config.num_rounds)
  state = exp.init_state()
  start_round = 0
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints")) if checkpoint else None
  if ckpt is not None:
    restored, step = ckpt.restore_latest(state)
    if restored is not None:
      state, start_round = restored, int(step)
      log(f"resumed from the checkpoint of round {start_round} in {workdir}")
  log(f"{exp.dataset.name}: {config.num_clients} clients "
      f"({int(exp.byzantine.sum())} Byzantine, attack={config.attack.name}), "
      f"model {config.model.name} with {exp.num_params:,} parameters, "
      f"aggregator {config.aggregator.name}, {num_rounds} rounds")

  metrics_path = os.path.join(out_dir, "metrics.jsonl")
  rows = _read_metrics(metrics_path, start_round)
  with open(metrics_path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")

  t_start = time.time()
  t_last, prev_done = time.time(), start_round
  steady_rounds, steady_seconds = 0, 0.0
  with open(metrics_path, "a") as metrics_file:
    for r in range(start_round, num_rounds):
      state, round_metrics = exp.round_fn(state, exp.data)
      done = r + 1
      if r == start_round:
        # Time the first round (compilation) apart, so that the rate and ETA
        # shown later describe steady rounds only.
        jax.block_until_ready(state.round)
        exp.eval_fn(state.params)["accuracy"].block_until_ready()
        log(f"compiled and ran round {done} in {time.time() - t_start:.1f} s")
        t_last, prev_done = time.time(), done
      is_eval = done % config.eval_every == 0 or done == num_rounds
      is_ckpt = ckpt is not None and (
          done % config.checkpoint_every == 0 or done == num_rounds)
      if not (is_eval or is_ckpt):
        continue
      eval_metrics = jax.device_get(exp.eval_fn(state.params)) if is_eval else None
      round_metrics = jax.device_get(round_metrics)
      now = time.time()
      steady_rounds += done - prev_done
      steady_seconds += now - t_last
      seconds_per_round = steady_seconds / max(steady_rounds, 1)
      t_last, prev_done = now, done
      if is_eval:
        row = {"round": done}
        row.update({f"test_{k}" if k in ("accuracy", "loss", "error_rate") else k:
                    _to_json(v) for k, v in eval_metrics.items()})
        for k in ("train_loss", "num_rejected", "num_nonfinite", "tpr", "fpr",
                  "skipped", "update_norm"):
          row[k] = _to_json(round_metrics[k])
        row["flagged_clients"] = np.flatnonzero(
            round_metrics["flagged"]).tolist()
        if "factor_mean" in round_metrics:  # Romoa: who is being punished
          row["factor_mean"] = _to_json(round_metrics["factor_mean"])
        row["time_s"] = round(now - t_start, 3)
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
        rows.append(row)
        eta = seconds_per_round * (num_rounds - done)
        acc = row["test_accuracy"]
        loss = row["test_loss"]
        if loss is None:
          log(f"warning: non-finite test loss at round {done}")
        log(f"round {done}/{num_rounds} | test_acc {acc:.4f} | test_loss "
            f"{loss if loss is None else format(loss, '.4f')} | train_loss "
            f"{row['train_loss'] if row['train_loss'] is None else format(row['train_loss'], '.4f')}"
            f" | rejected {row['num_rejected']} | {seconds_per_round:.3f} s/round"
            f" | eta {_format_eta(eta)}")
      if is_ckpt:
        ckpt.save(done, state)
  if ckpt is not None:
    ckpt.close()

  final = rows[-1] if rows else {}
  params = jax.device_get(state.params)
  summary = {
      "final_test_accuracy": final.get("test_accuracy"),
      "final_test_loss": final.get("test_loss"),
      "rounds_completed": int(jax.device_get(state.round)),
      "params_sha256": params_sha256(params),
      "num_params": exp.num_params,
      "best_test_accuracy": max((r["test_accuracy"] or 0.0) for r in rows)
                            if rows else None,
      "resumed_from_round": start_round,
      "wall_time_s": round(time.time() - t_start, 3),
      "config": {"data": config.data.name, "model": config.model.name,
                 "num_clients": config.num_clients,
                 "attack": config.attack.name,
                 "num_byzantine": int(config.attack.num_byzantine),
                 "aggregator": config.aggregator.name},
  }
  for key in ("targeted_flip_rate", "targeted_confidence", "backdoor_success",
              "tpr", "fpr"):
    if key in final:
      summary[f"final_{key}"] = final[key]
  # eval.attack_epsilon set: clean and PGD-20 robust accuracy of the final model.
  from robustfl_jax.adversarial import evaluation as adversarial_eval  # pylint: disable=import-outside-toplevel
  summary.update(adversarial_eval.summary_metrics(
      config, exp.model.apply, state.params, exp.dataset.x_test,
      exp.dataset.y_test))
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  if plot and rows:
    plot_metrics(rows, os.path.join(out_dir, "metrics.png"),
                 title=f"{config.data.name} / {config.aggregator.name} / "
                       f"{config.attack.name}")
  return summary
