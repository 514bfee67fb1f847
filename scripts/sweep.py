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

from absl import flags

from robustfl_jax.experiments import cli
from robustfl_jax.experiments import reporting
from robustfl_jax.experiments import sweep

_CONFIG = cli.define_config("digits_fedavg.py", "Base experiment config.")
_ATTACKS = flags.DEFINE_list("attacks", list(sweep.ATTACKS),
                             "Attacks (attack.name values).")
_AGGREGATORS = flags.DEFINE_list("aggregators", list(sweep.AGGREGATORS),
                                 "Aggregation rules (aggregator.name values).")
_NUM_BYZANTINE = flags.DEFINE_list(
    "num_byzantine", [str(f) for f in sweep.NUM_BYZANTINE],
    "Numbers of Byzantine clients.")
_OUT = cli.define_output_flags("runs/sweep")


def main(argv):
  cli.no_extra_arguments(argv)
  workdir = cli.default_workdir(_OUT.workdir.value, "sweep")

  def run():
    base = cli.load(_CONFIG)
    rows = sweep.run_sweep(base, workdir, attacks=_ATTACKS.value,
                           aggregators=_AGGREGATORS.value,
                           num_byzantine=_NUM_BYZANTINE.value, log=cli.say,
                           fresh=_OUT.fresh.value)
    if _OUT.publish.value:
      reporting.publish("sweep", sweep.markdown(rows, base),
                        command=cli.command_line(), headline=sweep.headline(rows),
                        files=[os.path.join(workdir, "sweep.png")])

  return cli.run_or_exit(run)


if __name__ == "__main__":
  cli.run(main)
