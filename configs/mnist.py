r"""MNIST (or Fashion-MNIST) with the Romoa MNIST CNN (appendix Fig. 9).

The Romoa baseline: 10 IID clients, cross-entropy, SGD with batch 64 (the
paper's lr 0.001 is raised to 0.01 so that a few rounds suffice), FedAvg.
Needs the four IDX files in ``data.dir``::

  python scripts/train.py --config=configs/mnist.py --config.data.dir=/data/mnist
  # Fashion-MNIST:
  python scripts/train.py --config=configs/mnist.py \
      --config.data.name=fashion_mnist --config.data.dir=/data/fashion
  # Romoa's Table 2 setting (one label per client):
  python scripts/train.py --config=configs/mnist.py --config.data.dir=/data/mnist \
      --config.data.partition=one_label

Result: not measured in this repository (the build machine has no network and
no MNIST files). Without ``data.dir`` the run stops with a message naming the
files to download.
"""

from robustfl_jax.experiments.config import default_config


def get_config():
  config = default_config()
  config.num_rounds = 20
  config.eval_every = 1
  config.checkpoint_every = 2
  config.num_clients = 10
  config.data.name = "mnist"
  config.data.dir = ""
  config.data.partition = "iid"
  config.model.name = "romoa_mnist_cnn"
  config.client.optimizer = "sgd"
  config.client.learning_rate = 0.01
  config.client.local_epochs = 1
  config.client.batch_size = 64
  config.aggregator.name = "mean"
  config.server.learning_rate = 1.0
  return config
