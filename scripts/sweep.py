r"""Grid of attack x aggregator x number of Byzantine clients on digits.

Example::

  python scripts/sweep.py                       # the default grid (~60 runs)
  python scripts/sweep.py --attacks=scaling,alie --aggregators=mean,krum \
      --num_byzantine=1,3 --config.num_rounds=30

Writes to ``--workdir`` (default ``runs/sweep``): ``results.jsonl`` (one line
per run), ``sweep.md`` (a markdown table of final test accuracy with the worst
case over attacks per rule, as ByzFL reports) and ``sweep.png`` (a heatmap).
Every run starts from ``--config`` (default ``configs/digits_fedavg.py``) with
``attack.name``, ``attack.num_byzantine`` and ``aggregator.name`` replaced
(:func:`robustfl_jax.experiments.sweep.run_sweep`). ``--publish`` also writes
``docs/results/sweep.md`` and the README's headline figure.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from robustfl_jax.experiments import cli
from robustfl_jax.experiments import reporting
from robustfl_jax.experiments import sweep
from robustfl_jax.experiments.config import CONFIGS_DIR

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(CONFIGS_DIR, "digits_fedavg.py"),
    "Base experiment config.", lock_config=True)
_ATTACKS = flags.DEFINE_list("attacks", list(sweep.ATTACKS),
                             "Attacks (attack.name values).")
_AGGREGATORS = flags.DEFINE_list("aggregators", list(sweep.AGGREGATORS),
                                 "Aggregation rules (aggregator.name values).")
_NUM_BYZANTINE = flags.DEFINE_list(
    "num_byzantine", [str(f) for f in sweep.NUM_BYZANTINE],
    "Numbers of Byzantine clients.")
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Output folder; default runs/sweep.")
_PUBLISH = flags.DEFINE_bool(
    "publish", False, "Write docs/results/sweep.md and the README headline "
    "from this run.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  workdir = cli.default_workdir(_WORKDIR.value, "sweep")

  def run():
    rows = sweep.run_sweep(_CONFIG.value, workdir, attacks=_ATTACKS.value,
                           aggregators=_AGGREGATORS.value,
                           num_byzantine=_NUM_BYZANTINE.value, log=cli.say)
    if _PUBLISH.value:
      reporting.publish("sweep", sweep.markdown(rows, _CONFIG.value),
                        command=cli.command_line(), headline=sweep.headline(rows),
                        files=[os.path.join(workdir, "sweep.png")])

  return cli.run_or_exit(run)


if __name__ == "__main__":
  app.run(main)
