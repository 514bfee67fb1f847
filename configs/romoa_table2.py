r"""Romoa's Table 2 on the embedded digits: one label per client, non-IID.

Command::

  python scripts/reproduce_romoa.py --config=configs/romoa_table2.py
  # the moving rate gamma, which the paper does not give, matters:
  python scripts/reproduce_romoa.py --config=configs/romoa_table2.py \
      --config.romoa.moving_rate=1/n --workdir=runs/romoa_table2_gamma_1n

Ten clients, each holding a single digit (``data.partition = "one_label"``),
one adversary (client 0), methods ``baseline`` (mean) and ``romoa``, attacks
none / TPA / UPA in the asynchronous protocol, as in
``configs/romoa_table1.py``. Outputs in ``runs/romoa_table2``.

Headline (shared 2-core CPU, 9.5 min): error none / TPA / UPA, Romoa
.86/.82/.83 (paper MNIST .13/.43/.16). ``--publish`` writes the full table to
``docs/results/romoa_table2.md``.
"""

import os

from robustfl_jax.experiments.config import load_config


def _base():
  return load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "romoa_table1.py"), lock=False)


def get_config():
  config = _base()
  config.data.partition = "one_label"
  config.reproduce.table = 2
  config.reproduce.participants = (10,)
  config.reproduce.adversaries = {"10": (1,)}
  config.reproduce.methods = ("baseline", "romoa")
  config.reproduce.attacks = ("none", "TPA", "UPA")
  return config
