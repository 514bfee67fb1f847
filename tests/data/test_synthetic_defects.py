"""Synthetic defects: masks match the changed pixels, seeded, all types drawn."""

import numpy as np
import pytest

from robustfl_jax.data import synthetic_defects as sd


def _images(n=12, size=64):
  rng = np.random.default_rng(0)
  return rng.integers(100, 180, (n, size, size, 3)).astype(np.uint8)


def test_masks_are_the_changed_pixels_and_clean_images_untouched():
  images = _images()
  out = sd.add_synthetic_defects(images, seed=3, defect_fraction=0.5)
  assert out.labels.sum() == 6
  for i in range(len(images)):
    diff = np.abs(out.images[i].astype(int) - images[i].astype(int)).max(axis=-1)
    if out.labels[i] == 0:
      assert not out.masks[i].any() and np.array_equal(out.images[i], images[i])
      assert out.defect_types[i] == "good"
    else:
      assert out.masks[i].sum() >= 4
      assert np.all(diff[out.masks[i]] > 8)  # every mask pixel visibly changed
      assert np.all(diff[~out.masks[i]] <= 9)  # outside: at most faint fringes


def test_seeded_and_every_type_can_be_drawn():
  images = _images(30)
  a = sd.add_synthetic_defects(images, seed=1, defect_fraction=1.0)
  b = sd.add_synthetic_defects(images, seed=1, defect_fraction=1.0)
  np.testing.assert_array_equal(a.images, b.images)
  assert set(a.defect_types) == set(sd.DEFECT_TYPES)
  with pytest.raises(ValueError, match="defect_types"):
    sd.add_synthetic_defects(images, defect_types=("dent",))
  with pytest.raises(ValueError, match="square"):
    sd.add_synthetic_defects(images[:, :, :50])
