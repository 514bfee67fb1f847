r"""Centralised and federated PatchCore, clean and under attack, from a config file.

Example::

  python scripts/patchcore.py --config=configs/patchcore_elpv.py
  python scripts/patchcore.py --config=configs/patchcore_elpv.py \
      --config.federated.attacks='("scaling",)' --workdir=runs/pc_scaling

Outputs in ``--workdir`` (default ``runs/<config file name>``): ``results.json``
(``centralized.image_auroc``, ``federated.<strategy>.<attack or clean>.image_auroc``,
``synthetic.pixel_auroc``, ``synthetic.aupro``), ``results.md`` and
``anomaly_maps_*.png``. ``--publish`` also writes
``docs/results/<config file name>.md`` and the README's headline figure.

``--ablation`` builds only the centralised bank, once per variant of the
config's ``ablation`` list (default workdir ``runs/<config file name>_ablation``);
with ``--publish`` its table goes to ``docs/results/patchcore.md``::

  python scripts/patchcore.py --config=configs/patchcore_elpv.py --ablation --publish
"""

import os

from absl import flags

from robustfl_jax.experiments import cli
from robustfl_jax.experiments import patchcore
from robustfl_jax.experiments import reporting

_CONFIG = cli.define_config(None, "Experiment config file (configs/patchcore_*.py).")
_OUT = cli.define_output_flags()
_ABLATION = flags.DEFINE_bool("ablation", False, "Only the centralised bank, for each variant "
                              "of the config's ablation list (published as patchcore.md).")


def main(argv):
  cli.no_extra_arguments(argv)
  config_path = _CONFIG.value
  if _ABLATION.value:
    workdir = _OUT.workdir.value or cli.default_workdir(None, config_path) + "_ablation"

    def publish(rows):  # after every row: a stopped run keeps its finished rows
      reporting.publish("patchcore", patchcore.ablation_markdown(rows), command=cli.command_line())

    def ablation():
      patchcore.ablation(cli.load(_CONFIG), workdir, log=cli.say, fresh=_OUT.fresh.value,
                         on_row=publish if _OUT.publish.value else None)

    return cli.run_or_exit(ablation)
  workdir = cli.default_workdir(_OUT.workdir.value, config_path)

  def run():
    results = patchcore.run(cli.load(_CONFIG), workdir, log=cli.say,
                            fresh=_OUT.fresh.value)
    if _OUT.publish.value:
      path = reporting.publish(
        cli.config_name(config_path), patchcore.markdown(results),
        command=cli.command_line(), headline=patchcore.headline(results),
        files=[path for path in (os.path.join(workdir, patchcore.TEST_MAPS),
                                 os.path.join(workdir, patchcore.BANK_PCA))
               if os.path.exists(path)])
      cli.say(f"published {path}")

  return cli.run_or_exit(run)


if __name__ == "__main__":
  cli.run(main)
