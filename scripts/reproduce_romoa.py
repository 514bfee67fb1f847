r"""Reproduces Romoa's Tables 1 and 2 (Mao et al., ESORICS 2021) on our stack.

Example::

  python scripts/reproduce_romoa.py --config=configs/romoa_table1.py
  python scripts/reproduce_romoa.py --config=configs/romoa_table2.py

Writes to ``--workdir`` (default ``runs/<config file name>``):

* ``results.json``: ``{"settings", "runs", "cells"}`` (every run per seed,
  and the cells: mean +- sd over seeds, diverged runs counted apart);
* ``factor_traces.json``: Romoa's per-client factors per round (first seed);
* ``table.md``: our error rates and accuracy beside the paper's MNIST numbers;
* ``error_vs_fraction.png``: error against the adversary fraction.

The grid runner is
:func:`robustfl_jax.experiments.romoa_tables.run_romoa_tables`.
``--publish`` also writes ``docs/results/<config name>.md``, the README's
headline figure, and ``docs/results/romoa.md`` (both tables and the list of
where the paper is silent or inconsistent).
"""

import os

from robustfl_jax.experiments import cli
from robustfl_jax.experiments import reporting
from robustfl_jax.experiments import romoa_tables

_CONFIG = cli.define_config(None, "configs/romoa_table1.py or configs/romoa_table2.py.")
_OUT = cli.define_output_flags()


def main(argv):
  cli.no_extra_arguments(argv)
  config_path = _CONFIG.value
  workdir = cli.default_workdir(_OUT.workdir.value, config_path)

  def run():
    base = cli.load(_CONFIG)
    results = romoa_tables.run_romoa_tables(base, workdir, log=cli.say,
                                            fresh=_OUT.fresh.value)
    if _OUT.publish.value:
      reporting.publish(
          cli.config_name(config_path), romoa_tables.markdown(results, base),
          command=cli.command_line(),
          headline=romoa_tables.headline(results, base),
          files=[os.path.join(workdir, "error_vs_fraction.png")])
      romoa_tables.publish_note()

  return cli.run_or_exit(run)


if __name__ == "__main__":
  cli.run(main)
