r"""Centralised and federated PatchCore, clean and under attack, from a config file.

Example::

  python scripts/patchcore.py --config=configs/patchcore_elpv.py
  python scripts/patchcore.py --config=configs/patchcore_elpv.py \
      --config.federated.attacks='("scaling",)' --workdir=runs/pc_scaling

Outputs in ``--workdir`` (default ``runs/<config file name>``): ``results.json``
(``centralized.image_auroc``, ``federated.<strategy>.<attack or clean>.image_auroc``,
``synthetic.pixel_auroc``, ``synthetic.aupro``), ``results.md`` and
``anomaly_maps_*.png``.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from robustfl_jax.patchcore import experiment  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/patchcore_*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder; default runs/<config file name>.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<name>.py is required.")
  workdir = _WORKDIR.value
  if workdir is None:
    name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    workdir = os.path.join("runs", name)
  try:
    experiment.run(config, workdir, log=lambda line: print(line, flush=True))
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2
  return 0


if __name__ == "__main__":
  app.run(main)
