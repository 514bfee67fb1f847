"""Greedy k-center coreset selection for PatchCore memory banks.

The greedy rule (Gonzalez 1985) repeatedly adds the patch farthest from the
patches selected so far; it is a 2-approximation of the minimum coverage
radius. Each step is one matrix-vector product against the selected patch and
one running minimum, so memory is O(N * dim) for the (projected) features plus
O(N) for the running distances: no N x N matrix is ever formed, which keeps
200,000+ patches within a laptop's memory.

References:
  Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR
  2022, Section 3.2 and its approximate sampler (random projection, a few
  random starting points); Sener & Savarese, "Active Learning for
  Convolutional Neural Networks: A Core-Set Approach", ICLR 2018.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from robustfl_jax.patchcore.nearest_neighbor import nearest_neighbor_scores


def _sq_distances_to(points, sq_norms, center):
  """Squared distances of every row of `points` to `center`, clamped at 0."""
  return jnp.maximum(sq_norms - 2.0 * (points @ center) + jnp.dot(center, center), 0.0)


@functools.partial(jax.jit, static_argnames=("num_selected", "projection_dim", "num_starts"))
def _greedy_coreset(key, features, num_selected, projection_dim, num_starts):
  features = features.astype(jnp.float32)
  num_points, dim = features.shape
  project_key, start_key = jax.random.split(key)
  if projection_dim is not None and projection_dim < dim:
    # Johnson-Lindenstrauss projection: pairwise distances kept up to 1 +- eps.
    projection = jax.random.normal(project_key, (dim, projection_dim)) / jnp.sqrt(projection_dim)
    points = features @ projection
  else:
    points = features
  sq_norms = jnp.sum(points * points, axis=1)

  if projection_dim is None:
    # Exact rule: one random first centre, selected.
    first = jax.random.randint(start_key, (), 0, num_points)
    min_sq = _sq_distances_to(points, sq_norms, points[first])
    indices = jnp.zeros((num_selected,), jnp.int32).at[0].set(first)
    start = 1
  else:
    # Approximate rule of the PatchCore reference: the initial distance of each
    # patch is its mean distance to `num_starts` random patches (which are not
    # themselves selected); greedy steps then take running minima.
    starts = jax.random.choice(start_key, num_points, (num_starts,), replace=False)
    start_sq = jax.vmap(lambda c: _sq_distances_to(points, sq_norms, c))(points[starts])
    min_sq = jnp.mean(jnp.sqrt(start_sq), axis=0) ** 2
    indices = jnp.zeros((num_selected,), jnp.int32)
    start = 0

  def step(i, carry):
    indices, min_sq = carry
    chosen = jnp.argmax(min_sq).astype(jnp.int32)
    min_sq = jnp.minimum(min_sq, _sq_distances_to(points, sq_norms, points[chosen]))
    # The chosen patch is at distance 0 from itself, whatever rounding says.
    min_sq = min_sq.at[chosen].set(0.0)
    return indices.at[i].set(chosen), min_sq

  indices, _ = jax.lax.fori_loop(start, num_selected, step, (indices, min_sq))
  return indices


def greedy_coreset(key: jax.Array, features: jax.Array, num_selected: int,
                   projection_dim: int | None = 128, num_starts: int = 10) -> jax.Array:
  """Indices of a greedy k-center coreset of `features`.

  Args:
    key: PRNG key (projection and starting points).
    features: f32[N, D] patch features. Rows must be finite.
    num_selected: static number of patches to keep, 1 <= num_selected <= N.
    projection_dim: dimension of the random Gaussian projection used for the
      distance computations (the reference's approximate sampler uses 128);
      `None` for the exact rule on the full features. When `projection_dim >= D`
      no projection is applied but the approximate start is kept.
    num_starts: random starting patches of the approximate rule (ignored by the
      exact rule, which starts from one random selected patch).

  Returns:
    i32[num_selected] distinct indices into `features`, in selection order.

  Raises:
    ValueError: `num_selected` out of range, or bad `projection_dim`/`num_starts`.

  Guarantees:
    The exact rule's coverage radius (see `coverage_radius`) is at most twice
    the optimal k-center radius. Duplicates are never selected while some
    patch is still at positive distance from the selection.

  Example:
    >>> idx = greedy_coreset(jax.random.key(0), feats, num_selected=len(feats) // 10)
    >>> bank = feats[idx]
  """
  features = jnp.asarray(features)
  if features.ndim != 2:
    raise ValueError(f"greedy_coreset expects features of shape [N, D]; got {features.shape}")
  num_points = features.shape[0]
  if not 1 <= num_selected <= num_points:
    raise ValueError(
      f"greedy_coreset needs 1 <= num_selected <= N; got num_selected={num_selected}, N={num_points}")
  if projection_dim is not None and projection_dim < 1:
    raise ValueError(f"projection_dim must be a positive int or None; got {projection_dim}")
  if projection_dim is not None and not 1 <= num_starts <= num_points:
    raise ValueError(f"num_starts must be in [1, N={num_points}]; got {num_starts}")
  return _greedy_coreset(key, features, int(num_selected),
                         None if projection_dim is None else int(projection_dim), int(num_starts))


def coverage_radius(features: jax.Array, indices: jax.Array, block_size: int = 1024) -> jax.Array:
  """Max over patches of the distance to the nearest selected patch (full dims)."""
  features = jnp.asarray(features, jnp.float32)
  return jnp.max(nearest_neighbor_scores(features, features[indices], k=1, block_size=block_size))


def random_subset(key: jax.Array, num_points: int, num_selected: int) -> jax.Array:
  """Uniform random indices without replacement (the baseline to beat)."""
  if not 1 <= num_selected <= num_points:
    raise ValueError(f"need 1 <= num_selected <= N; got {num_selected}, N={num_points}")
  return jax.random.choice(key, num_points, (num_selected,), replace=False).astype(jnp.int32)
