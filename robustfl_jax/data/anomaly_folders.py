"""Visual-inspection anomaly data: the container and MVTec AD / AutoVI folder loaders.

Layouts read (from a user's `config.data.dir`; nothing is downloaded):

MVTec AD (https://www.mvtec.com/company/research/datasets/mvtec-ad)::

  <root>/<category>/train/good/*.png
  <root>/<category>/test/good/*.png
  <root>/<category>/test/<defect>/<name>.png
  <root>/<category>/ground_truth/<defect>/<name>_mask.png

AutoVI (https://autovi.utc.fr, Renault's automotive visual inspection data)::

  <root>/<category>/train/good/*.png
  <root>/<category>/test/<defect>/<name>.png
  <root>/<category>/ground_truth/<defect>/<name>/<k>.png   (one mask per defect region)

AutoVI images are not square (e.g. 1000 x 750) and some categories are
grayscale: images are converted to RGB and resized to `image_size` (square,
as PatchCore's backbones expect); masks get the same resize (nearest).
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class AnomalyData(NamedTuple):
  """An anomaly-detection data set in host memory.

  Attributes:
    train_images: uint8[N, H, W, 3] defect-free training images.
    train_groups: int32[N] a natural grouping for non-IID client splits
      (ELPV: 0 mono-, 1 polycrystalline cell; folders: all 0).
    test_images: uint8[M, H, W, 3].
    test_labels: int32[M], 1 for anomalous images.
    test_severity: f32[M] in [0, 1] (ELPV: the annotated defect probability;
      folders: 1 for defective, 0 for good).
    test_categories: str[M] defect type ("good" for normal images).
    test_masks: bool[M, H, W] pixel ground truth, or None when unavailable.
    name: short name for logs.
  """

  train_images: np.ndarray
  train_groups: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  test_severity: np.ndarray
  test_categories: np.ndarray
  test_masks: Optional[np.ndarray]
  name: str


def _list_images(folder: str) -> list[str]:
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."))


def read_image(path: str, image_size: int) -> np.ndarray:
  """uint8[image_size, image_size, 3] RGB (grayscale replicated), bilinear resize."""
  from PIL import Image
  with Image.open(path) as image:
    image = image.convert("RGB")
    if image.size != (image_size, image_size):
      image = image.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(image, np.uint8)


def read_mask(paths: list[str], image_size: int) -> np.ndarray:
  """bool[image_size, image_size]: union of the mask files (nearest resize)."""
  from PIL import Image
  mask = np.zeros((image_size, image_size), bool)
  for path in paths:
    with Image.open(path) as image:
      image = image.convert("L").resize((image_size, image_size), Image.NEAREST)
      mask |= np.asarray(image) > 0
  return mask


def _missing(root: str, category: str, layout: str, url: str) -> FileNotFoundError:
  return FileNotFoundError(
    f"{layout} category '{category}' not found under '{root}'. Download {layout} from {url}, "
    f"extract it so that '{os.path.join(root, category, 'train', 'good')}' holds the training "
    "images, and pass the folder with --config.data.dir=<root>.")


def _mask_paths(root: str, category: str, defect: str, image_path: str) -> list[str]:
  stem = os.path.splitext(os.path.basename(image_path))[0]
  gt = os.path.join(root, category, "ground_truth", defect)
  candidates = []
  per_image_folder = os.path.join(gt, stem)
  if os.path.isdir(per_image_folder):  # AutoVI: one file per defect region
    candidates = _list_images(per_image_folder)
  for name in (f"{stem}_mask", stem):  # MVTec AD: <stem>_mask.png
    for suffix in IMAGE_SUFFIXES:
      path = os.path.join(gt, name + suffix)
      if os.path.isfile(path):
        candidates.append(path)
  return candidates


def load_anomaly_folder(root: str, category: str, image_size: int = 224,
                        layout: str = "mvtec", max_train: Optional[int] = None,
                        seed: int = 0) -> AnomalyData:
  """Loads one category of an MVTec AD or AutoVI folder tree.

  Args:
    root: folder holding `<category>/train`, `<category>/test`, `<category>/ground_truth`.
    category: e.g. "bottle" (MVTec AD) or "engine_wiring" (AutoVI).
    image_size: side of the square images returned.
    layout: "mvtec" or "autovi" (only changes the error message; both mask
      conventions are recognised either way).
    max_train: keep at most this many training images (seeded subsample).
    seed: subsampling seed.

  Returns:
    `AnomalyData`; defective test images without any mask file get an empty
    mask and are reported in a warning-free way through `test_masks`.

  Raises:
    FileNotFoundError: the data set is missing, with what to download and where.
    ValueError: unknown layout or an empty split.
  """
  urls = {"mvtec": "https://www.mvtec.com/company/research/datasets/mvtec-ad",
          "autovi": "https://autovi.utc.fr (Zenodo record 10459003)"}
  if layout not in urls:
    raise ValueError(f"layout must be 'mvtec' or 'autovi'; got {layout!r}")
  train_dir = os.path.join(root, category, "train", "good")
  test_dir = os.path.join(root, category, "test")
  if not (os.path.isdir(train_dir) and os.path.isdir(test_dir)):
    raise _missing(root, category, {"mvtec": "MVTec AD", "autovi": "AutoVI"}[layout], urls[layout])
  train_paths = _list_images(train_dir)
  if max_train is not None and len(train_paths) > max_train:
    keep = np.sort(np.random.default_rng(seed).choice(len(train_paths), max_train, replace=False))
    train_paths = [train_paths[i] for i in keep]
  if not train_paths:
    raise ValueError(f"no training images in {train_dir}")
  images, labels, categories, masks = [], [], [], []
  for defect in sorted(os.listdir(test_dir)):
    folder = os.path.join(test_dir, defect)
    if not os.path.isdir(folder):
      continue
    for path in _list_images(folder):
      images.append(read_image(path, image_size))
      is_good = defect == "good"
      labels.append(0 if is_good else 1)
      categories.append(defect)
      paths = [] if is_good else _mask_paths(root, category, defect, path)
      masks.append(read_mask(paths, image_size))
  if not images:
    raise ValueError(f"no test images in {test_dir}")
  labels = np.asarray(labels, np.int32)
  return AnomalyData(
    train_images=np.stack([read_image(p, image_size) for p in train_paths]),
    train_groups=np.zeros(len(train_paths), np.int32),
    test_images=np.stack(images), test_labels=labels,
    test_severity=labels.astype(np.float32), test_categories=np.asarray(categories),
    test_masks=np.stack(masks), name=f"{layout}/{category}")
