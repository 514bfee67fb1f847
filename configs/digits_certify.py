r"""Randomized smoothing on digits: Gaussian-noise federated training + CERTIFY.

The federation of ``digits_adversarial.py`` (10 IID clients, 2 sign-flipping
Byzantine clients, trimmed mean) with every client training on
``x + N(0, sigma^2 I)`` (Cohen et al. 2019), once per sigma in
``certify.sigmas``; then CERTIFY (n0 = 100, n = 100,000, alpha = 0.001) on
``certify.num_points`` evenly spaced test points (0 = all 450) and certified
accuracy at L2 radii 0 to 2.

Command::

  python scripts/certify.py --config=configs/digits_certify.py
  # fewer points / samples for a quick look:
  python scripts/certify.py --config=configs/digits_certify.py \
      --config.certify.num_points=50 --config.certify.n=10000

Writes ``runs/digits_certify/{certify.json, certify.md, certify.png}`` and one
training work directory per sigma (``sigma_0.25/`` ...; rerunning loads the
trained models from their checkpoints instead of training again).

Headline (all 450 test points; 217 s wall on the 2-core CPU, shared, load
average 3.5): with sigma =
0.25, certified accuracy 0.907 at radius 0 and 0.558 at radius 0.5.
``--publish`` writes the full table (sigma 0.25, 0.5, 1.0; radii 0 to 2) to
``docs/results/digits_certify.md``.
"""

import os

import ml_collections

from robustfl_jax.experiments.config import load_config


def _base():
  return load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "digits_adversarial.py"), lock=False)


def get_config():
  config = _base()
  config.client.adversarial_training.method = "gaussian"
  config.client.adversarial_training.sigma = 0.25  # replaced per sigma below
  config.eval.attack_epsilon = None
  config.certify = ml_collections.ConfigDict()
  config.certify.sigmas = (0.25, 0.5, 1.0)
  config.certify.n0 = 100
  config.certify.n = 100_000
  config.certify.alpha = 0.001
  config.certify.batch_size = 2000
  # Evenly spaced test points; 0 certifies all 450.
  config.certify.num_points = 0
  config.certify.radii = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
  return config
