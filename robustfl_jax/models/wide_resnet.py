"""WideResNet-50-2 in flax, loading torchvision state-dict files without PyTorch.

PatchCore's reference backbone. Torchvision's `wide_resnet50_2` is a ResNet-50
(bottleneck blocks 3-4-6-3, stride on the 3x3 convolution, "v1.5") whose
bottleneck width is doubled: 128-256-512-1024 inner channels, 256-512-1024-2048
outputs. BatchNorm runs in inference mode (running statistics, eps 1e-5);
inputs use the ImageNet mean/std normalisation. No weights ship with the
library: users bring torchvision's file (`wide_resnet50_2-*.pth`, zip format)
and `load_torchvision_weights` reads it through the restricted unpickler.

References:
  Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016; He et al.,
  "Deep Residual Learning for Image Recognition", CVPR 2016.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

STAGE_STRIDES = {"stem": 4, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
BN_EPSILON = 1e-5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: jax.Array) -> jax.Array:
  """[0, 255] RGB pixels -> torchvision's ImageNet normalisation."""
  images = jnp.asarray(images, jnp.float32) / 255.0
  return (images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


class Bottleneck(nn.Module):
  width: int
  out_channels: int
  stride: int
  downsample: bool

  @nn.compact
  def __call__(self, x):
    norm = functools.partial(nn.BatchNorm, use_running_average=True, epsilon=BN_EPSILON)
    y = nn.Conv(self.width, (1, 1), use_bias=False, name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = nn.Conv(self.width, (3, 3), strides=self.stride, padding=((1, 1), (1, 1)),
                use_bias=False, name="conv2")(y)
    y = nn.relu(norm(name="bn2")(y))
    y = nn.Conv(self.out_channels, (1, 1), use_bias=False, name="conv3")(y)
    y = norm(name="bn3")(y)
    if self.downsample:
      x = nn.Conv(self.out_channels, (1, 1), strides=self.stride, use_bias=False,
                  name="downsample_0")(x)
      x = norm(name="downsample_1")(x)
    return nn.relu(y + x)


class WideResNet(nn.Module):
  """Bottleneck ResNet in torchvision's layout (inference mode).

  Attributes:
    blocks: blocks per stage (3, 4, 6, 3 for the 50-layer nets).
    base_width: stem channels and first stage's `planes` (64).
    width_factor: bottleneck width multiplier (2 for wide_resnet50_2).
    num_classes: classifier outputs.

  Call with `features=None` for logits, or a tuple of `STAGE_STRIDES` names for a
  dict of NHWC maps (the network stops after the last one requested).
  """

  blocks: Sequence[int] = (3, 4, 6, 3)
  base_width: int = 64
  width_factor: int = 2
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, features: Sequence[str] | None = None):
    wanted = None if features is None else tuple(features)
    if wanted is not None:
      unknown = [f for f in wanted if f not in STAGE_STRIDES]
      if unknown:
        raise ValueError(f"unknown stage names {unknown}; choose from {list(STAGE_STRIDES)}")
    order = list(STAGE_STRIDES)
    last = None if wanted is None else max(order.index(f) for f in wanted)
    outputs = {}

    def done(name, value):
      if wanted is not None and name in wanted:
        outputs[name] = value
      return last is not None and order.index(name) >= last

    x = nn.Conv(self.base_width, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                name="conv1")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    if done("stem", x):
      return outputs
    in_channels = self.base_width
    for stage, num_blocks in enumerate(self.blocks):
      planes = self.base_width * 2 ** stage
      for b in range(num_blocks):
        stride = 2 if (stage > 0 and b == 0) else 1
        out_channels = planes * 4
        x = Bottleneck(planes * self.width_factor, out_channels, stride,
                       downsample=(b == 0 and (stride != 1 or in_channels != out_channels)),
                       name=f"layer{stage + 1}_{b}")(x)
        in_channels = out_channels
      if done(f"layer{stage + 1}", x):
        return outputs
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="fc")(x)


def WideResNet50_2(num_classes: int = 1000) -> WideResNet:  # pylint: disable=invalid-name
  """Torchvision's wide_resnet50_2 architecture."""
  return WideResNet((3, 4, 6, 3), 64, 2, num_classes)


def _flax_to_torch_names(variables) -> dict[tuple[str, ...], tuple[str, str]]:
  """Maps each flax leaf path to (torch name, kind) for the layout above."""
  out = {}
  flat = jax.tree_util.tree_flatten_with_path(variables)[0]
  for path, _ in flat:
    keys = tuple(p.key for p in path)
    collection, *modules, leaf = keys
    parts = []
    for m in modules:
      if m.startswith("layer") and "_" in m:  # layer2_0 -> layer2.0
        stage, block = m.split("_")
        parts += [stage, block]
      elif m.startswith("downsample_"):
        parts += ["downsample", m.split("_")[1]]
      else:
        parts.append(m)
    prefix = ".".join(parts)
    torch_leaf = {("params", "kernel"): "weight", ("params", "scale"): "weight",
                  ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
                  ("batch_stats", "var"): "running_var"}[(collection, leaf)]
    kind = "dense" if modules[-1] == "fc" and leaf == "kernel" else (
      "conv" if leaf == "kernel" else "vector")
    out[keys] = (f"{prefix}.{torch_leaf}", kind)
  return out


def _abstract_variables(model: WideResNet):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))


def torchvision_shapes(model: WideResNet | None = None) -> dict[str, tuple[int, ...]]:
  """Expected torchvision state-dict names and shapes for `model` (num_batches_tracked aside)."""
  model = model or WideResNet50_2()
  abstract = _abstract_variables(model)
  leaves = {tuple(p.key for p in path): leaf.shape
            for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  out = {}
  for keys, (name, kind) in _flax_to_torch_names(abstract).items():
    shape = leaves[keys]
    if kind == "conv":
      shape = (shape[3], shape[2], shape[0], shape[1])
    elif kind == "dense":
      shape = (shape[1], shape[0])
    out[name] = tuple(shape)
  return out


def convert_torchvision_state_dict(state_dict: Mapping[str, np.ndarray],
                                   model: WideResNet | None = None) -> dict[str, Any]:
  """Torchvision ResNet/WideResNet state dict -> flax variables for `model`.

  Raises:
    ValueError: a tensor is missing or has the wrong shape (e.g. a plain
      resnet50 file given for the wide model).
  """
  model = model or WideResNet50_2()
  abstract = _abstract_variables(model)
  names = _flax_to_torch_names(abstract)
  leaves = {tuple(p.key for p in path): leaf.shape
            for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  variables: dict[str, Any] = {}
  for keys, (name, kind) in names.items():
    if name not in state_dict:
      raise ValueError(f"torchvision weights lack '{name}'")
    value = np.asarray(state_dict[name], np.float32)
    if kind == "conv":
      value = np.transpose(value, (2, 3, 1, 0))
    elif kind == "dense":
      value = value.T
    if value.shape != leaves[keys]:
      raise ValueError(f"'{name}' has shape {np.shape(state_dict[name])}, but this architecture "
                       f"needs {leaves[keys]} (converted); is this the right model's file?")
    tree = variables
    for k in keys[:-1]:
      tree = tree.setdefault(k, {})
    tree[keys[-1]] = jnp.asarray(value)
  return variables


def load_torchvision_weights(path: str, model: WideResNet | None = None) -> dict[str, Any]:
  """Reads a torchvision `.pth` (zip or legacy) without PyTorch and converts it.

  Args:
    path: e.g. the `wide_resnet50_2-95faca4d.pth` a user downloaded from
      torchvision's model zoo.
    model: architecture; defaults to `WideResNet50_2()`.
  """
  if not path:
    raise ValueError("the WideResNet backbone needs a torchvision weights file: download "
                     "wide_resnet50_2-95faca4d.pth from the torchvision model zoo and pass "
                     "--config.backbone.weights=<path>")
  from robustfl_jax.models import torch_weights
  return convert_torchvision_state_dict(torch_weights.load_state_dict(path), model)
