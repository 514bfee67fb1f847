"""Greedy k-center coreset: selection properties and coverage."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import patchcore




def _blobs(n=600, d=16, seed=0, return_centers=False):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(6, d)) * 10
  feats = (centers[rng.integers(0, 6, n)] + rng.normal(size=(n, d))).astype(np.float32)
  return (feats, centers) if return_centers else feats


def test_exact_rule_matches_a_brute_force_greedy():
  feats = _blobs(200, 8)
  key = jax.random.key(3)
  idx = np.asarray(patchcore.greedy_coreset(key, feats, 25, projection_dim=None))
  # Re-run the textbook rule from the same first point with full distance matrices.
  full = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
  ref = [idx[0]]
  dist = full[idx[0]].copy()
  for _ in range(24):
    ref.append(int(np.argmax(dist)))
    dist = np.minimum(dist, full[ref[-1]])
  np.testing.assert_array_equal(idx, ref)


@pytest.mark.parametrize("projection_dim", [None, 4, 128])
def test_indices_distinct_in_range_and_cover_all_clusters(projection_dim):
  feats, centers = _blobs(return_centers=True)
  idx = np.asarray(patchcore.greedy_coreset(jax.random.key(0), feats, 12, projection_dim))
  assert idx.shape == (12,) and idx.dtype == np.int32
  assert len(set(idx.tolist())) == 12 and idx.min() >= 0 and idx.max() < len(feats)
  # With 6 well-separated blobs, 12 greedy centres hit every blob: the
  # coverage radius is far below the blob separation.
  separation = min(np.linalg.norm(a - b) for a, b in itertools.combinations(centers, 2))
  radius = float(patchcore.coverage_radius(feats, idx))
  assert radius < 0.3 * separation, (radius, separation)


def test_greedy_covers_better_than_random_and_within_factor_two_of_brute_force():
  feats = _blobs(120, 2, seed=1)
  k = 4
  greedy = float(patchcore.coverage_radius(
    feats, patchcore.greedy_coreset(jax.random.key(0), feats, k, projection_dim=None)))
  rand = float(patchcore.coverage_radius(feats, patchcore.random_subset(jax.random.key(0), 120, k)))
  assert greedy <= rand
  # Optimal k-center radius by brute force on a subsample of candidate centres.
  full = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
  best = min(full[:, list(c)].min(axis=1).max() for c in itertools.combinations(range(0, 120, 3), k))
  assert greedy <= 2.0 * best + 1e-4


def test_duplicates_and_approximate_start_are_handled():
  feats = np.repeat(_blobs(10, 4), 5, axis=0)  # 50 rows, 10 distinct
  idx = np.asarray(patchcore.greedy_coreset(jax.random.key(1), feats, 10, projection_dim=128))
  distinct_rows = {feats[i].tobytes() for i in idx}
  assert len(distinct_rows) == 10  # every distinct point before any duplicate


def test_jit_key_changes_selection_and_validation():
  feats = _blobs(300, 32)
  a = patchcore.greedy_coreset(jax.random.key(0), feats, 10)
  b = patchcore.greedy_coreset(jax.random.key(0), feats, 10)
  c = patchcore.greedy_coreset(jax.random.key(5), feats, 10)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  with pytest.raises(ValueError, match="num_selected"):
    patchcore.greedy_coreset(jax.random.key(0), feats, 0)
  with pytest.raises(ValueError, match="num_selected"):
    patchcore.greedy_coreset(jax.random.key(0), feats, 301)
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    patchcore.greedy_coreset(jax.random.key(0), feats[0], 1)


def test_one_compilation_per_shape():
  from robustfl_jax.patchcore import coreset
  feats = _blobs(77, 5)
  before = coreset._greedy_coreset._cache_size()
  for seed in range(3):
    patchcore.greedy_coreset(jax.random.key(seed), feats + seed, 9)
  assert coreset._greedy_coreset._cache_size() == before + 1
