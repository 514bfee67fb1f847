r"""CIFAR-10 with the Romoa CIFAR CNN (appendix Fig. 10, 6,088,650 parameters).

10 IID clients, SGD with batch 64, FedAvg. Needs the python batches
(``cifar-10-batches-py``) in ``data.dir``::

  python scripts/train.py --config=configs/cifar10.py \
      --config.data.dir=/data/cifar-10-batches-py
  # the small GroupNorm ResNet instead:
  python scripts/train.py --config=configs/cifar10.py \
      --config.data.dir=/data/cifar-10-batches-py --config.model.name=resnet20

Result: not measured in this repository (the build machine has no network and
no CIFAR-10 files; a GPU is advised). Without ``data.dir`` the run stops with a
message naming the files to download.
"""

from robustfl_jax.experiments.config import default_config


def get_config():
  config = default_config()
  config.num_rounds = 50
  config.eval_every = 1
  config.checkpoint_every = 5
  config.num_clients = 10
  config.data.name = "cifar10"
  config.data.dir = ""
  config.data.partition = "iid"
  config.model.name = "romoa_cifar_cnn"
  config.client.optimizer = "sgd"
  config.client.learning_rate = 0.01
  config.client.local_epochs = 1
  config.client.batch_size = 64
  config.aggregator.name = "mean"
  config.server.learning_rate = 1.0
  return config
