"""What the experiment scripts share: work directories, errors, publishing.

Each script in ``scripts/`` parses its flags and calls one function of
:mod:`robustfl_jax.experiments`; these helpers keep that call short.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional

from robustfl_jax.experiments import reporting
from robustfl_jax.experiments.runner import RunResult, train

# Errors a user can fix (a config field, a missing file): one line, exit 2.
USER_ERRORS = (ValueError, FileNotFoundError, ImportError)


def config_name(config_path: Optional[str]) -> str:
  """``configs/digits_fedavg.py`` -> ``digits_fedavg``."""
  return os.path.splitext(os.path.basename(config_path or "run"))[0]


def default_workdir(workdir: Optional[str], config_path: Optional[str]) -> str:
  """``workdir``, or ``runs/<config file name>``."""
  return workdir or os.path.join("runs", config_name(config_path))


def say(line: str) -> None:
  print(line, flush=True)


def run_or_exit(fn: Callable[[], Any]) -> int:
  """Calls ``fn``; a user error prints ``error: <sentence>`` and returns 2."""
  try:
    fn()
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2
  return 0


def command_line() -> str:
  """The command that is running, as a user would type it."""
  args = [a for a in sys.argv[1:] if not a.startswith("--publish")]
  return " ".join(["python", os.path.relpath(sys.argv[0])] + args)


def train_main(config, *, config_path: Optional[str], workdir: Optional[str],
               publish: bool = False) -> int:
  """``scripts/train.py``: train (or resume), print the result, publish it.

  Returns:
    The exit status: 0, or 2 after a one-line error.
  """
  workdir = default_workdir(workdir, config_path)

  def run():
    result = train(config, workdir, log=say)
    s = result.summary
    say(f"final test accuracy {reporting.fmt(s['final_test_accuracy'], '.4f')}"
        f", loss {reporting.fmt(s['final_test_loss'], '.4f')} after "
        f"{s['rounds_completed']} rounds; outputs in {workdir}")
    if publish:
      publish_training(result, config_name(config_path), workdir)

  return run_or_exit(run)


def training_report(result: RunResult) -> str:
  """A markdown report of one training run (its summary and evaluations)."""
  s = result.summary
  rows = [(r["round"], reporting.fmt(r.get("test_accuracy"), ".4f"),
           reporting.fmt(r.get("test_loss"), ".4f"),
           reporting.fmt(r.get("train_loss"), ".4f"), r.get("num_rejected"))
          for r in result.history]
  c = s["config"]
  lines = [
      f"{c['data']}, {c['num_clients']} clients ({c['num_byzantine']} "
      f"Byzantine, attack {c['attack']}), model {c['model']}, aggregator "
      f"{c['aggregator']}, {s['rounds_completed']} rounds, one seed "
      f"({result.experiment.config.seed}).", "",
      f"Final test accuracy **{reporting.fmt(s['final_test_accuracy'], '.4f')}**"
      f", test loss {reporting.fmt(s['final_test_loss'], '.4f')}; "
      f"wall time {s['wall_time_s']:.1f} s; params sha256 "
      f"`{s['params_sha256'][:16]}...`.", "",
      reporting.markdown_table(
          ("round", "test accuracy", "test loss", "train loss", "rejected"),
          rows)]
  return "\n".join(lines)


def publish_training(result: RunResult, name: str, workdir: str) -> str:
  """``docs/results/<name>.md`` and the README headline of a training run."""
  s = result.summary
  headline = (f"test accuracy {reporting.fmt(s['final_test_accuracy'])}, "
              f"loss {reporting.fmt(s['final_test_loss'])}")
  plot = os.path.join(workdir, "metrics.png")
  return reporting.publish(name, training_report(result),
                           command=command_line(), headline=headline,
                           files=[plot] if os.path.exists(plot) else [])
