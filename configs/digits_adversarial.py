r"""Federated PGD adversarial training on digits under a Byzantine attack.

10 IID clients, 2 of them Byzantine (sign flip: they send minus their
update), trimmed mean (2 trimmed from each end); every client's local
objective is Madry et al.'s PGD training (L-inf epsilon 0.1, 10 steps of
0.025, random start). ``summary.json`` adds ``clean_accuracy`` and
``robust_accuracy`` (PGD-20 at ``eval.attack_epsilon`` = 0.1).

Commands::

  python scripts/train.py --config=configs/digits_adversarial.py \
      --workdir=runs/digits_adv_pgd
  # the same federation trained on clean data only (the baseline):
  python scripts/train.py --config=configs/digits_adversarial.py \
      --config.client.adversarial_training.method=none \
      --workdir=runs/digits_adv_none
  # TRADES (beta 6) or the seed's 50/50 clean + PGD mix:
  python scripts/train.py --config=configs/digits_adversarial.py \
      --config.client.adversarial_training.method=trades \
      --workdir=runs/digits_adv_trades

Result (60 rounds, 450 test digits, measured on a shared 2-core CPU; the PGD
run takes about 25 s of CPU time):

  ===  ===============  =========  =============  ============================
  eps  method           clean acc  PGD-20 robust  cascade (FGSM, PGD-20, APGD-CE,
                                                  APGD-T)
  ===  ===============  =========  =============  ============================
  0.1  none             0.927      0.584          0.560
  0.1  pgd (default)    0.933      0.749          0.733
  0.1  mix              0.933      0.720          0.711
  0.1  trades           0.911      0.727          0.682
  0.2  none             0.927      0.049          0.031
  0.2  pgd              0.909      0.360          0.244
  ===  ===============  =========  =============  ============================

(eps 0.2: ``--config.client.adversarial_training.epsilon=0.2
--config.eval.attack_epsilon=0.2``.)
"""

import os

from robustfl_jax.experiments.config import load_config


def _base():
  return load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "digits_fedavg.py"), lock=False)


def get_config():
  config = _base()
  config.num_rounds = 60
  config.num_clients = 10
  config.attack.name = "sign_flip"
  config.attack.num_byzantine = 2
  config.attack.byzantine = "first"
  config.aggregator.name = "trimmed_mean"
  config.aggregator.num_trim = 2
  config.client.adversarial_training.method = "pgd"
  config.client.adversarial_training.epsilon = 0.1
  config.client.adversarial_training.steps = 10
  config.client.adversarial_training.norm = "linf"
  config.eval.attack_epsilon = 0.1
  config.eval.attack_steps = 20
  return config
