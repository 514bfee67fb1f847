r"""Full-size federated PatchCore on ELPV, for an accelerator.

Command::

  python scripts/patchcore.py --config=configs/patchcore_elpv_full.py

Differences from configs/patchcore_elpv.py: original 300 x 300 resolution
upsampled to 320 (a 40 x 40 patch grid), every functional cell not held out
for training (1,208), 700 of the 1,116 defective cells in the test set (the
rest are the pool of the defect_injection attacker), 512-dim
features, a 1% memory bank (about 19,000 patches) and 10 clients, two of
them malicious.

Headline: no figure recorded in this repository yet; ``--publish``
writes docs/results/patchcore_elpv_full.md and the README figure from the run.
"""

import os

from robustfl_jax.experiments.config import load_config


def _base():
  return load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "patchcore_elpv.py"), lock=False)


def get_config():
  config = _base()
  config.unlock()
  config.data.image_size = 320
  config.data.max_train = 0
  config.data.max_test_defective = 700  # the other 416 are defect_injection's pool
  config.backbone.embed_dim = 512
  config.backbone.target_dim = 512
  config.backbone.batch_size = 32
  config.federated.num_clients = 10
  config.federated.byzantine_clients = (0, 5)
  config.federated.num_byzantine = 2
  config.federated.local_bank_size = 4000
  config.federated.global_bank_size = 19000
  config.synthetic.num_images = 300
  config.lock()
  return config
