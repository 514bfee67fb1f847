r"""Robustness vs learning (arXiv:2402.13700): defenses x adversaries x data.

Example::

  python scripts/conflict.py --config=configs/conflict.py
  python scripts/conflict.py --config=configs/conflict.py \
      --config.grid.defenses=mean,gan_filter --config.grid.partitions=iid

One program is compiled per defense and reused for all adversaries (see
:mod:`robustfl_jax.experiments.conflict`, which runs the grid). Writes to
``--workdir`` (default ``runs/conflict``): ``results.json`` (a row per cell),
``meta.json``, ``conflict.md``, ``conflict.png`` and, with the GAN filter,
``gan.json`` and ``gan_samples.png``. ``--publish`` also writes
``docs/results/conflict.md`` and the README's headline figure.
"""

import os

from robustfl_jax.experiments import cli
from robustfl_jax.experiments import conflict
from robustfl_jax.experiments import reporting

_CONFIG = cli.define_config("conflict.py", "Conflict experiment config.")
_OUT = cli.define_output_flags("runs/conflict")


def main(argv):
  cli.no_extra_arguments(argv)
  workdir = cli.default_workdir(_OUT.workdir.value, "conflict")

  def run():
    result = conflict.run_conflict(cli.load(_CONFIG), workdir, log=cli.say,
                                   fresh=_OUT.fresh.value)
    if _OUT.publish.value:
      plots = ["conflict.png"] + (["gan_samples.png"] if result.gan else [])
      reporting.publish("conflict", conflict.report(result),
                        command=cli.command_line(),
                        headline=conflict.headline(result),
                        files=[os.path.join(workdir, p) for p in plots])

  return cli.run_or_exit(run)


if __name__ == "__main__":
  cli.run(main)
