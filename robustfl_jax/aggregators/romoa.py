"""Romoa: lookahead hybrid similarity and sanitizing factors (stateful rule).

Romoa (Mao et al. 2021) weighs every parameter of every client by a
*sanitizing factor* built from three similarity measurements between the
client's lookahead model and the lookahead aggregate, both taken relative to
the last synced global model ``theta_bar_t``:

* parameter selection (eq. 4): per client the ``ceil(fraction * d)``
  parameters of largest ``|theta^i|``, merged (union) across clients, so all
  clients are measured on the same index set ``U``;
* element-wise lookahead cosine (eq. 5) on ``U``;
* layer-wise cosine (eq. 6) and layer-wise Pearson (eq. 7), the layers being
  the modules of the model's parameter pytree (kernel and bias together);
* mean-shift clustering (flat kernel, bandwidth as scikit-learn's
  ``estimate_bandwidth(quantile=0.3)``) of each measurement across clients;
* generating functions (eqs. 8-10) ``f = measurement - c``, their minimum,
  and eq. 11: ``F_t = beta * softmax_clients(min f) + (1 - beta) F_{t-1}``
  with ``F_0 = 1/n``; the aggregate is ``sum_i F_t^i * (theta^i - theta_bar)``.

Choices where the paper is ambiguous (each one is selectable and tested):

1. *Eq. 5's two vectors* (``elementwise``). ``"client"`` (default): one
   cosine per client over the merged selection ``U`` of eq. 4,
   ``S^i = <d_i^U, dbar^U> / (||d_i^U|| ||dbar^U||)`` with ``d_i = theta^i_{t'}
   - theta_bar_t`` and ``dbar`` the lookahead reference. This is the reading
   the text supports: Fig. 3 treats "an expanded selection of parameters as a
   planar point", eq. 5's norms sum over a set exactly as eq. 6's sum over a
   layer, and Section 3.3's "the same centroid may be referred to as
   different identifiers" needs one value shared by the parameters of ``U``.
   Eq. 8 then gives ``f_S^i(theta_w) = S^i - c`` on ``U`` and 0 elsewhere.
   ``"trajectory"``: one cosine per parameter over the lookahead steps since
   the last sync (``(d_i^w(1), ..., d_i^w(j))`` against the reference's), kept
   as an option; the text does not support it, and at the first step after a
   sync it is only ``sign(d_i^w dbar^w)``.
2. *The lookahead reference* (``reference``). ``"mean"`` (as printed):
   ``dbar = 1/n sum_i d_i`` over the valid clients. ``"sanitized"`` (an
   extension, not in the paper): the previous step's sanitized weights
   ``sum_i F_{t-1}^i d_i`` (renormalised over valid rows).
3. *Which centroid a measurement is compared with* (``centroid``). Mean shift
   runs per parameter or layer (eq. 5 ``"client"``: once) on the ``n``
   clients' values. ``"majority"`` (default): ``c_w`` is the centre of the
   most populated cluster (scikit-learn's ``cluster_centers_[0]``: highest
   intensity, ties to the larger centre). ``"own"``: each client's own
   cluster centre (where its seed converged), the literal "if theta_w belongs
   to some cluster, then the centroid is c_w"; a lone outlier is then its own
   cluster, gets ``f = 0`` like the honest majority, and is never punished
   (tested).
4. *Eq. 7* (``pearson``). The paper prints ``L_pearson = L_cosine / (std(a)
   std(b))``, which is not Pearson's correlation and grows like
   ``1 / std^2``; ``"paper"`` (default) implements it as printed. It is the
   only scale-sensitive measurement (a client that boosts its update by ``k``
   gets a ``k`` times smaller value) and, because its values are large, the
   softmax is close to a hard selection among honest clients too.
   ``"correlation"`` is the textbook (centred) correlation in [-1, 1]; it is
   scale-invariant, so a pure scaling attacker is then *not* punished by it.
5. Excluded (masked or non-finite) rows take no part in the measurements,
   get 0 from the softmax part, and the aggregate renormalises the factors
   over the valid rows, so its weights always sum to 1.

Guarantees: the aggregate is a per-coordinate convex combination of the
valid rows (finite, inside their coordinate range). There is no breakdown
guarantee: the factors are bounded below by ``beta * exp(min f) / sum``, so
with the scale-invariant measurements only, an attacker's influence is cut
by at most about ``e^2`` per step.

Edge cases: all rows equal -> every measurement equal, ``f = 0``, weights
``1/n`` (the mean); zero updates -> cosines defined as 0; no valid row ->
zeros; one valid row -> that row.

References:
  Mao, Y., Yuan, X., Zhao, X., Zhong, S.: Romoa: Robust model aggregation for
  the resistance of federated learning to model poisoning attacks. ESORICS
  (2021), Sec. 3, eqs. 4-11, Algorithm 2.
  Fukunaga, K., Hostetler, L.: The estimation of the gradient of a density
  function. IEEE Trans. Inf. Theory 21(1) (1975) -- mean shift.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from robustfl_jax.aggregators import base
from robustfl_jax.aggregators._registry import register

Array = jax.Array

PEARSON_FORMS = ("paper", "correlation")
ELEMENTWISE_FORMS = ("client", "trajectory")
REFERENCES = ("mean", "sanitized")
CENTROIDS = ("majority", "own")
# Cap on the [chunk, n, n] distance blocks of the per-parameter mean shift.
_MAX_BLOCK = 1 << 22


class RomoaState(NamedTuple):
  """Romoa's state (all float32).

  Attributes:
    factors: ``[n, d]`` sanitizing factors ``F_{t-1}`` (``1/n`` at start).
    cross: ``[n, d]`` running ``sum_s d_i(s) * dbar(s)`` since the last sync.
    own_sq: ``[n, d]`` running ``sum_s d_i(s)^2``.
    ref_sq: ``[d]`` running ``sum_s dbar(s)^2``.
  """

  factors: Array
  cross: Array
  own_sq: Array
  ref_sq: Array


def layer_ids_from_params(params: Any) -> tuple[np.ndarray, int]:
  """Layer index of every flat parameter, a layer being one pytree module.

  Leaves that share a parent path (e.g. ``Dense_0/kernel`` and
  ``Dense_0/bias``) form one layer; leaves are taken in
  ``ravel_pytree`` order, so the ids align with flattened updates.

  Returns:
    ``(ids int32[d], num_layers)``.
  """
  leaves = jax.tree_util.tree_leaves_with_path(params)
  names: dict[Any, int] = {}
  ids = []
  for path, leaf in leaves:
    parent = tuple(str(p) for p in path[:-1]) if len(path) > 1 else tuple(
        str(p) for p in path)
    layer = names.setdefault(parent, len(names))
    ids.append(np.full(int(np.size(leaf)), layer, np.int32))
  if not ids:
    raise ValueError("romoa: params has no leaves.")
  return np.concatenate(ids), len(names)


def layer_ids_from_sizes(layer_sizes: Sequence[int]) -> tuple[np.ndarray, int]:
  """Layer ids for consecutive layers of the given sizes."""
  sizes = [int(s) for s in layer_sizes]
  if not sizes or min(sizes) < 1:
    raise ValueError(f"romoa: layer_sizes must be positive ints; got {sizes}.")
  return np.repeat(np.arange(len(sizes), dtype=np.int32), sizes), len(sizes)


def num_selected(d: int, fraction: float) -> int:
  """``|theta_tilde| = ceil(fraction * d)`` (at least 1, at most ``d``)."""
  return int(min(d, max(1, math.ceil(fraction * d - 1e-9))))


def select_parameters(models: Array, valid: Array, k: int) -> Array:
  """Eq. 4: union over valid clients of their top-``k`` ``|theta|`` indices.

  Ties at a client's ``k``-th value select every tied parameter.

  Args:
    models: ``[n, d]`` client models (parameters, not updates).
    valid: ``bool[n]`` clients taking part.
    k: static number of parameters per client.

  Returns:
    ``bool[d]`` the merged selection ``U``.
  """
  mags = jnp.abs(models)
  kth = jax.lax.top_k(mags, k)[0][:, -1]
  chosen = (mags >= kth[:, None]) & valid[:, None]
  return jnp.any(chosen, axis=0)


def _safe_ratio(num: Array, den: Array) -> Array:
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def elementwise_cosine(cross: Array, own_sq: Array, ref_sq: Array) -> Array:
  """Eq. 5 on accumulated trajectories: ``cross / sqrt(own_sq * ref_sq)``.

  0 where either trajectory is zero.
  """
  return _safe_ratio(cross, jnp.sqrt(own_sq) * jnp.sqrt(ref_sq)[None, :])


def client_cosine(deltas: Array, ref: Array, selected: Array) -> Array:
  """Eq. 5 per client over the merged selection ``U`` (``elementwise="client"``).

  Args:
    deltas: ``[n, d]`` lookahead models minus the last synced model.
    ref: ``[d]`` lookahead reference minus the last synced model.
    selected: ``bool[d]`` the set ``U`` of eq. 4.

  Returns:
    ``[n]``: ``<d_i^U, ref^U> / (||d_i^U|| ||ref^U||)`` (0 where a vector is 0).
  """
  u = selected.astype(deltas.dtype)
  d_u = deltas * u[None, :]
  r_u = ref * u
  dot = d_u @ r_u
  return _safe_ratio(dot, jnp.linalg.norm(d_u, axis=1) * jnp.linalg.norm(r_u))


def _segment_sum(values: Array, layer_ids: Array, num_layers: int) -> Array:
  """``[n, d] -> [n, L]`` sums per layer."""
  return jax.ops.segment_sum(values.T, layer_ids, num_segments=num_layers).T


def layerwise_cosine(deltas: Array, ref: Array, layer_ids: Array,
                     num_layers: int) -> Array:
  """Eq. 6: per client and layer, cosine of ``d_i^[l]`` and ``dbar^[l]``.

  Args:
    deltas: ``[n, d]`` lookahead models minus the last synced model.
    ref: ``[d]`` lookahead aggregate minus the last synced model.
    layer_ids: ``int32[d]``.
    num_layers: static ``L``.

  Returns:
    ``[n, L]`` (0 where a vector is zero).
  """
  dot = _segment_sum(deltas * ref[None, :], layer_ids, num_layers)
  own = jnp.sqrt(_segment_sum(deltas * deltas, layer_ids, num_layers))
  other = jnp.sqrt(_segment_sum((ref * ref)[None, :], layer_ids, num_layers))
  return _safe_ratio(dot, own * other)


def layerwise_pearson(deltas: Array, ref: Array, layer_ids: Array,
                      num_layers: int, form: str = "paper") -> Array:
  """Eq. 7 per client and layer.

  ``form="paper"``: ``L_cosine / (std(d_i^[l]) * std(dbar^[l]))`` exactly as
  printed (population std). ``form="correlation"``: Pearson's correlation
  ``cov / (std * std)``. Both are 0 where a std is 0.

  Returns:
    ``[n, L]``.
  """
  if form not in PEARSON_FORMS:
    raise ValueError(f"romoa: pearson must be one of {PEARSON_FORMS}; got "
                     f"{form!r}.")
  sizes = jax.ops.segment_sum(jnp.ones_like(ref), layer_ids,
                              num_segments=num_layers)[None, :]
  mean_a = _segment_sum(deltas, layer_ids, num_layers) / sizes
  mean_b = _segment_sum(ref[None, :], layer_ids, num_layers) / sizes
  ca = deltas - mean_a[:, layer_ids]
  cb = ref[None, :] - mean_b[:, layer_ids]
  std_a = jnp.sqrt(_segment_sum(ca * ca, layer_ids, num_layers) / sizes)
  std_b = jnp.sqrt(_segment_sum(cb * cb, layer_ids, num_layers) / sizes)
  if form == "paper":
    num = layerwise_cosine(deltas, ref, layer_ids, num_layers)
  else:
    num = _segment_sum(ca * cb, layer_ids, num_layers) / sizes
  return _safe_ratio(num, std_a * std_b)


def neighbour_counts(n: int, quantile: float) -> np.ndarray:
  """``k`` of scikit-learn's ``estimate_bandwidth`` for 0..n valid points."""
  return np.asarray([max(1, int(m * quantile)) for m in range(n + 1)],
                    np.int32)


def estimate_bandwidth(values: Array, valid: Array, k_table: Array) -> Array:
  """Mean over valid points of the distance to their ``k``-th nearest point.

  The point itself counts as its first neighbour, as in scikit-learn's
  ``estimate_bandwidth`` (so ``k = max(1, int(quantile * n_valid))``).

  Args:
    values: ``[n]`` one-dimensional points.
    valid: ``bool[n]``.
    k_table: ``int32[n + 1]`` from :func:`neighbour_counts` (a NumPy array
      lets only the needed ``max k`` nearest distances be computed).
  """
  dist = jnp.abs(values[:, None] - values[None, :])
  dist = jnp.where(valid[None, :], dist, jnp.inf)
  num_valid = jnp.sum(valid)
  k = jnp.asarray(k_table)[num_valid]
  # The k_max smallest distances by top_k: ~5x faster than a full sort on CPU.
  k_max = (int(np.max(k_table)) if isinstance(k_table, np.ndarray)
           else dist.shape[1])
  k_max = max(1, min(k_max, dist.shape[1]))
  nearest = -jax.lax.top_k(-dist, k_max)[0]
  kth = jnp.take_along_axis(
      nearest, jnp.broadcast_to(jnp.maximum(k - 1, 0), (dist.shape[0], 1)),
      axis=1)[:, 0]
  total = jnp.sum(jnp.where(valid, kth, 0.0))
  return total / jnp.maximum(num_valid, 1)


def mean_shift_mode(values: Array, valid: Array, bandwidth: Array,
                    max_iter: int = 300) -> Array:
  """Centroid of the most populated flat-kernel mean-shift cluster (1-D).

  The returned centre is the seed centre (:func:`mean_shift_centres`) of
  highest intensity, ties to the larger centre: scikit-learn's
  ``cluster_centers_[0]``. NaN if no point is valid.
  """
  centres, counts = mean_shift_centres(values, valid, bandwidth, max_iter)
  best = jnp.max(counts)
  mode = jnp.max(jnp.where(valid & (counts == best), centres, -jnp.inf))
  return jnp.where(jnp.any(valid), mode, jnp.nan)


def mean_shift_centres(values: Array, valid: Array, bandwidth: Array,
                       max_iter: int = 300) -> tuple[Array, Array]:
  """Where every point's mean-shift seed converges, and its intensity.

  Every valid point is a seed; a seed moves to the mean of the valid points
  within ``bandwidth`` (inclusive) of it until it moves by at most
  ``1e-3 * bandwidth`` or ``max_iter`` steps pass; its intensity is the size
  of its last ball (scikit-learn ``MeanShift``).

  Returns:
    ``(centres [n], counts int32[n])``; invalid points have count -1.
  """
  thresh = 1e-3 * bandwidth
  x = jnp.where(valid, values, 0.0)

  def ball(m):
    inside = (jnp.abs(x[None, :] - m[:, None]) <= bandwidth) & valid[None, :]
    cnt = jnp.sum(inside, axis=1)
    mean = jnp.sum(jnp.where(inside, x[None, :], 0.0), axis=1) / jnp.maximum(
        cnt, 1)
    return mean, cnt

  def cond(carry):
    _, _, done, it = carry
    return (it < max_iter) & ~jnp.all(done)

  def body(carry):
    m, cnt, done, it = carry
    new, c = ball(m)
    moved = jnp.where(done, m, new)
    cnt = jnp.where(done, cnt, c)
    done = done | (jnp.abs(new - m) <= thresh)
    return moved, cnt, done, it + 1

  init = (x, jnp.zeros(x.shape, jnp.int32), ~valid, jnp.asarray(0))
  centres, counts, _, _ = jax.lax.while_loop(cond, body, init)
  return centres, jnp.where(valid, counts, -1)


def cluster_modes(measurements: Array, valid: Array, quantile: float = 0.3,
                  max_iter: int = 300) -> Array:
  """Majority centroid per column of ``measurements [n, P]`` -> ``[P]``.

  Mean shift runs independently on each column (the ``n`` clients'
  measurements of one parameter or layer), in chunks that bound memory.
  """
  n, p = measurements.shape
  k_table = neighbour_counts(n, quantile)

  def one(column):
    h = estimate_bandwidth(column, valid, k_table)
    return mean_shift_mode(column, valid, h, max_iter)

  chunk = max(1, min(p, _MAX_BLOCK // max(n * n, 1)))
  return jax.lax.map(one, measurements.T, batch_size=chunk)


def cluster_centroids(measurements: Array, valid: Array, quantile: float = 0.3,
                      max_iter: int = 300, centroid: str = "majority"
                      ) -> Array:
  """The centroid each client's measurement is compared with, ``[n, P]``.

  ``centroid="majority"``: :func:`cluster_modes` broadcast to every client;
  ``"own"``: the centre its own mean-shift seed converged to.
  """
  if centroid not in CENTROIDS:
    raise ValueError(f"romoa: centroid (romoa.centroid) must be one of "
                     f"{CENTROIDS}; got {centroid!r}.")
  n, p = measurements.shape
  if centroid == "majority":
    modes = cluster_modes(measurements, valid, quantile, max_iter)
    return jnp.broadcast_to(modes[None, :], (n, p))
  k_table = neighbour_counts(n, quantile)

  def one(column):
    h = estimate_bandwidth(column, valid, k_table)
    return mean_shift_centres(column, valid, h, max_iter)[0]

  chunk = max(1, min(p, _MAX_BLOCK // max(n * n, 1)))
  return jax.lax.map(one, measurements.T, batch_size=chunk).T


@register("romoa", takes_pre_aggregators=False, section="romoa",
          lookahead=True)
def romoa(params: Any = None, *, layer_sizes: Optional[Sequence[int]] = None,
          num_clients: Optional[int] = None,
          selection_fraction: Optional[float] = None, beta: float = 0.5,
          quantile: float = 0.3, pearson: str = "paper",
          elementwise: str = "client", reference: str = "mean",
          centroid: str = "majority", max_iter: int = 300) -> base.Aggregator:
  """Builds Romoa as an optax-style :class:`Aggregator`.

  ``update(updates, state, *, key=None, mask=None, weights=None,
  global_params=None, lookahead_step=None, **context)``:

  * ``updates [n, d]``: lookahead models minus the last synced global model
    ``theta_bar_t`` (in the synchronous protocol: the round's deltas);
  * ``global_params [d]``: ``theta_bar_t``; selection (eq. 4) ranks
    ``|theta_bar_t + updates_i|`` (by ``|updates_i|`` when absent);
  * ``lookahead_step`` (int, 1-based step since the last sync): 1 or None
    restarts the element-wise trajectories (``elementwise="trajectory"``).

  Every call is one step of Algorithm 2's server loop (factors updated); the
  returned aggregate ``sum_i F_i updates_i`` is used by the protocol at sync
  steps. ``info``: ``rejected``, ``num_rejected``, ``num_nonfinite``,
  ``weights`` and ``factor_mean`` (``f32[n]``, each client's mean sanitizing
  factor over the parameters), ``num_selected_params``.

  Args:
    params: the model's parameter pytree; its modules are the layers of eqs.
      6-7. Alternatively ``layer_sizes``; with neither, one layer.
    layer_sizes: consecutive layer sizes summing to ``d``.
    num_clients: if given, ``init`` sizes the state now; otherwise the first
      ``update`` does (then the state's shape changes once, so pass it when
      the state is carried through ``lax.scan``).
    selection_fraction: eq. 4's selection ratio in (0, 1]; None is the
      paper's ``1/n``. (Not the clients' moving rate, which the paper also
      calls gamma: that is the protocol's ``moving_rate``.)
    beta: residual rate in (0, 1] (paper: 1/2).
    quantile: bandwidth quantile in (0, 1] (``k = quantile * n``; 0.3).
    pearson: ``"paper"`` (eq. 7 as printed) or ``"correlation"``.
    elementwise: eq. 5 ``"client"`` (one cosine per client over ``U``) or
      ``"trajectory"`` (per parameter over the lookahead steps).
    reference: ``"mean"`` (the printed lookahead aggregation) or
      ``"sanitized"`` (previous factors' weighted mean; an extension).
    centroid: ``"majority"`` or ``"own"`` (choice 3 of the module doc).
    max_iter: static cap on mean-shift iterations.

  Returns:
    ``Aggregator(init, update)``; ``init(params_or_flat)`` gives
    :class:`RomoaState` with ``F_0 = 1/n``.

  Raises:
    ValueError: naming the bad hyper-parameter.
  """
  if not (isinstance(beta, (int, float)) and 0.0 < beta <= 1.0):
    raise ValueError(f"romoa: beta (romoa.beta) must be in (0, 1]; got {beta}.")
  if selection_fraction is not None and not 0.0 < selection_fraction <= 1.0:
    raise ValueError("romoa: selection_fraction (romoa.selection_fraction) "
                     f"must be in (0, 1]; got {selection_fraction}.")
  if not 0.0 < quantile <= 1.0:
    raise ValueError(f"romoa: quantile must be in (0, 1]; got {quantile}.")
  if pearson not in PEARSON_FORMS:
    raise ValueError(f"romoa: pearson (romoa.pearson) must be one of "
                     f"{PEARSON_FORMS}; got {pearson!r}.")
  for field, value, forms in (("elementwise", elementwise, ELEMENTWISE_FORMS),
                              ("reference", reference, REFERENCES),
                              ("centroid", centroid, CENTROIDS)):
    if value not in forms:
      raise ValueError(f"romoa: {field} (romoa.{field}) must be one of "
                       f"{forms}; got {value!r}.")
  max_iter = base.check_int(max_iter, "max_iter", "romoa", minimum=1)
  if num_clients is not None:
    num_clients = base.check_int(num_clients, "num_clients", "romoa", 1)
  if params is not None and layer_sizes is not None:
    raise ValueError("romoa: give params or layer_sizes, not both.")
  layers = None
  if params is not None:
    layers = layer_ids_from_params(params)
  elif layer_sizes is not None:
    layers = layer_ids_from_sizes(layer_sizes)

  def layer_ids_for(d):
    if layers is None:
      return np.zeros(d, np.int32), 1
    ids, num = layers
    if ids.shape[0] != d:
      raise ValueError(f"romoa: the layers cover {ids.shape[0]} parameters but "
                       f"updates have d={d}.")
    return ids, num

  def init(example):
    flat = (example if isinstance(example, (jax.Array, np.ndarray))
            and np.ndim(example) == 1 else ravel_pytree(example)[0])
    d = flat.shape[0]
    layer_ids_for(d)
    # Without num_clients the state is sized by the first update (fine for
    # eager use; pass num_clients when the state is a scan or jit carry).
    return _fresh_state(0 if num_clients is None else num_clients, d)

  def _fresh_state(n, d):
    # Distinct buffers: a jitted round donates the state.
    return RomoaState(factors=jnp.full((n, d), 1.0 / max(n, 1), jnp.float32),
                      cross=jnp.zeros((n, d), jnp.float32),
                      own_sq=jnp.zeros((n, d), jnp.float32),
                      ref_sq=jnp.zeros((d,), jnp.float32))

  def update(updates, state, *, key=None, mask=None, weights=None,
             global_params=None, lookahead_step=None, **context):
    del key, weights, context
    updates = base.as_updates(updates, "romoa")
    if updates.shape[1] == 0:
      raise ValueError("romoa needs at least one parameter (its selection, "
                       "eq. 4, ranks them); got d=0.")
    n, d = updates.shape
    if state.factors.shape[0] == 0 and state.factors.shape[1] == d:
      state = _fresh_state(n, d)
    if state.factors.shape != (n, d):
      raise ValueError(f"romoa: state was built for {state.factors.shape} "
                       f"(num_clients, d); got updates of shape {(n, d)}.")
    ids_np, num_layers = layer_ids_for(d)
    layer_ids = jnp.asarray(ids_np)
    fraction = 1.0 / n if selection_fraction is None else selection_fraction
    k = num_selected(d, fraction)

    finite = base.valid_rows(updates)
    mask_ = base.check_mask(mask, n)
    valid = finite if mask_ is None else finite & mask_
    info = base.base_info(finite, valid)
    num_valid = jnp.sum(valid)
    deltas = base.zero_invalid(updates, valid).astype(jnp.float32)
    valid_col = valid[:, None]
    if reference == "mean":
      ref = jnp.sum(deltas, axis=0) / jnp.maximum(num_valid, 1)
    else:
      prev = jnp.where(valid_col, state.factors, 0.0)
      prev_total = jnp.sum(prev, axis=0)
      prev = jnp.where(prev_total > 0, prev / jnp.where(
          prev_total > 0, prev_total, 1.0), 0.0)
      ref = jnp.sum(prev * deltas, axis=0)

    restart = (jnp.asarray(True) if lookahead_step is None
               else jnp.asarray(lookahead_step) <= 1)
    keep = jnp.where(restart, 0.0, 1.0)
    cross = keep * state.cross + deltas * ref[None, :]
    own_sq = keep * state.own_sq + deltas * deltas
    ref_sq = keep * state.ref_sq + ref * ref
    cross = jnp.where(valid_col, cross, 0.0)
    own_sq = jnp.where(valid_col, own_sq, 0.0)

    origin = (jnp.zeros((d,), jnp.float32) if global_params is None
            else jnp.asarray(global_params, jnp.float32).reshape(d))
    selected = select_parameters(origin[None, :] + deltas, valid, k)

    if elementwise == "trajectory":
      s_cos = elementwise_cosine(cross, own_sq, ref_sq)
    else:
      s_cos = client_cosine(deltas, ref, selected)[:, None]
    l_cos = layerwise_cosine(deltas, ref, layer_ids, num_layers)
    l_pea = layerwise_pearson(deltas, ref, layer_ids, num_layers, pearson)
    c_s = cluster_centroids(s_cos, valid, quantile, max_iter, centroid)
    c_lc = cluster_centroids(l_cos, valid, quantile, max_iter, centroid)
    c_lp = cluster_centroids(l_pea, valid, quantile, max_iter, centroid)
    f_s = jnp.where(selected[None, :], s_cos - c_s, 0.0)
    f_lc = (l_cos - c_lc)[:, layer_ids]
    f_lp = (l_pea - c_lp)[:, layer_ids]
    score = jnp.minimum(f_s, jnp.minimum(f_lc, f_lp))
    score = jnp.where(valid_col & ~jnp.isnan(score), score, -jnp.inf)
    soft = jax.nn.softmax(score, axis=0)
    soft = jnp.where(valid_col & jnp.isfinite(soft), soft, 0.0)
    factors = beta * soft + (1.0 - beta) * state.factors

    used = jnp.where(valid_col, factors, 0.0)
    total = jnp.sum(used, axis=0)
    norm = jnp.where(total > 0, used / jnp.where(total > 0, total, 1.0), 0.0)
    aggregate = jnp.sum(norm * deltas, axis=0)
    info.update(weights=jnp.mean(norm, axis=1),
                factor_mean=jnp.mean(factors, axis=1),
                num_selected_params=jnp.sum(selected).astype(jnp.int32))
    new_state = RomoaState(factors=factors, cross=cross, own_sq=own_sq,
                           ref_sq=ref_sq)
    return aggregate.astype(updates.dtype), new_state, info

  return base.Aggregator(init, update)
