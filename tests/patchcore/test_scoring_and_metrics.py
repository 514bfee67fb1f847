"""Nearest-neighbour scores, anomaly maps, AUROC and AUPRO."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from robustfl_jax import patchcore


@pytest.mark.parametrize("k,block_size", [(1, 7), (3, 64), (1, 1024)])
def test_nearest_neighbor_scores_match_brute_force(k, block_size):
  rng = np.random.default_rng(0)
  queries = rng.normal(size=(53, 12)).astype(np.float32)
  bank = rng.normal(size=(40, 12)).astype(np.float32)
  got = np.asarray(patchcore.nearest_neighbor_scores(queries, bank, k=k, block_size=block_size))
  full = np.linalg.norm(queries[:, None] - bank[None], axis=-1)
  want = np.sort(full, axis=1)[:, :k].mean(axis=1)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bank_members_score_zero_and_validation():
  rng = np.random.default_rng(1)
  bank = rng.normal(size=(30, 5)).astype(np.float32)
  np.testing.assert_allclose(patchcore.nearest_neighbor_scores(bank, bank), 0.0, atol=2e-3)
  _, idx = patchcore.nearest_neighbors(bank * 100, bank * 100, k=2)
  np.testing.assert_array_equal(idx[:, 0], np.arange(30))
  with pytest.raises(ValueError, match="equal d"):
    patchcore.nearest_neighbor_scores(bank, bank[:, :4])
  with pytest.raises(ValueError, match="k must be"):
    patchcore.nearest_neighbor_scores(bank, bank, k=31)


def test_reweighting_keeps_order_of_magnitude_and_is_below_raw_score():
  rng = np.random.default_rng(2)
  bank = rng.normal(size=(50, 6)).astype(np.float32)
  patches = rng.normal(size=(4, 10, 6)).astype(np.float32)
  patches[0, 3] += 20.0  # one far-away patch
  raw = np.asarray(patchcore.nearest_neighbor_scores(patches.reshape(-1, 6), bank)).reshape(4, 10).max(1)
  weighted = np.asarray(patchcore.reweighted_image_scores(patches, bank, num_neighbors=3))
  assert np.all(weighted <= raw + 1e-5) and np.all(weighted >= 0)
  assert np.argmax(weighted) == 0


def test_anomaly_maps_blur_matches_scipy_and_upsamples():
  rng = np.random.default_rng(3)
  scores = rng.random((2, 6, 6)).astype(np.float32)
  maps = np.asarray(patchcore.anomaly_maps(jnp.asarray(scores), (48, 48), sigma=4.0))
  assert maps.shape == (2, 48, 48)
  up = np.asarray(jax.image.resize(scores, (2, 48, 48), "bilinear"))
  want = np.stack([ndimage.gaussian_filter(u, 4.0, mode="reflect", truncate=4.0) for u in up])
  np.testing.assert_allclose(maps, want, rtol=1e-4, atol=1e-5)
  # A constant score map stays constant (no border darkening).
  flat = np.asarray(patchcore.anomaly_maps(jnp.ones((1, 4, 4)), (32, 32)))
  np.testing.assert_allclose(flat, 1.0, rtol=1e-5)


def test_image_auroc_matches_sklearn_with_ties_and_is_rank_invariant():
  rng = np.random.default_rng(4)
  labels = rng.random(200) < 0.3
  scores = np.round(rng.normal(size=200) + labels, 1)  # many ties
  assert patchcore.image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
  assert patchcore.image_auroc(np.exp(scores), labels) == pytest.approx(
    patchcore.image_auroc(scores, labels))
  assert patchcore.image_auroc(labels * 1.0, labels) == 1.0
  with pytest.raises(ValueError, match="both positive and negative"):
    patchcore.image_auroc(scores, np.zeros(200))


def test_pixel_auroc_matches_sklearn():
  rng = np.random.default_rng(5)
  masks = rng.random((3, 10, 10)) < 0.2
  maps = rng.normal(size=(3, 10, 10)) + 2 * masks
  assert patchcore.pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))


def _squares(n=4, size=32):
  masks = np.zeros((n, size, size), bool)
  masks[0, 2:6, 2:6] = True     # small region
  masks[0, 20:30, 5:25] = True  # large region
  masks[1, 10:14, 10:20] = True
  return masks


def test_aupro_perfect_random_and_region_weighting():
  masks = _squares()
  assert patchcore.aupro(masks.astype(float), masks) == pytest.approx(1.0)
  rng = np.random.default_rng(6)
  random_maps = rng.random(masks.shape)
  # Random scores: PRO ~= FPR, so the normalised area up to 0.3 is ~0.15.
  assert patchcore.aupro(random_maps, masks) == pytest.approx(0.15, abs=0.04)
  # Scoring only the large region: PRO is 1/3 (one region of three) at FPR 0,
  # then rises linearly to 1 at FPR 1 (all other pixels tie at 0), so the
  # normalised area up to 0.3 is 1/3 + (2/3) * 0.3 / 2 = 0.4333 -- the large
  # region counts no more than the small ones.
  only_large = np.zeros(masks.shape)
  only_large[0, 20:30, 5:25] = 1.0
  assert patchcore.aupro(only_large, masks) == pytest.approx(1 / 3 + 0.1, abs=1e-6)


def test_aupro_is_global_not_per_image():
  masks = _squares()
  maps = masks.astype(float) + 0.5
  maps[2] += 10.0  # a normal image scored high everywhere must hurt the metric
  assert patchcore.aupro(maps, masks) < 0.5
