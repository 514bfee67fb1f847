r"""Digits with 3 of 10 clients scaling their updates by 100; coordinate median.

Command::

  python scripts/train.py --config=configs/digits_attack.py
  # the same attack against the plain mean (collapses):
  python scripts/train.py --config=configs/digits_attack.py \
      --config.aggregator.name=mean --workdir=runs/digits_attack_mean
  # Gaussian noise of std 10 instead of scaling:
  python scripts/train.py --config=configs/digits_attack.py \
      --config.attack.name=gaussian_noise --config.attack.std=10.0

Result (final test accuracy after 60 rounds, measured on a 2-core CPU; each
run takes 10-20 s):

  =================  ==================  ===============================
  aggregator.name    scaling x100        gaussian_noise std 10
  =================  ==================  ===============================
  mean               0.1022 (collapsed)  0.8600 (test loss 164 vs 0.15)
  coordinate_median  0.9600              0.9444
  trimmed_mean       0.9600              0.9444
  krum               0.9267              0.9267
  =================  ==================  ===============================

In the last round Krum flags the 3 Byzantine clients (tpr 1.0) and, keeping
one update, 6 of 7 honest ones too (fpr 0.857).

The MLP under the mean does not collapse to chance with noise of std 10: its
loss explodes (164) but accuracy recovers to 0.86. The noise makes the
first layer a large random feature map, and honest updates, also large
once the logits are, keep fitting the last layer on those features, like a
perceptron. The paper-style CNN does collapse (10 rounds, same attack,
``--config.model.name=romoa_mnist_cnn --config.num_rounds=10``):

  =================  ============================
  aggregator.name    gaussian_noise std 10 (CNN)
  =================  ============================
  mean               0.0978 (test loss 275)
  coordinate_median  0.9444
  =================  ============================
"""

import os

from robustfl_jax.experiments.config import load_config


def _base():
  return load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "digits_fedavg.py"), lock=False)


def get_config():
  config = _base()
  config.attack.name = "scaling"
  config.attack.num_byzantine = 3
  config.attack.byzantine = "first"
  config.attack.factor = 100.0
  config.aggregator.name = "coordinate_median"
  return config
