"""ELPV: electroluminescence images of solar cells (embedded, from a pip package).

The `elpv-dataset` package ships 2,624 real 300 x 300 grayscale EL images of
mono- and polycrystalline cells cropped from production-line modules, each
annotated with a defect probability in {0, 1/3, 2/3, 1} (1,508 functional
cells). For anomaly detection the training set is functional cells only; the
test set is held-out functional cells against defective ones.

References:
  Buerhop-Lutz et al., "A Benchmark for Visual Identification of Defective
  Solar Cells in Electroluminescence Imagery", EU PVSEC 2018; Deitsch et al.,
  "Automatic classification of defective photovoltaic module cells in
  electroluminescence images", Solar Energy 2019.
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import numpy as np

from robustfl_jax.data.anomaly_folders import AnomalyData

CELL_TYPES = ("mono", "poly")


@functools.lru_cache(maxsize=1)
def _read_all():
  try:
    import elpv_dataset
  except ImportError as err:
    raise ImportError("the ELPV data ship in the pip package 'elpv-dataset': "
                      "pip install elpv-dataset") from err
  folder = os.path.join(os.path.dirname(elpv_dataset.__file__), "data")
  rows = np.genfromtxt(os.path.join(folder, "labels.csv"), dtype=None, encoding="utf-8")
  paths = [os.path.join(folder, str(r[0])) for r in rows]
  probability = np.asarray([float(r[1]) for r in rows], np.float32)
  cell_type = np.asarray([CELL_TYPES.index(str(r[2])) for r in rows], np.int32)
  return paths, probability, cell_type


def elpv_metadata() -> tuple[np.ndarray, np.ndarray]:
  """(defect probability f32[2624], cell type int32[2624] with 0 mono, 1 poly)."""
  _, probability, cell_type = _read_all()
  return probability.copy(), cell_type.copy()


def _load(paths, image_size):
  from PIL import Image
  out = np.empty((len(paths), image_size, image_size, 3), np.uint8)
  for i, path in enumerate(paths):
    with Image.open(path) as image:
      image = image.convert("L")
      if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.BILINEAR)
      out[i] = np.asarray(image)[..., None]
  return out


def split_indices(num_test_good: int = 300, max_train: Optional[int] = None,
                  max_test_defective: Optional[int] = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Indices into the 2,624 cells of `load_elpv`'s split (see there for the arguments).

  Returns:
    `(train, test_good, test_defective)`, sorted int arrays.

  Raises:
    ValueError: the requested sizes do not fit the 1,508 functional cells.
  """
  _, probability, cell_type = _read_all()
  rng = np.random.default_rng(seed)
  good = np.flatnonzero(probability == 0)
  if not 0 < num_test_good < len(good):
    raise ValueError(f"num_test_good must be in (0, {len(good)}); got {num_test_good}")

  def stratified(indices, strata, count):
    # Keep each stratum's share (largest remainders), seeded.
    order = rng.permutation(indices)
    keys = np.unique(strata[order])
    shares = np.array([np.mean(strata[order] == k) for k in keys]) * count
    take = np.floor(shares).astype(int)
    take[np.argsort(shares - take)[::-1][:count - take.sum()]] += 1
    return np.sort(np.concatenate([order[strata[order] == k][:t] for k, t in zip(keys, take)]))

  test_good = stratified(good, cell_type, num_test_good)
  train = np.setdiff1d(good, test_good)
  if max_train is not None and max_train < len(train):
    train = stratified(train, cell_type, max_train)
  defective = np.flatnonzero(probability > 0)
  if max_test_defective is not None and max_test_defective < len(defective):
    defective = stratified(defective, np.round(probability * 3).astype(int), max_test_defective)
  return train, test_good, defective


def load_elpv(image_size: int = 224, num_test_good: int = 300,
              max_train: Optional[int] = None, max_test_defective: Optional[int] = None,
              seed: int = 0) -> AnomalyData:
  """ELPV split for anomaly detection.

  Args:
    image_size: side of the returned square images (300 = original).
    num_test_good: functional cells held out for the test set (seeded choice,
      stratified by cell type); the remaining functional cells train.
    max_train: cap on training images (seeded subsample, keeps the type mix).
    max_test_defective: cap on defective test images (seeded, stratified by
      probability); None keeps all 1,116.
    seed: split seed.

  Returns:
    `AnomalyData` with uint8 RGB images (gray replicated), `train_groups` the
    cell type, `test_labels` = probability > 0, `test_severity` the
    probability, `test_categories` "functional", "p=1/3", "p=2/3" or "p=1",
    and no masks (ELPV has none; see `synthetic_defects` for pixel metrics).

  Raises:
    ValueError: the requested sizes do not fit the 1,508 functional cells.
  """
  paths, probability, cell_type = _read_all()
  train, test_good, defective = split_indices(num_test_good, max_train, max_test_defective, seed)
  test = np.concatenate([test_good, defective])
  names = {0: "functional", 1: "p=1/3", 2: "p=2/3", 3: "p=1"}
  return AnomalyData(
    train_images=_load([paths[i] for i in train], image_size),
    train_groups=cell_type[train],
    test_images=_load([paths[i] for i in test], image_size),
    test_labels=(probability[test] > 0).astype(np.int32),
    test_severity=probability[test],
    test_categories=np.asarray([names[int(round(p * 3))] for p in probability[test]]),
    test_masks=None, name="elpv")


def partition_by_cell_type(cell_type: np.ndarray, num_clients: int,
                           seed: int = 0) -> list[np.ndarray]:
  """Natural non-IID split: each client holds cells of a single type.

  Clients are given to the two types in proportion to their counts (at least
  one each when num_clients >= 2); each type's cells are then split evenly
  among its clients.

  Returns:
    `num_clients` disjoint sorted index arrays covering all cells.
  """
  cell_type = np.asarray(cell_type)
  if num_clients < 1 or num_clients > len(cell_type):
    raise ValueError(f"num_clients must be in [1, {len(cell_type)}]; got {num_clients}")
  rng = np.random.default_rng(seed)
  types = np.unique(cell_type)
  if num_clients < len(types):
    return [np.arange(len(cell_type))]
  counts = np.array([np.sum(cell_type == t) for t in types])
  clients_per_type = np.maximum(1, np.floor(counts / counts.sum() * num_clients).astype(int))
  while clients_per_type.sum() < num_clients:
    clients_per_type[np.argmax(counts / clients_per_type)] += 1
  while clients_per_type.sum() > num_clients:
    clients_per_type[np.argmax(clients_per_type)] -= 1
  parts = []
  for t, k in zip(types, clients_per_type):
    members = rng.permutation(np.flatnonzero(cell_type == t))
    parts.extend(np.sort(p) for p in np.array_split(members, k))
  return parts


def load_defect_pool(image_size: int = 224, num_images: Optional[int] = 100,
                     num_test_good: int = 300,
                     max_train: Optional[int] = None, max_test_defective: Optional[int] = None,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Defective cells that `load_elpv` with the same arguments leaves out of its test set.

  The pool for a bank-poisoning attacker (`robustfl_jax.patchcore.poisoning`):
  real defects, disjoint from every test image, chosen seeded and stratified
  by defect probability.

  Args:
    image_size, num_test_good, max_train, max_test_defective, seed: as for
      `load_elpv` (they fix the test set the pool avoids).
    num_images: cells in the pool, >= 1; None takes every defective cell
      outside the test set.

  Returns:
    `(images uint8[k, s, s, 3], probability f32[k])`, k = min(num_images,
    defective cells outside the test set).

  Raises:
    ValueError: `num_images` < 1, or every defective cell is in the test set
      (lower `max_test_defective`).
  """
  if num_images is not None and num_images < 1:
    raise ValueError(f"num_images must be >= 1 or None (all); got {num_images}")
  paths, probability, _ = _read_all()
  _, _, test_defective = split_indices(num_test_good, max_train, max_test_defective, seed)
  rest = np.setdiff1d(np.flatnonzero(probability > 0), test_defective)
  if len(rest) == 0:
    raise ValueError("no defective cell is left outside the test set: set "
                     "max_test_defective below 1116 to leave a pool for the attacker")
  chosen = np.sort(np.random.default_rng(seed + 1).permutation(rest)[:num_images])
  return _load([paths[i] for i in chosen], image_size), probability[chosen]
