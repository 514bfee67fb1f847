r"""Trains one federated experiment from a config file.

Example::

  python scripts/train.py --config=configs/digits_fedavg.py
  python scripts/train.py --config=configs/digits_attack.py \
      --config.aggregator.name=mean --workdir=runs/attack_mean

Outputs in ``--workdir`` (default ``runs/<config file name>``):
``experiment.json``, ``config.json``, ``metrics.jsonl``, ``summary.json``,
``metrics.png``, ``checkpoints/``. Rerunning the same command after an
interruption resumes from the last verified checkpoint; a work directory of
another experiment is refused (``--fresh`` moves its outputs aside).
``--publish`` also writes ``docs/results/<config file name>.md`` and the
README's headline figure.

Several processes (README, "Scaling out"): add
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` to each
process's command; only process 0 writes logs and outputs.
"""

from robustfl_jax.experiments import cli

_CONFIG = cli.define_config()
_OUT = cli.define_output_flags()


def main(argv):
  cli.no_extra_arguments(argv)
  return cli.train_main(_CONFIG, config_path=_CONFIG.value,
                        workdir=_OUT.workdir.value, publish=_OUT.publish.value,
                        fresh=_OUT.fresh.value)


if __name__ == "__main__":
  cli.run(main)
