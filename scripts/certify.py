r"""Certified L2 robustness of federated models by randomized smoothing.

For each sigma of ``config.certify.sigmas``: trains the federated model with
Gaussian-noise local training (``client.adversarial_training.method =
"gaussian"``) in ``<workdir>/sigma_<sigma>/`` (or loads it from that folder's
checkpoints when it is already trained), runs Cohen et al.'s CERTIFY on test
points and reports certified accuracy at the radii ``config.certify.radii``
(:func:`robustfl_jax.experiments.certification.run_certification`).

Example::

  python scripts/certify.py --config=configs/digits_certify.py
  python scripts/certify.py --config=configs/digits_certify.py \
      --config.certify.num_points=50 --workdir=runs/certify_quick

Outputs in ``--workdir`` (default ``runs/<config file name>``):
``certify.json`` (settings, per-sigma certified accuracy, abstention rate,
timings, and every point's prediction and radius), ``certify.md`` (the
table) and ``certify.png`` (certified accuracy against radius).
``--publish`` also writes ``docs/results/<config name>.md`` and the README's
headline figure.
"""

import os

from robustfl_jax.experiments import certification
from robustfl_jax.experiments import cli
from robustfl_jax.experiments import reporting

_CONFIG = cli.define_config(None, "Certification config (configs/digits_certify.py).")
_OUT = cli.define_output_flags()


def main(argv):
  cli.no_extra_arguments(argv)
  config_path = _CONFIG.value
  workdir = cli.default_workdir(_OUT.workdir.value, config_path)

  def run():
    report = certification.run_certification(cli.load(_CONFIG), workdir,
                                             log=cli.say, fresh=_OUT.fresh.value)
    if _OUT.publish.value:
      reporting.publish(cli.config_name(config_path),
                        certification.markdown(report),
                        command=cli.command_line(),
                        headline=certification.headline(report),
                        files=[os.path.join(workdir, "certify.png")])

  return cli.run_or_exit(run)


if __name__ == "__main__":
  cli.run(main)
