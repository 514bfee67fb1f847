"""Blockwise nearest-neighbour distances of query patches to a memory bank.

Queries are processed `block_size` at a time with `lax.map`, so peak memory is
`block_size x bank_size` distances whatever the number of queries.

References:
  Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR
  2022, Eq. 6-7 (patch score, image-level reweighting).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _block_sq_distances(queries, bank, bank_sq_norms):
  q_sq = jnp.sum(queries * queries, axis=1, keepdims=True)
  return jnp.maximum(q_sq - 2.0 * queries @ bank.T + bank_sq_norms[None, :], 0.0)


@functools.partial(jax.jit, static_argnames=("k", "block_size", "return_indices"))
def _nearest(queries, bank, k, block_size, return_indices):
  queries = queries.astype(jnp.float32)
  bank = bank.astype(jnp.float32)
  num_queries = queries.shape[0]
  num_blocks = -(-num_queries // block_size)
  padded = jnp.pad(queries, ((0, num_blocks * block_size - num_queries), (0, 0)))
  bank_sq_norms = jnp.sum(bank * bank, axis=1)

  def one_block(block):
    sq = _block_sq_distances(block, bank, bank_sq_norms)
    if k == 1:
      idx = jnp.argmin(sq, axis=1)[:, None]
      dist = jnp.sqrt(jnp.take_along_axis(sq, idx, axis=1))
    else:
      neg, idx = jax.lax.top_k(-sq, k)
      dist = jnp.sqrt(-neg)
    return dist, idx.astype(jnp.int32)

  dist, idx = jax.lax.map(one_block, padded.reshape(num_blocks, block_size, -1))
  dist = dist.reshape(-1, k)[:num_queries]
  idx = idx.reshape(-1, k)[:num_queries]
  return (dist, idx) if return_indices else dist


def _validate(queries, bank, k, block_size):
  if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
    raise ValueError(
      f"expected queries [q, d] and bank [m, d] with equal d; got {queries.shape} and {bank.shape}")
  if not 1 <= k <= bank.shape[0]:
    raise ValueError(f"k must be in [1, bank size={bank.shape[0]}]; got k={k}")
  if block_size < 1:
    raise ValueError(f"block_size must be positive; got {block_size}")


def nearest_neighbor_scores(queries: jax.Array, bank: jax.Array, k: int = 1,
                            block_size: int = 1024) -> jax.Array:
  """Patch anomaly scores: mean Euclidean distance to the `k` nearest bank patches.

  Args:
    queries: f32[q, d] query patch features.
    bank: f32[m, d] memory bank.
    k: static number of neighbours (1 is PatchCore's score).
    block_size: static number of queries per block (bounds memory).

  Returns:
    f32[q] scores (>= 0).

  Raises:
    ValueError: shape mismatch, or k outside [1, m].

  Edge cases:
    Non-finite bank rows give infinite or NaN distances and are never chosen
    as nearest unless every row is non-finite; callers should drop them (the
    federated strategies do).
  """
  queries, bank = jnp.asarray(queries), jnp.asarray(bank)
  _validate(queries, bank, k, block_size)
  dist = _nearest(queries, bank, int(k), int(min(block_size, max(queries.shape[0], 1))), False)
  return jnp.mean(dist, axis=1)


def nearest_neighbors(queries: jax.Array, bank: jax.Array, k: int = 1,
                      block_size: int = 1024) -> tuple[jax.Array, jax.Array]:
  """Distances f32[q, k] and bank indices i32[q, k] of the k nearest bank patches."""
  queries, bank = jnp.asarray(queries), jnp.asarray(bank)
  _validate(queries, bank, k, block_size)
  return _nearest(queries, bank, int(k), int(min(block_size, max(queries.shape[0], 1))), True)


def reweighted_image_scores(patch_features: jax.Array, bank: jax.Array,
                            num_neighbors: int = 3, block_size: int = 1024) -> jax.Array:
  """Image scores with the PatchCore paper's reweighting (Eq. 7).

  For each image, take its most anomalous patch m_test (score s* = distance to
  its nearest bank patch m*), then
  s = (1 - exp(||m_test - m*||) / sum_{m in N_b(m*)} exp(||m_test - m||)) * s*,
  where N_b(m*) are the `num_neighbors` bank patches nearest to m* (m*
  included). An anomalous patch whose nearest bank patch sits in a sparse
  region of the bank gets a larger weight.

  Args:
    patch_features: f32[B, P, d] patch features per image.
    bank: f32[m, d] memory bank.
    num_neighbors: b, static, in [1, m].

  Returns:
    f32[B] image scores.
  """
  patch_features, bank = jnp.asarray(patch_features, jnp.float32), jnp.asarray(bank, jnp.float32)
  num_images, num_patches, dim = patch_features.shape
  _validate(patch_features.reshape(-1, dim), bank, num_neighbors, block_size)
  dist, idx = nearest_neighbors(patch_features.reshape(-1, dim), bank, 1, block_size)
  dist = dist.reshape(num_images, num_patches)
  idx = idx.reshape(num_images, num_patches)
  worst = jnp.argmax(dist, axis=1)
  s_star = jnp.take_along_axis(dist, worst[:, None], axis=1)[:, 0]
  m_test = jnp.take_along_axis(patch_features, worst[:, None, None], axis=1)[:, 0]
  m_star = bank[jnp.take_along_axis(idx, worst[:, None], axis=1)[:, 0]]
  _, neighbor_idx = nearest_neighbors(m_star, bank, num_neighbors, block_size)
  neighbor_dist = jnp.linalg.norm(m_test[:, None, :] - bank[neighbor_idx], axis=-1)
  # exp(d*) / sum exp(d) computed stably as softmax over the neighbour distances.
  weight = 1.0 - jnp.exp(s_star - jax.scipy.special.logsumexp(neighbor_dist, axis=1))
  return weight * s_star


def score_patches(patch_features: jax.Array, bank: jax.Array, k: int = 1,
                  block_size: int = 1024) -> jax.Array:
  """Nearest-neighbour scores on the patch grid: f32[B, h, w, d] -> f32[B, h, w].

  The image score is the maximum over its grid (PatchCore's Eq. 6).
  """
  patch_features = jnp.asarray(patch_features)
  if patch_features.ndim != 4:
    raise ValueError(f"expected patch features [B, h, w, d]; got {patch_features.shape}")
  scores = nearest_neighbor_scores(patch_features.reshape(-1, patch_features.shape[-1]), bank,
                                   k, block_size)
  return scores.reshape(patch_features.shape[:3])
