"""The pruned greedy coreset: same selection as the dense loop, and the fallback."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax.patchcore import coreset

N = 4096            # at least coreset._PRUNED_MIN_POINTS, so "auto" prunes
K = 2 * coreset._CHUNK_STEPS + 100   # three chunks: "auto" can switch twice


def _clustered(n=N, d=32, clusters=20, seed=0):
  rng = np.random.default_rng(seed)
  centres = 4.0 * rng.normal(size=(clusters, d))
  return rng.normal(size=(n, d)) + centres[rng.integers(0, clusters, n)]


def _select(features, method, projection_dim=16):
  idx, pruned_chunks = coreset._greedy_coreset(jax.random.key(1), jnp.asarray(features), K,
                                               projection_dim, 10, method)
  return np.asarray(idx), int(pruned_chunks)


@pytest.mark.parametrize("projection_dim", [16, None])
def test_pruned_and_auto_select_exactly_the_dense_indices_in_float64(projection_dim):
  # float64 removes the rounding near-ties of float32, so any difference would
  # be a pruning bound that skipped a leaf it should have updated.
  with jax.enable_x64(True):
    feats = _clustered()
    dense, _ = _select(feats, "dense", projection_dim)
    pruned, _ = _select(feats, "pruned", projection_dim)
    auto, pruned_chunks = _select(feats, "auto", projection_dim)
  assert len(set(dense.tolist())) == K
  np.testing.assert_array_equal(pruned, dense)
  np.testing.assert_array_equal(auto, dense)
  # Auto starts dense; on clustered features it switches to pruning after the
  # first chunk (so the switch in both directions is covered by the equality).
  assert pruned_chunks == 2


def test_auto_stays_dense_on_features_without_clusters():
  with jax.enable_x64(True):
    feats = np.random.default_rng(2).normal(size=(N, 32))
    dense, _ = _select(feats, "dense")
    auto, pruned_chunks = _select(feats, "auto")
  assert pruned_chunks == 0, "unstructured features: the bounds rule out too few leaves"
  np.testing.assert_array_equal(auto, dense)


def test_float32_pruned_matches_dense_up_to_near_ties():
  feats = _clustered().astype(np.float32)
  dense, _ = _select(feats, "dense")
  pruned, _ = _select(feats, "pruned")
  assert len(set(pruned.tolist())) == K
  # Rounding may swap near-tied picks; the selected sets and radii agree.
  assert len(set(dense.tolist()) & set(pruned.tolist())) >= 0.99 * K
  radius = [float(coreset.coverage_radius(jnp.asarray(feats), jnp.asarray(i)))
            for i in (dense, pruned)]
  assert radius[1] == pytest.approx(radius[0], rel=1e-3)


def test_leaf_layout_places_every_point_once_and_keeps_clusters_apart():
  labels = jnp.asarray(np.random.default_rng(3).integers(0, 7, 1000))
  order = np.asarray(coreset._leaf_layout(labels, 7, 64))
  assert order.shape[1] == 64
  real = order[order >= 0]
  np.testing.assert_array_equal(np.sort(real), np.arange(1000))
  for leaf in order:
    assert len(set(np.asarray(labels)[leaf[leaf >= 0]].tolist())) <= 1


def test_public_function_validates_method_and_auto_is_dense_below_the_threshold():
  feats = _clustered(n=500).astype(np.float32)
  with pytest.raises(ValueError, match="method must be one of"):
    coreset.greedy_coreset(jax.random.key(0), feats, 10, method="fast")
  small = np.asarray(coreset.greedy_coreset(jax.random.key(0), feats, 50, method="auto"))
  dense = np.asarray(coreset.greedy_coreset(jax.random.key(0), feats, 50, method="dense"))
  np.testing.assert_array_equal(small, dense)
