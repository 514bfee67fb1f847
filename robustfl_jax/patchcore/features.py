"""PatchCore patch features from a pretrained backbone, and anomaly maps.

A patch feature (Roth et al. 2022, Section 3.1) is built from two intermediate
stages of an ImageNet backbone:

1. each stage's map is averaged over a 3x3 neighbourhood (stride 1), which
   widens the receptive field without losing resolution;
2. the coarser map is bilinearly upsampled to the finer grid;
3. each stage's channels are reduced to a common dimension by adaptive average
   pooling (so both stages weigh the same, whatever their widths);
4. the concatenation is reduced to the target dimension the same way.

Optionally (``standardize=True``, not in the paper) each image's gray levels
are first standardised (`standardize_intensity`): electroluminescence images
of the same kind of cell differ in overall brightness with the exposure and
the module's current, which the backbone would otherwise read as content.

Everything is one jitted function of a batch of images; `extract_patch_features`
runs it over a data set batch by batch and shows progress.

References:
  Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def adaptive_avg_pool_matrix(in_dim: int, out_dim: int) -> np.ndarray:
  """f32[in_dim, out_dim] matrix of 1-D adaptive average pooling.

  Output j averages inputs floor(j * in / out) .. ceil((j + 1) * in / out) - 1,
  the windows of PyTorch's `adaptive_avg_pool1d`; it also upsamples when
  out_dim > in_dim (each input repeated).
  """
  if in_dim < 1 or out_dim < 1:
    raise ValueError(f"pooling dimensions must be positive; got {in_dim} -> {out_dim}")
  matrix = np.zeros((in_dim, out_dim), np.float32)
  for j in range(out_dim):
    lo = (j * in_dim) // out_dim
    hi = -((-(j + 1) * in_dim) // out_dim)
    matrix[lo:hi, j] = 1.0 / (hi - lo)
  return matrix


def local_average(feature_map: jax.Array, size: int = 3) -> jax.Array:
  """Mean over each `size` x `size` neighbourhood of an NHWC map (stride 1).

  Borders average only the neighbours that exist (no zero padding pulls them down).
  """
  window = (1, size, size, 1)
  pad = ((0, 0), (size // 2, (size - 1) // 2), (size // 2, (size - 1) // 2), (0, 0))
  total = jax.lax.reduce_window(feature_map, 0.0, jax.lax.add, window, (1, 1, 1, 1), pad)
  ones = jnp.ones((1,) + feature_map.shape[1:3] + (1,), feature_map.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, (1, 1, 1, 1), pad)
  return total / count


INTENSITY_MEAN = 128.0
INTENSITY_STD = 50.0


def standardize_intensity(images: jax.Array, mean: float = INTENSITY_MEAN,
                          std: float = INTENSITY_STD) -> jax.Array:
  """Per image, shifts and scales the pixel values to a fixed mean and spread.

  Each image of f32[B, H, W, C] in [0, 255] is mapped affinely so that its
  pixels (all channels together) have mean `mean` and standard deviation
  `std`, then clipped to [0, 255] (the defaults, mid-gray and a spread of
  the order of natural images', were not tuned). A constant image becomes
  `mean` everywhere. Not part of PatchCore (Roth et al. 2022); on ELPV it removes
  the cell-to-cell brightness differences of EL imaging (see the ablation in
  docs/results/patchcore.md).

  Returns:
    f32[B, H, W, C].
  """
  images = jnp.asarray(images, jnp.float32)
  center = jnp.mean(images, axis=(1, 2, 3), keepdims=True)
  spread = jnp.std(images, axis=(1, 2, 3), keepdims=True)
  scaled = (images - center) * jnp.where(spread > 0, std / jnp.where(spread > 0, spread, 1.0), 0.0)
  return jnp.clip(scaled + mean, 0.0, 255.0)


def combine_feature_maps(feature_maps: Sequence[jax.Array], embed_dim: int,
                         target_dim: int, neighbourhood: int = 3) -> jax.Array:
  """Builds patch features [B, h, w, target_dim] from NHWC stage maps.

  Args:
    feature_maps: NHWC maps, finest first (the first one sets the grid h x w).
    embed_dim: common dimension each stage is pooled to.
    target_dim: final dimension.
    neighbourhood: local averaging window (3 in the paper; 1 disables it).
  """
  grid = feature_maps[0].shape[1:3]
  pooled = []
  for fmap in feature_maps:
    fmap = local_average(fmap.astype(jnp.float32), neighbourhood)
    if fmap.shape[1:3] != grid:
      fmap = jax.image.resize(fmap, fmap.shape[:1] + grid + fmap.shape[3:], method="bilinear")
    pooled.append(fmap @ adaptive_avg_pool_matrix(fmap.shape[-1], embed_dim))
  stacked = jnp.concatenate(pooled, axis=-1)
  return stacked @ adaptive_avg_pool_matrix(stacked.shape[-1], target_dim)


EFFICIENTNET_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BACKBONES = EFFICIENTNET_BACKBONES + ("wide_resnet50_2",)


def make_patch_feature_fn(backbone: str = "efficientnet_lite0",
                          layers: Sequence[str] | None = None,
                          embed_dim: int = 256, target_dim: int = 256,
                          variables: Any = None,
                          neighbourhood: int = 3,
                          standardize: bool = False) -> tuple[Callable, Any, int]:
  """A jitted `fn(variables, images) -> f32[B, h, w, target_dim]` for a backbone.

  Args:
    backbone: "efficientnet_lite0", "efficientnet_lite1" or "efficientnet_lite2"
      (ImageNet weights from their pip packages) or "wide_resnet50_2"
      (weights from a torchvision file: pass `variables`).
    layers: stage names; defaults: ("stage3", "stage5") for EfficientNet-Lite
      (strides 8 and 16), ("layer2", "layer3") for WideResNet-50-2.
    embed_dim, target_dim: see `combine_feature_maps`.
    variables: backbone variables; loaded from the pip package for EfficientNet.
    neighbourhood: local averaging window p (3 in the paper; 1 disables it).
    standardize: apply `standardize_intensity` to each image first (not in
      the paper).

  Returns:
    (fn, variables, stride): `images` are f32/uint8[B, H, W, 3] in [0, 255];
    `stride` is the patch grid's stride in pixels.
  """
  if backbone in EFFICIENTNET_BACKBONES:
    from robustfl_jax.models import efficientnet_lite as net
    variant = backbone.removeprefix("efficientnet_")
    layers = tuple(layers or ("stage3", "stage5"))
    model = net.EfficientNetLite0(variant=variant)
    if variables is None:
      variables = net.load_pretrained_variables(variant=variant)
    normalize = net.normalize_images
    strides = net.STAGE_STRIDES
  elif backbone == "wide_resnet50_2":
    from robustfl_jax.models import wide_resnet as net
    layers = tuple(layers or ("layer2", "layer3"))
    model = net.WideResNet50_2()
    if variables is None:
      raise ValueError("wide_resnet50_2 needs `variables` (see wide_resnet.load_torchvision_weights)")
    normalize = net.normalize_images
    strides = net.STAGE_STRIDES
  else:
    raise ValueError(f"unknown backbone {backbone!r}; use one of {list(BACKBONES)}")
  if not isinstance(neighbourhood, int) or neighbourhood < 1:
    raise ValueError(f"neighbourhood must be a positive int; got {neighbourhood!r}")
  for layer in layers:
    if layer not in strides:
      raise ValueError(f"unknown layer {layer!r} for {backbone}; choose from {list(strides)}")
  layers = tuple(sorted(layers, key=lambda name: strides[name]))

  @jax.jit
  def fn(variables, images):
    if standardize:
      images = standardize_intensity(images)
    maps = model.apply(variables, normalize(images), features=layers)
    return combine_feature_maps([maps[name] for name in layers], embed_dim, target_dim,
                                neighbourhood)

  return fn, variables, strides[layers[0]]


def extract_patch_features(fn: Callable, variables: Any, images: np.ndarray,
                           batch_size: int = 16, progress: str | None = None) -> np.ndarray:
  """Runs `fn` over `images` in batches; returns host f32[N, h, w, D].

  The last batch is padded to `batch_size` so `fn` compiles once.
  If `progress` is a label, a progress line is written to stderr.
  """
  images = np.asarray(images)
  num = len(images)
  out = []
  start = time.time()
  for lo in range(0, num, batch_size):
    batch = images[lo:lo + batch_size]
    short = batch_size - len(batch)
    if short:
      batch = np.concatenate([batch, np.repeat(batch[-1:], short, axis=0)])
    out.append(np.asarray(fn(variables, jnp.asarray(batch, jnp.float32)))[:batch_size - short])
    if progress:
      done = min(lo + batch_size, num)
      rate = done / max(time.time() - start, 1e-9)
      sys.stderr.write(f"\r{progress}: {done}/{num} images ({rate:.1f} img/s)")
      sys.stderr.flush()
  if progress:
    sys.stderr.write("\n")
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  kernel = np.exp(-0.5 * (x / sigma) ** 2)
  return (kernel / kernel.sum()).astype(np.float32)


def gaussian_blur(maps: jax.Array, sigma: float = 4.0) -> jax.Array:
  """Separable Gaussian blur of f32[B, H, W] with reflected borders (scipy's default)."""
  kernel = jnp.asarray(gaussian_kernel(sigma))
  radius = kernel.shape[0] // 2
  padded = jnp.pad(maps, ((0, 0), (radius, radius), (radius, radius)), mode="symmetric")

  def blur_rows(x):  # along the last axis
    return jax.vmap(jax.vmap(lambda row: jnp.convolve(row, kernel, mode="valid")))(x)

  out = blur_rows(padded)
  return jnp.swapaxes(blur_rows(jnp.swapaxes(out, 1, 2)), 1, 2)


@functools.partial(jax.jit, static_argnames=("image_size", "sigma"))
def anomaly_maps(patch_scores: jax.Array, image_size: tuple[int, int],
                 sigma: float = 4.0) -> jax.Array:
  """Pixel anomaly maps from patch scores: bilinear upsampling, then Gaussian blur.

  Args:
    patch_scores: f32[B, h, w] nearest-neighbour scores on the patch grid.
    image_size: static (H, W) of the output.
    sigma: blur standard deviation in output pixels (4 in the paper).

  Returns:
    f32[B, H, W]; the image score is `patch_scores.max()` per image, not the
    map's maximum (blurring lowers isolated peaks).
  """
  maps = jax.image.resize(patch_scores.astype(jnp.float32),
                          (patch_scores.shape[0],) + tuple(image_size), method="bilinear")
  return gaussian_blur(maps, sigma) if sigma > 0 else maps
