"""Data sets and client partitioning.

Embedded default: scikit-learn's digits (no network). Real loaders read MNIST,
Fashion-MNIST and CIFAR-10 from a user directory; a synthetic Gaussian mixture
serves scale tests.
"""

from robustfl_jax.data._types import ClientData, Dataset
from robustfl_jax.data.anomaly_folders import AnomalyData, load_anomaly_folder
from robustfl_jax.data.cifar10 import load_cifar10
from robustfl_jax.data.digits import load_digits
from robustfl_jax.data.elpv import load_elpv, partition_by_cell_type
from robustfl_jax.data.mnist import load_mnist, read_idx
from robustfl_jax.data.partition import (PARTITIONS, dirichlet, iid, one_label,
                                         partition, shards, to_client_data)
from robustfl_jax.data.registry import DATA_SETS, load, names, register
from robustfl_jax.data.synthetic import (gaussian_mixture,
                                         gaussian_mixture_clients)
from robustfl_jax.data.synthetic_defects import SyntheticDefects, add_synthetic_defects
