"""ELPV from its pip package: split properties and the cell-type partition."""

import numpy as np
import pytest

pytest.importorskip("elpv_dataset")

from robustfl_jax.data import elpv  # noqa: E402


def test_metadata_counts():
  probability, cell_type = elpv.elpv_metadata()
  assert probability.shape == (2624,) and cell_type.shape == (2624,)
  assert set(np.round(probability * 3).astype(int).tolist()) == {0, 1, 2, 3}
  assert np.sum(probability == 0) == 1508 and np.sum(probability > 0) == 1116
  assert set(cell_type.tolist()) == {0, 1}


def test_split_is_disjoint_seeded_and_labelled():
  a = elpv.load_elpv(image_size=32, num_test_good=20, max_train=30, max_test_defective=24, seed=1)
  b = elpv.load_elpv(image_size=32, num_test_good=20, max_train=30, max_test_defective=24, seed=1)
  assert a.train_images.shape == (30, 32, 32, 3) and a.train_images.dtype == np.uint8
  assert a.test_images.shape == (44, 32, 32, 3)
  np.testing.assert_array_equal(a.test_images, b.test_images)
  assert a.test_labels.sum() == 24 and np.all(a.test_labels == (a.test_severity > 0))
  # Every probability level appears among the defective test cells (stratified).
  assert set(a.test_categories[a.test_labels == 1]) == {"p=1/3", "p=2/3", "p=1"}
  # Gray images replicated to RGB; no training image appears in the test set.
  assert np.all(a.train_images[..., 0] == a.train_images[..., 2])
  train = {im.tobytes() for im in a.train_images}
  assert not train & {im.tobytes() for im in a.test_images}
  assert set(np.unique(a.train_groups)) == {0, 1}
  with pytest.raises(ValueError, match="num_test_good"):
    elpv.load_elpv(image_size=32, num_test_good=1508)


def test_partition_by_cell_type_is_pure_and_covers():
  _, cell_type = elpv.elpv_metadata()
  parts = elpv.partition_by_cell_type(cell_type, 5, seed=0)
  assert len(parts) == 5
  allidx = np.concatenate(parts)
  assert len(allidx) == len(cell_type) and len(np.unique(allidx)) == len(cell_type)
  for p in parts:
    assert len(np.unique(cell_type[p])) == 1  # each client holds one cell type
  assert {int(cell_type[p[0]]) for p in parts} == {0, 1}


def test_defect_pool_is_disjoint_from_the_test_set():
  pytest.importorskip("elpv_dataset")
  data = elpv.load_elpv(image_size=16, num_test_good=10, max_train=10, max_test_defective=20)
  pool, probability = elpv.load_defect_pool(16, 8, num_test_good=10, max_train=10,
                                            max_test_defective=20)
  assert pool.shape == (8, 16, 16, 3) and np.all(probability > 0)
  test = {image.tobytes() for image in data.test_images}
  assert not any(image.tobytes() in test for image in pool)
  with pytest.raises(ValueError, match="max_test_defective"):
    elpv.load_defect_pool(16, 8, num_test_good=10, max_train=10, max_test_defective=None)
  with pytest.raises(ValueError, match="num_images"):
    elpv.load_defect_pool(16, 0)
  # None: every defective cell outside the test set (1,116 defective, 1,000 tested).
  everything, _ = elpv.load_defect_pool(8, None, num_test_good=10, max_train=10,
                                        max_test_defective=1000)
  assert len(everything) == 116
