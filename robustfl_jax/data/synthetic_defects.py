"""Synthetic defects with pixel masks, drawn on real defect-free images.

ELPV has image-level labels only; to measure pixel AUROC and AUPRO we draw
defects whose extent we know on held-out functional cells:

* "crack": a dark, jagged, possibly branching line (EL cracks block current
  and show dark, often with a darker region on one side);
* "scratch": a thin straight or gently curved bright or dark line;
* "spot": dark filled ellipses (inactive or shunted areas, contamination).

The mask is exactly the set of pixels whose value changed by more than a
small tolerance, so a perfect detector can reach pixel AUROC 1.
Everything is seeded and host-side (NumPy + Pillow).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

DEFECT_TYPES = ("crack", "scratch", "spot")


class SyntheticDefects(NamedTuple):
  """Images with drawn defects.

  Attributes:
    images: uint8[N, H, W, 3].
    masks: bool[N, H, W] (all False for images left clean).
    labels: int32[N], 1 where a defect was drawn.
    defect_types: str[N] ("good" for clean images).
  """

  images: np.ndarray
  masks: np.ndarray
  labels: np.ndarray
  defect_types: np.ndarray


def _polyline(rng, size, num_points, step, jitter):
  start = rng.uniform(0.15, 0.85, 2) * size
  angle = rng.uniform(0, 2 * np.pi)
  points = [start]
  for _ in range(num_points - 1):
    angle += rng.normal(0, jitter)
    points.append(points[-1] + step * np.array([np.cos(angle), np.sin(angle)]))
  return [tuple(p) for p in np.clip(points, 0, size - 1)]


def _draw(defect: str, rng: np.random.Generator, size: int):
  """(shape mask as float in [0, 1], target intensity) for one defect."""
  from PIL import Image, ImageDraw
  canvas = Image.new("L", (size, size), 0)
  draw = ImageDraw.Draw(canvas)
  scale = size / 224.0
  if defect == "crack":
    length = int(rng.integers(6, 12))
    line = _polyline(rng, size, length, step=8 * scale, jitter=0.5)
    draw.line(line, fill=255, width=max(1, int(round(2 * scale))))
    if rng.random() < 0.6:  # a branch from a random vertex
      origin = np.array(line[int(rng.integers(1, len(line)))])
      angle = rng.uniform(0, 2 * np.pi)
      branch = [tuple(origin)]
      for _ in range(int(rng.integers(3, 6))):
        angle += rng.normal(0, 0.5)
        branch.append(tuple(np.clip(np.array(branch[-1]) + 7 * scale * np.array(
          [np.cos(angle), np.sin(angle)]), 0, size - 1)))
      draw.line(branch, fill=255, width=max(1, int(round(2 * scale))))
    value = float(rng.uniform(0, 40))
  elif defect == "scratch":
    line = _polyline(rng, size, 3, step=rng.uniform(25, 45) * scale, jitter=0.15)
    draw.line(line, fill=255, width=max(1, int(round(1.5 * scale))))
    value = float(rng.choice([rng.uniform(0, 30), rng.uniform(225, 255)]))
  elif defect == "spot":
    for _ in range(int(rng.integers(1, 4))):
      center = rng.uniform(0.15, 0.85, 2) * size
      radii = rng.uniform(3, 10, 2) * scale
      draw.ellipse([tuple(center - radii), tuple(center + radii)], fill=255)
    value = float(rng.uniform(0, 50))
  else:
    raise ValueError(f"unknown defect type {defect!r}; choose from {DEFECT_TYPES}")
  return np.asarray(canvas, np.float32) / 255.0, value


def add_synthetic_defects(images: np.ndarray, seed: int = 0, defect_fraction: float = 0.5,
                          defect_types: tuple[str, ...] = DEFECT_TYPES,
                          tolerance: int = 8) -> SyntheticDefects:
  """Draws one random defect on a seeded fraction of `images`.

  Args:
    images: uint8[N, H, W, 3] (or [N, H, W]) defect-free images, H == W.
    seed: controls which images get defects, the types, shapes and intensities.
    defect_fraction: share of images that get a defect (the rest stay clean
      and serve as normal test images), in [0, 1].
    defect_types: subset of `DEFECT_TYPES`, chosen uniformly.
    tolerance: a pixel is in the mask when its gray value changed by more
      than this (so anti-aliased fringes that are barely visible are not).

  Returns:
    `SyntheticDefects` with uint8 RGB images.
  """
  images = np.asarray(images)
  if images.ndim == 3:
    images = np.repeat(images[..., None], 3, axis=-1)
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(f"expected square images [N, H, H, 3]; got {images.shape}")
  if not 0.0 <= defect_fraction <= 1.0:
    raise ValueError(f"defect_fraction must be in [0, 1]; got {defect_fraction}")
  unknown = set(defect_types) - set(DEFECT_TYPES)
  if unknown or not defect_types:
    raise ValueError(f"defect_types must be a non-empty subset of {DEFECT_TYPES}; got {defect_types}")
  rng = np.random.default_rng(seed)
  num, size = images.shape[0], images.shape[1]
  with_defect = np.zeros(num, bool)
  with_defect[rng.permutation(num)[:int(round(defect_fraction * num))]] = True
  out = images.copy()
  masks = np.zeros((num, size, size), bool)
  kinds = np.full(num, "good", dtype=object)
  for i in np.flatnonzero(with_defect):
    kind = str(rng.choice(defect_types))
    for _ in range(20):  # redraw until the defect is visible on this image
      shape, value = _draw(kind, rng, size)
      original = images[i].astype(np.float32)
      new = original * (1.0 - shape[..., None]) + value * shape[..., None]
      mask = np.abs(new - original).max(axis=-1) > tolerance
      if mask.sum() >= 4:
        break
    out[i] = np.clip(np.round(new), 0, 255).astype(np.uint8)
    masks[i] = mask
    kinds[i] = kind
  return SyntheticDefects(out, masks, with_defect.astype(np.int32), kinds.astype(str))
