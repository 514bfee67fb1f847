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

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from robustfl_jax.experiments import cli
from robustfl_jax.experiments import conflict
from robustfl_jax.experiments import reporting
from robustfl_jax.experiments.config import CONFIGS_DIR

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(CONFIGS_DIR, "conflict.py"),
    "Conflict experiment config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", os.path.join("runs", "conflict"),
                               "Output folder.")
_PUBLISH = flags.DEFINE_bool(
    "publish", False, "Write docs/results/conflict.md and the README headline "
    "from this run.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  workdir = _WORKDIR.value

  def run():
    result = conflict.run_conflict(_CONFIG.value, workdir, log=cli.say)
    if _PUBLISH.value:
      plots = ["conflict.png"] + (["gan_samples.png"] if result.gan else [])
      reporting.publish("conflict", conflict.report(result),
                        command=cli.command_line(),
                        headline=conflict.headline(result),
                        files=[os.path.join(workdir, p) for p in plots])

  return cli.run_or_exit(run)


if __name__ == "__main__":
  app.run(main)
