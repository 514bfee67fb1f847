r"""Trains one federated experiment from a config file.

Example::

  python scripts/train.py --config=configs/digits_fedavg.py
  python scripts/train.py --config=configs/digits_attack.py \
      --config.aggregator.name=mean --workdir=runs/attack_mean

Outputs in ``--workdir`` (default ``runs/<config file name>``):
``metrics.jsonl``, ``summary.json``, ``metrics.png``, ``checkpoints/``.
Rerunning the same command after an interruption resumes from the last
checkpoint.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from robustfl_jax.fl import runner  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder; default runs/<config file name>.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Multi-host run: call jax.distributed.initialize (coordinator from the "
    "environment) before building the mesh over all hosts' devices.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  if _DISTRIBUTED.value:
    from robustfl_jax import distributed  # pylint: disable=import-outside-toplevel
    distributed.initialize(force=True)
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<name>.py is required.")
  workdir = _WORKDIR.value
  if workdir is None:
    config_path = flags.FLAGS["config"].config_filename
    name = os.path.splitext(os.path.basename(config_path))[0]
    workdir = os.path.join("runs", name)
  try:
    summary = runner.train(config, workdir,
                           log=lambda line: print(line, flush=True))
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2
  print(f"final test accuracy {summary['final_test_accuracy']:.4f}, loss "
        f"{summary['final_test_loss']:.4f} after {summary['rounds_completed']} "
        f"rounds; outputs in {workdir}", flush=True)
  return 0


if __name__ == "__main__":
  app.run(main)
