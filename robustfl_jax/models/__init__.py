"""Flax classifiers: MLP, the Romoa MNIST/CIFAR CNNs and a small ResNet.

:func:`get` builds a registered classifier by name (``model.name`` in
configs); a new model module registers itself with :func:`register`.
"""

from robustfl_jax.models.registry import (MODELS, get, init_params, names,
                                          param_count, register)
from robustfl_jax.models.cnn import RomoaCifarCNN, RomoaMnistCNN
from robustfl_jax.models.efficientnet_lite import EfficientNetLite0
from robustfl_jax.models.gan import ConditionalCritic, ConditionalGenerator
from robustfl_jax.models.mlp import MLP
from robustfl_jax.models.resnet import ResNet
from robustfl_jax.models.wide_resnet import WideResNet, WideResNet50_2
