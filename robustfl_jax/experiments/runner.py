"""The training loop behind ``scripts/train.py``: rounds, evaluation, outputs.

Writes into a work directory:

* ``config.json``: the resolved config;
* ``metrics.jsonl``: one JSON object per evaluation (``round``,
  ``test_accuracy``, ``test_loss``, ``test_error_rate``, ``per_class_accuracy``,
  ``train_loss`` (null when every client is Byzantine), ``num_excluded``
  (clients given zero weight: masked, non-finite, unselected or weighted 0),
  ``num_rejected`` (masked or non-finite among them), ``flagged_clients``
  (the excluded ones), ``tpr``, ``fpr``,
  ``skipped``, and with targeted or backdoor attacks
  ``targeted_flip_rate``, ``targeted_confidence``, ``backdoor_success``);
* ``summary.json``: ``final_test_accuracy``, ``final_test_loss``,
  ``rounds_completed``, ``params_sha256`` and more;
* ``metrics.png``: test accuracy and loss against rounds;
* ``checkpoints/``: orbax checkpoints of the whole server state.

* ``experiment.json``: the fingerprint of the fields that decide results
  (:mod:`robustfl_jax.experiments.workdir`).

The work directory belongs to one experiment: a config that differs in a
field that decides results is refused before anything is built. Rerunning the
same experiment resumes from the newest *verified* checkpoint (a step whose
checksum fails is skipped and kept, see :mod:`robustfl_jax.checkpoint`);
since round ``t`` draws its randomness from ``fold_in(key, t)``, the resumed
run ends bit-identical to an uninterrupted one. A larger ``num_rounds``
continues the run; a smaller one than the rounds completed is refused. The
earlier ``summary.json`` and ``metrics.png`` are kept in
``previous/<date-time>/`` before they are written again.

In a run of several processes (:mod:`robustfl_jax.distributed`) every
process trains, checkpoints and restores collectively (the work directory
must be on a file system they share); only process 0 logs and writes
``config.json``, ``metrics.jsonl``, ``summary.json`` and ``metrics.png``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import ml_collections
import numpy as np

from robustfl_jax import distributed
from robustfl_jax.checkpoint import Checkpointer
from robustfl_jax.experiments import adversarial as adversarial_hooks
from robustfl_jax.experiments import reporting
from robustfl_jax.experiments import workdir as workdir_lib
from robustfl_jax.experiments.builders import (Experiment, build_experiment,
                                               validate_config)
from robustfl_jax.fl.server import ServerState, params_sha256

_ROUND_FIELDS = ("train_loss", "num_excluded", "num_rejected",
                 "num_nonfinite", "tpr", "fpr", "skipped", "update_norm")


class Interrupted(KeyboardInterrupt):
  """Ctrl-C during training; the message says where and how to resume."""

  def __init__(self, done: int, checkpointed: Optional[int]):
    where = (f"last checkpoint: round {checkpointed}" if checkpointed
             else "no checkpoint yet")
    super().__init__(f"interrupted at round {done}; {where}; rerun the same "
                     "command to resume.")
    self.done, self.checkpointed = done, checkpointed


class RunResult(NamedTuple):
  """What :func:`train` returns.

  Attributes:
    summary: the dict written to ``summary.json``.
    history: the ``metrics.jsonl`` rows, one per evaluation (resumed runs
      include the rows of the earlier part).
    state: the final :class:`~robustfl_jax.fl.ServerState`.
    experiment: the :class:`Experiment` that ran.
  """

  summary: dict
  history: list
  state: ServerState
  experiment: Experiment


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


def _fmt(value, spec=".4f"):
  return "n/a" if value is None else format(value, spec)


def _metrics_row(done: int, eval_metrics: dict, round_metrics: dict,
                 elapsed: float) -> dict:
  row = {"round": done}
  row.update({f"test_{k}" if k in ("accuracy", "loss", "error_rate") else k:
              reporting.to_json(v) for k, v in eval_metrics.items()})
  for k in _ROUND_FIELDS:
    row[k] = reporting.to_json(round_metrics[k])
  row["flagged_clients"] = np.flatnonzero(round_metrics["flagged"]).tolist()
  if "factor_mean" in round_metrics:  # Romoa: who is being punished
    row["factor_mean"] = reporting.to_json(round_metrics["factor_mean"])
  row["time_s"] = round(elapsed, 3)
  return row


@contextlib.contextmanager
def _stop_requested():
  """A flag that Ctrl-C sets, so that the loop stops between rounds (never
  inside a checkpoint save); a second Ctrl-C interrupts at once."""
  flag = {"stop": False}
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return

  def handler(signum, frame):
    del signum, frame
    if flag["stop"]:
      raise KeyboardInterrupt
    flag["stop"] = True

  previous = signal.signal(signal.SIGINT, handler)
  try:
    yield flag
  finally:
    signal.signal(signal.SIGINT, previous)


def _completed_rounds(ckpt_dir: str) -> int:
  """The newest step with a checksum, read off the folder (nothing loaded)."""
  folder = os.path.join(ckpt_dir, "checksums")
  if not os.path.isdir(folder):
    return 0
  steps = [int(n[:-5]) for n in os.listdir(folder)
           if n.endswith(".json") and n[:-5].isdigit()
           and os.path.isdir(os.path.join(ckpt_dir, n[:-5]))]
  return max(steps, default=0)


def train(config: ml_collections.ConfigDict, workdir: str, *,
          log: Callable[[str], None] = print, checkpoint: bool = True,
          plot: bool = True, experiment: Optional[Experiment] = None,
          fresh: bool = False,
          ignore: Sequence[str] = workdir_lib.PROGRESS_FIELDS) -> RunResult:
  """Runs (or resumes) the experiment of ``config`` in ``workdir``.

  Args:
    config: experiment config (validated here).
    workdir: output folder (created).
    log: progress sink, one line per evaluation.
    checkpoint: write and resume from checkpoints.
    plot: write ``metrics.png``.
    experiment: a prebuilt experiment for ``config`` (sweeps reuse compiles).
    fresh: move what ``workdir`` holds to ``previous/<date-time>/`` first
      (the only way to reuse another experiment's directory).
    ignore: config fields that do not decide this run's results (the work
      directory's fingerprint leaves them out).

  Returns:
    A :class:`RunResult`: the summary (also in ``summary.json``), the metrics
    history and the final state.

  Raises:
    ValueError: the config cannot work (message names the field), or the
      work directory holds another experiment, is not writable, holds more
      rounds than asked for, or holds no checkpoint that passes its checks
      (:class:`~robustfl_jax.experiments.workdir.WorkdirError`).
    Interrupted: Ctrl-C; the last checkpoint is intact.
  """
  num_rounds = int(config.num_rounds)
  validate_config(config)  # a config that cannot work claims no directory
  workdir_lib.claim(workdir, config, kind="train", fresh=fresh,
                    ignore=ignore, log=log)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  completed = _completed_rounds(ckpt_dir) if checkpoint else 0
  if completed > num_rounds:
    raise workdir_lib.WorkdirError(
        f"{workdir} has completed {completed} rounds; num_rounds={num_rounds} "
        f"asks for fewer. Ask for at least {completed} or use another "
        "--workdir.")
  # Several processes: every one trains and checkpoints (orbax writes the
  # shared checkpoint folder collectively); only process 0 logs and writes
  # config.json, metrics.jsonl, summary.json and metrics.png.
  main = distributed.is_main_process()
  if not main:
    log = lambda _: None
  exp = experiment if experiment is not None else build_experiment(config)
  if main:
    reporting.write_text(os.path.join(workdir, "config.json"),
                         config.to_json_best_effort(indent=2, sort_keys=True))
  state = exp.init_state()
  start_round = 0
  ckpt = Checkpointer(ckpt_dir) if checkpoint else None
  if ckpt is not None:
    had_steps = bool(ckpt.all_steps())
    restored, step = ckpt.restore_latest(
        state, warn=lambda line: log(f"warning: {line}"))
    if restored is not None:
      state, start_round = restored, int(step)
      log(f"resumed from the checkpoint of round {start_round} in {workdir}")
    elif had_steps:
      ckpt.close()
      raise workdir_lib.WorkdirError(
          f"no checkpoint in {ckpt_dir} passes its checks (each was kept as "
          "corrupt_*); rerun with --fresh to move them aside and start anew.")
  if main:
    kept = workdir_lib.set_aside(workdir, ["summary.json", "metrics.png"])
    if kept:
      log(f"kept the earlier summary and plot in {kept}")
  log(f"{exp.dataset.name}: {config.num_clients} clients "
      f"({int(exp.byzantine.sum())} Byzantine, attack={config.attack.name}), "
      f"model {config.model.name} with {exp.num_params:,} parameters, "
      f"aggregator {config.aggregator.name}, {num_rounds} rounds")

  metrics_path = os.path.join(workdir, "metrics.jsonl")
  rows = _read_metrics(metrics_path, start_round)
  if main:
    with open(metrics_path, "w") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")

  t_start = time.time()
  t_last, prev_done = time.time(), start_round
  steady_rounds, steady_seconds = 0, 0.0
  done, saved = start_round, start_round
  try:
    with (open(metrics_path, "a") if main else contextlib.nullcontext(None)
          ) as metrics_file, _stop_requested() as flag:
      for r in range(start_round, num_rounds):
        if flag["stop"]:
          raise KeyboardInterrupt
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
        now = time.time()
        steady_rounds += done - prev_done
        steady_seconds += now - t_last
        seconds_per_round = steady_seconds / max(steady_rounds, 1)
        t_last, prev_done = now, done
        if is_eval:
          row = _metrics_row(done,
                             distributed.to_host(exp.eval_fn(state.params)),
                             distributed.to_host(round_metrics),
                             now - t_start)
          if main:
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
          rows.append(row)
          if row["test_loss"] is None:
            log(f"warning: non-finite test loss at round {done}")
          log(f"round {done}/{num_rounds} | test_acc {row['test_accuracy']:.4f}"
              f" | test_loss {_fmt(row['test_loss'])} | train_loss "
              f"{_fmt(row['train_loss'])} | excluded {row['num_excluded']} | "
              f"{seconds_per_round:.3f} s/round | eta "
              f"{_format_eta(seconds_per_round * (num_rounds - done))}")
        if is_ckpt:
          ckpt.save(done, state)
          saved = done
  except KeyboardInterrupt:
    raise Interrupted(done, saved) from None
  finally:
    if ckpt is not None:
      ckpt.close()

  summary = _summary(config, exp, state, rows, start_round, t_start)
  if main:
    reporting.write_json(os.path.join(workdir, "summary.json"), summary,
                         indent=2)
  if main and plot and rows:
    reporting.plot_metrics(rows, os.path.join(workdir, "metrics.png"),
                           title=f"{config.data.name} / "
                                 f"{config.aggregator.name} / "
                                 f"{config.attack.name}")
  return RunResult(summary, rows, state, exp)


def _summary(config, exp: Experiment, state: ServerState, rows: list,
             start_round: int, t_start: float) -> dict:
  final = rows[-1] if rows else {}
  summary = {
      "final_test_accuracy": final.get("test_accuracy"),
      "final_test_loss": final.get("test_loss"),
      "rounds_completed": int(distributed.to_host(state.round)),
      "params_sha256": params_sha256(distributed.to_host(state.params)),
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
  summary.update(adversarial_hooks.robust_summary(
      config, exp.model.apply, state.params, exp.dataset.x_test,
      exp.dataset.y_test))
  return summary
