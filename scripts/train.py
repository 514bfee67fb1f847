r"""Trains one federated experiment from a config file.

Example::

  python scripts/train.py --config=configs/digits_fedavg.py
  python scripts/train.py --config=configs/digits_attack.py \
      --config.aggregator.name=mean --workdir=runs/attack_mean

Outputs in ``--workdir`` (default ``runs/<config file name>``):
``config.json``, ``metrics.jsonl``, ``summary.json``, ``metrics.png``,
``checkpoints/``. Rerunning the same command after an interruption resumes
from the last checkpoint. ``--publish`` also writes
``docs/results/<config file name>.md`` and the README's headline figure.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from robustfl_jax.experiments import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder; default runs/<config file name>.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Multi-host run: call jax.distributed.initialize (coordinator from the "
    "environment) before building the mesh over all hosts' devices.")
_PUBLISH = flags.DEFINE_bool(
    "publish", False, "Write docs/results/<config name>.md and the README "
    "headline from this run.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  if _CONFIG.value is None:
    raise app.UsageError("--config=configs/<name>.py is required.")
  if _DISTRIBUTED.value:
    from robustfl_jax import distributed  # pylint: disable=import-outside-toplevel
    distributed.initialize(force=True)
  return cli.train_main(_CONFIG.value,
                        config_path=flags.FLAGS["config"].config_filename,
                        workdir=_WORKDIR.value, publish=_PUBLISH.value)


if __name__ == "__main__":
  app.run(main)
