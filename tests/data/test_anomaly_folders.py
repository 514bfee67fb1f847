"""MVTec AD / AutoVI folder loaders on tiny trees the tests write."""

import numpy as np
import pytest
from PIL import Image

from robustfl_jax.data import anomaly_folders


def _png(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def test_mvtec_layout(tmp_path):
  root = tmp_path / "mvtec"
  for i in range(3):
    _png(root / "bottle/train/good" / f"{i:03d}.png", np.full((40, 40, 3), 100 + i, np.uint8))
  _png(root / "bottle/test/good/000.png", np.full((40, 40, 3), 90, np.uint8))
  _png(root / "bottle/test/crack/000.png", np.full((40, 40, 3), 10, np.uint8))
  mask = np.zeros((40, 40), np.uint8)
  mask[10:20, 5:15] = 255
  _png(root / "bottle/ground_truth/crack/000_mask.png", mask)
  data = anomaly_folders.load_anomaly_folder(str(root), "bottle", image_size=20)
  assert data.train_images.shape == (3, 20, 20, 3)
  assert data.test_labels.tolist() == [1, 0]  # sorted defect folders: crack, good
  assert data.test_categories.tolist() == ["crack", "good"]
  assert data.test_masks.shape == (2, 20, 20)
  assert data.test_masks[0, 5:10, 3:7].all() and data.test_masks[0].sum() == 25
  assert not data.test_masks[1].any()


def test_autovi_per_image_mask_folders_and_non_square_gray(tmp_path):
  root = tmp_path / "autovi"
  for i in range(2):
    _png(root / "engine_wiring/train/good" / f"{i:04d}.png", np.full((30, 40), 120, np.uint8))
  _png(root / "engine_wiring/test/missing/0000.png", np.full((30, 40), 30, np.uint8))
  m1 = np.zeros((30, 40), np.uint8)
  m1[0:6, 0:8] = 255
  m2 = np.zeros((30, 40), np.uint8)
  m2[20:30, 30:40] = 255
  _png(root / "engine_wiring/ground_truth/missing/0000/0.png", m1)
  _png(root / "engine_wiring/ground_truth/missing/0000/1.png", m2)
  data = anomaly_folders.load_anomaly_folder(str(root), "engine_wiring", image_size=20,
                                             layout="autovi")
  assert data.train_images.shape == (2, 20, 20, 3)  # non-square gray -> square RGB
  mask = data.test_masks[0]
  assert mask[0, 0] and mask[19, 19] and not mask[10, 10]  # union of both region files


def test_missing_dataset_says_what_to_download(tmp_path):
  with pytest.raises(FileNotFoundError, match="Download MVTec AD.*--config.data.dir"):
    anomaly_folders.load_anomaly_folder(str(tmp_path), "bottle")
  with pytest.raises(FileNotFoundError, match="AutoVI"):
    anomaly_folders.load_anomaly_folder(str(tmp_path), "engine_wiring", layout="autovi")
