"""Romoa (robustfl_jax/aggregators/romoa.py): each equation on small inputs."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import MeanShift, estimate_bandwidth as sk_bandwidth

from robustfl_jax import aggregators, models
from robustfl_jax.aggregators import romoa as R


_N, _SIZES = 10, (40, 20)
_D = sum(_SIZES)


@functools.lru_cache(maxsize=None)
def _romoa(pearson="paper", **options):
  """One Romoa and one jitted update per form: every test shares the compile
  (shapes ``[10, 60]``, layers ``(40, 20)``)."""
  agg = R.romoa(layer_sizes=_SIZES, num_clients=_N, pearson=pearson,
                **options)

  # Compiles once for all the tests that use it, whatever step and mask.
  @jax.jit
  @chex.assert_max_traces(n=8)  # one trace per (pearson, options) variant
  def update(updates, state, step, mask):
    return agg.update(updates, state, lookahead_step=step, mask=mask)

  return agg, update


def _step(pearson, updates, state=None, step=1, mask=None, **options):
  agg, update = _romoa(pearson, **options)
  if state is None:
    state = agg.init(jnp.zeros(_D))
  mask = jnp.ones(_N, bool) if mask is None else mask
  return update(jnp.asarray(updates, jnp.float32), state, step, mask)


def _ref_mode(values):
  """scikit-learn's majority centre (bandwidth 0: most frequent, larger)."""
  x = np.asarray(values, np.float64)[:, None]
  h = sk_bandwidth(x, quantile=0.3)
  if h <= 1e-12:
    vals, counts = np.unique(x[:, 0], return_counts=True)
    return vals[counts == counts.max()].max()
  return MeanShift(bandwidth=h).fit(x).cluster_centers_[0, 0]


def test_select_parameters_eq4_union_of_top_k_by_absolute_value():
  models_ = jnp.array([[3.0, -1.0, 0.5, 2.0, 0.0],
                       [0.1, -4.0, 0.2, 0.3, 0.0],
                       [9.0, 0.01, 0.0, 0.02, 0.03]])
  valid = jnp.array([True, True, True])
  np.testing.assert_array_equal(R.select_parameters(models_, valid, 1),
                                [True, True, False, False, False])
  np.testing.assert_array_equal(R.select_parameters(models_, valid, 2),
                                [True, True, False, True, True])
  # An excluded client's choice does not enter the union.
  np.testing.assert_array_equal(
      R.select_parameters(models_, jnp.array([True, False, True]), 1),
      [True, False, False, False, False])
  # Ties at the k-th value select every tied parameter (documented).
  np.testing.assert_array_equal(
      R.select_parameters(jnp.array([[1.0, 1.0, 0.0]]), valid[:1], 1),
      [True, True, False])
  assert R.num_selected(10, 0.1) == 1 and R.num_selected(11, 0.1) == 2
  assert R.num_selected(5, 1e-6) == 1


def test_elementwise_cosine_eq5_over_the_lookahead_trajectory():
  # Client 0's trajectory of parameter 0: (1, 2); the aggregate's: (2, -1).
  cross = jnp.array([[1 * 2 + 2 * -1.0, 3.0]])
  own = jnp.array([[1 + 4.0, 9.0]])
  ref = jnp.array([4 + 1.0, 1.0])
  out = R.elementwise_cosine(cross, own, ref)
  np.testing.assert_allclose(out, [[0.0, 1.0]], atol=1e-7)
  # Zero trajectory -> defined as 0.
  assert float(R.elementwise_cosine(jnp.zeros((1, 1)), jnp.zeros((1, 1)),
                                    jnp.ones(1))[0, 0]) == 0.0


def test_first_lookahead_step_is_the_sign_and_the_trajectory_accumulates():
  rng = np.random.default_rng(7)
  u1 = rng.normal(size=(_N, _D)).astype(np.float32)
  u2 = rng.normal(size=(_N, _D)).astype(np.float32)
  _, state, _ = _step("paper", u1, step=1, elementwise="trajectory")
  ref1 = u1.mean(0)
  np.testing.assert_allclose(state.cross, u1 * ref1, rtol=1e-5, atol=1e-6)
  s1 = R.elementwise_cosine(state.cross, state.own_sq, state.ref_sq)
  np.testing.assert_allclose(s1, np.sign(u1 * ref1), atol=1e-5)
  _, state2, _ = _step("paper", u2, state, step=2, elementwise="trajectory")
  ref2 = u2.mean(0)
  traj_i = np.stack([u1, u2], -1)           # [n, d, steps]
  traj_r = np.stack([ref1, ref2], -1)       # [d, steps]
  expect = (traj_i * traj_r).sum(-1) / (
      np.linalg.norm(traj_i, axis=-1) * np.linalg.norm(traj_r, axis=-1))
  got = R.elementwise_cosine(state2.cross, state2.own_sq, state2.ref_sq)
  np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)
  # A sync (lookahead_step 1) restarts the trajectory.
  _, state3, _ = _step("paper", u2, state2, step=1, elementwise="trajectory")
  np.testing.assert_allclose(state3.cross, u2 * ref2, rtol=1e-5, atol=1e-6)


def test_eq5_per_client_cosine_over_the_merged_selection_by_hand():
  # Three clients, four parameters; U = {0, 2}: only those columns count.
  deltas = jnp.array([[1.0, 9.0, 0.0, 5.0],
                      [1.0, -7.0, 1.0, 0.0],
                      [-2.0, 3.0, 0.0, 1.0]])
  ref = jnp.array([1.0, 100.0, 1.0, -100.0])
  selected = jnp.array([True, False, True, False])
  got = R.client_cosine(deltas, ref, selected)
  # (1, 0).(1, 1) / (1 sqrt 2); (1, 1).(1, 1) / 2; (-2, 0).(1, 1) / (2 sqrt 2)
  np.testing.assert_allclose(got, [1 / np.sqrt(2), 1.0, -1 / np.sqrt(2)],
                             rtol=1e-6)
  # A zero vector on U gives 0, not NaN.
  zero = R.client_cosine(deltas.at[0, 0].set(0.0), ref, selected)
  assert float(zero[0]) == 0.0


def test_eq5_client_form_is_one_value_per_client_on_u_and_zero_elsewhere():
  """f_S (eq. 8) is S^i - c on U and 0 off U: with only eq. 5 informative,
  the factors of a client are constant on U."""
  rng = np.random.default_rng(5)
  g = rng.normal(size=_D)
  updates = ((g + 0.5 * rng.normal(size=(_N, _D))) * 0.05).astype(np.float32)
  updates[0] = -updates[0]
  _, state, _ = _step("paper", updates, elementwise="client")
  k = R.num_selected(_D, 1.0 / _N)
  sel = np.zeros(_D, bool)
  for i in range(_N):
    sel[np.argsort(-np.abs(updates[i]))[:k]] = True
  f0 = np.asarray(state.factors[0])
  # The sign flipper is below 1/n on U (its eq. 5 value is ~-1).
  assert (f0[sel] < 1.0 / _N).all()


def test_own_centroid_never_punishes_a_lone_outlier():
  """centroid="own": a lone outlier is its own cluster (f = 0 like the
  majority), so it keeps ~1/n; "majority" punishes it."""
  updates = _honest_and_scaled(scale=-1.0)
  x = jnp.concatenate([jnp.full((1,), -0.9), jnp.linspace(0.5, 0.6, _N - 1)])
  own = R.cluster_centroids(x[:, None], jnp.ones(_N, bool), centroid="own")
  np.testing.assert_allclose(own[:, 0], x * 0 + jnp.where(
      jnp.arange(_N) == 0, -0.9, own[1, 0]), atol=1e-6)
  maj = R.cluster_centroids(x[:, None], jnp.ones(_N, bool))
  np.testing.assert_allclose(maj[:, 0], own[1, 0], atol=1e-6)
  _, _, info_own = _run("paper", updates, 3, centroid="own")
  _, _, info_maj = _run("paper", updates, 3)
  assert float(info_maj["factor_mean"][0]) < 0.5 / _N
  assert float(info_own["factor_mean"][0]) > float(
      info_maj["factor_mean"][0])


def test_sanitized_reference_uses_the_previous_factors():
  """reference="sanitized": the lookahead reference is sum_i F_{t-1}^i d_i.
  With F_0 = 1/n it equals the mean at the first step; afterwards the
  punished client's share in the reference shrinks."""
  updates = _honest_and_scaled(scale=-1.0)
  out_m, st_m, _ = _step("paper", updates)
  out_s, st_s, _ = _step("paper", updates, reference="sanitized")
  np.testing.assert_allclose(st_s.factors, st_m.factors, rtol=1e-5)
  _, _, info_s = _run("paper", updates, 3, reference="sanitized")
  assert float(info_s["factor_mean"][0]) < 0.5 / _N
  with pytest.raises(ValueError, match="romoa.reference"):
    R.romoa(num_clients=4, reference="median")
  with pytest.raises(ValueError, match="romoa.centroid"):
    R.romoa(num_clients=4, centroid="nearest")
  with pytest.raises(ValueError, match="romoa.elementwise"):
    R.romoa(num_clients=4, elementwise="per_parameter")


def test_layerwise_cosine_eq6_and_pearson_eq7_by_hand():
  deltas = jnp.array([[1.0, 2.0, 3.0, 1.0, -1.0]])
  ref = jnp.array([2.0, 2.0, 2.0, 1.0, 1.0])
  ids = jnp.array([0, 0, 0, 1, 1])
  cos = R.layerwise_cosine(deltas, ref, ids, 2)
  np.testing.assert_allclose(
      cos, [[12.0 / (np.sqrt(14) * np.sqrt(12)), 0.0]], atol=1e-6)
  paper = R.layerwise_pearson(deltas, ref, ids, 2, "paper")
  # Layer 0: ref has std 0 -> defined 0; layer 1: cos 0 / (1 * 0) -> 0.
  np.testing.assert_allclose(paper, [[0.0, 0.0]])
  ref2 = jnp.array([1.0, 0.0, 4.0, 2.0, 1.0])
  a0, b0 = np.array([1.0, 2, 3]), np.array([1.0, 0, 4])
  cos0 = a0 @ b0 / np.linalg.norm(a0) / np.linalg.norm(b0)
  got = R.layerwise_pearson(deltas, ref2, ids, 2, "paper")
  np.testing.assert_allclose(got[0, 0], cos0 / (a0.std() * b0.std()),
                             rtol=1e-6)
  corr = R.layerwise_pearson(deltas, ref2, ids, 2, "correlation")
  np.testing.assert_allclose(corr[0, 0], np.corrcoef(a0, b0)[0, 1], rtol=1e-5)
  np.testing.assert_allclose(corr[0, 1], 1.0, rtol=1e-6)  # (1,-1) vs (2,1)


@pytest.mark.parametrize("n", [7, 20])
def test_bandwidth_and_mean_shift_match_scikit_learn(n):
  rng = np.random.default_rng(n)
  cols = rng.normal(size=(n, 8)).astype(np.float32)
  cols[: n // 4, ::2] += 6.0  # a second, smaller cluster in half the columns
  k = R.neighbour_counts(n, 0.3)
  valid = jnp.ones(n, bool)

  @jax.jit
  def both(c):
    h = jax.vmap(lambda col: R.estimate_bandwidth(col, valid, k), 1)(c)
    return h, jax.vmap(lambda col, hh: R.mean_shift_mode(col, valid, hh),
                       (1, 0))(c, h)

  h, modes = both(jnp.asarray(cols))
  for j in range(cols.shape[1]):
    x = cols[:, j]
    np.testing.assert_allclose(
        h[j], sk_bandwidth(x[:, None].astype(np.float64), quantile=0.3),
        rtol=1e-5)
    np.testing.assert_allclose(modes[j], _ref_mode(x), rtol=1e-4, atol=1e-5)


def test_mean_shift_mode_hand_example_and_invalid_points():
  x = jnp.array([0.0, 0.1, 0.2, 0.15, 5.0, 5.1, 5.05, 0.05, 0.12, 7.0])
  valid = jnp.ones(10, bool)
  modes = R.cluster_modes(x[:, None], valid)
  # Bandwidth ~0.25: the six points near 0.1 beat the three near 5.
  assert 0.0 < float(modes[0]) < 0.2
  np.testing.assert_allclose(modes[0], _ref_mode(np.asarray(x)), rtol=1e-5)
  # A far outlier inflates the estimated bandwidth (scikit-learn does too):
  # then everything but the outlier is one cluster.
  far = x.at[6].set(100.0)
  np.testing.assert_allclose(R.cluster_modes(far[:, None], valid)[0],
                             _ref_mode(np.asarray(far)), rtol=1e-5)
  # An excluded point is neither a seed nor a neighbour.
  x2 = x.at[0].set(jnp.nan)
  m2 = R.cluster_modes(x2[:, None], valid.at[0].set(False))
  assert np.isfinite(m2[0]) and 0.05 < float(m2[0]) < 0.2


def _reference_factors(updates, layer_sizes, fraction, beta, form,
                       elementwise="client"):
  """Eqs. 4-11 for one step from sync, with scikit-learn's mean shift."""
  u = np.asarray(updates, np.float64)
  n, d = u.shape
  ids = np.repeat(np.arange(len(layer_sizes)), layer_sizes)
  ref = u.mean(0)
  k = R.num_selected(d, fraction)
  sel = np.zeros(d, bool)
  for i in range(n):
    sel[np.argsort(-np.abs(u[i]))[:k]] = True
  f_s = np.zeros((n, d))
  if elementwise == "client":
    a, b = u[:, sel], ref[sel]
    s = a @ b / (np.linalg.norm(a, axis=1) * np.linalg.norm(b))
    f_s[:, sel] = (s - _ref_mode(s))[:, None]
  else:
    s = np.sign(u * ref)
    for w in range(d):
      if sel[w]:
        f_s[:, w] = s[:, w] - _ref_mode(s[:, w])
  f_lc, f_lp = np.zeros((n, d)), np.zeros((n, d))
  for layer in range(len(layer_sizes)):
    cols = ids == layer
    a, b = u[:, cols], ref[cols]
    lc = a @ b / (np.linalg.norm(a, axis=1) * np.linalg.norm(b))
    if form == "paper":
      lp = lc / (a.std(1) * b.std())
    else:
      lp = np.array([np.corrcoef(row, b)[0, 1] for row in a])
    f_lc[:, cols] = (lc - _ref_mode(lc))[:, None]
    f_lp[:, cols] = (lp - _ref_mode(lp))[:, None]
  g = np.minimum(f_s, np.minimum(f_lc, f_lp))
  soft = np.exp(g - g.max(0)) / np.exp(g - g.max(0)).sum(0)
  return beta * soft + (1 - beta) / n


@pytest.mark.parametrize("form,elementwise", [
    ("paper", "client"), ("correlation", "client"), ("paper", "trajectory")])
def test_factors_eqs_8_to_11_match_a_loop_reference(form, elementwise):
  rng = np.random.default_rng(3)
  g = rng.normal(size=_D)
  updates = (g + 0.8 * rng.normal(size=(_N, _D))) * 0.05
  updates[0] *= -3.0
  updates = updates.astype(np.float32)
  out, state, info = _step(form, updates, elementwise=elementwise)
  expect = _reference_factors(updates, _SIZES, 1.0 / _N, 0.5, form,
                              elementwise)
  np.testing.assert_allclose(state.factors, expect, rtol=2e-3, atol=2e-5)
  np.testing.assert_allclose(out, (expect * updates).sum(0) / expect.sum(0),
                             rtol=2e-3, atol=1e-5)
  np.testing.assert_allclose(info["factor_mean"], expect.mean(1), rtol=2e-3)
  # Factors of the valid rows sum to 1 per parameter (F_0 = 1/n, softmax).
  np.testing.assert_allclose(state.factors.sum(0), 1.0, rtol=1e-5)


def _honest_and_scaled(scale=100.0, seed=0):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=_D)
  u = (g + 0.7 * rng.normal(size=(_N, _D))) * 1e-2
  u[0] *= scale
  return jnp.asarray(u, jnp.float32)


def _run(form, updates, steps, mask=None, **options):
  state = None
  for j in range(steps):
    out, state, info = _step(form, updates, state, step=j + 1, mask=mask,
                             **options)
  return out, state, info


def test_scaled_client_is_punished_with_the_printed_eq7_not_with_correlation():
  updates = _honest_and_scaled()
  _, _, info = _run("paper", updates, 5)
  # Its softmax share is ~0, so F decays like (1 - beta)^t / n.
  assert float(info["factor_mean"][0]) < 0.5 ** 5 / _N * 1.01
  _, _, info_c = _run("correlation", updates, 5)
  # Documented limitation: scale-invariant measurements do not see scaling.
  assert float(info_c["factor_mean"][0]) > 0.5 / _N


def test_sign_flipper_is_punished_with_both_forms():
  updates = _honest_and_scaled(scale=-1.0)
  for form in R.PEARSON_FORMS:
    _, _, info = _run(form, updates, 4)
    honest = np.asarray(info["factor_mean"][1:])
    assert float(info["factor_mean"][0]) < 0.5 * np.median(honest), form


def test_equal_rows_give_the_mean_and_uniform_factors():
  row = jnp.linspace(-1, 1, _D)
  out, state, _ = _run("paper", jnp.tile(row, (_N, 1)), 2)
  np.testing.assert_allclose(out, row, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(state.factors, 1.0 / _N, rtol=1e-5)


def test_nan_rows_are_excluded_and_never_reach_the_aggregate():
  updates = _honest_and_scaled(scale=1.0)
  bad = updates.at[2, 5].set(jnp.nan).at[4].set(jnp.inf)
  out, state, info = _run("paper", bad, 3)
  assert np.all(np.isfinite(out)) and np.all(np.isfinite(state.factors))
  assert info["rejected"].tolist() == [i in (2, 4) for i in range(_N)]
  assert int(info["num_nonfinite"]) == 2
  np.testing.assert_allclose(info["weights"][jnp.array([2, 4])], 0.0)
  lo = jnp.min(jnp.where(info["rejected"][:, None], jnp.inf, bad), 0)
  hi = jnp.max(jnp.where(info["rejected"][:, None], -jnp.inf, bad), 0)
  assert bool(jnp.all((out >= lo - 1e-7) & (out <= hi + 1e-7)))
  # Masked rows too.
  mask = jnp.ones(_N, bool).at[1].set(False)
  _, _, info_m = _run("paper", updates, 1, mask=mask)
  assert bool(info_m["rejected"][1]) and float(info_m["weights"][1]) == 0.0


def test_jit_equals_a_second_compile_and_is_deterministic():
  updates = _honest_and_scaled(scale=5.0)
  agg, update = _romoa("paper")
  state = agg.init(jnp.zeros(_D))
  other = jax.jit(lambda u, s: agg.update(u, s, lookahead_step=2))
  a = update(updates, state, 2, jnp.ones(_N, bool))
  b = other(updates, state)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1].factors, b[1].factors)


def test_layers_come_from_the_pytree_modules():
  model = models.MLP(hidden=(4,), num_classes=3)
  params = models.init_params(model, jax.random.PRNGKey(0), (5,))
  ids, num = R.layer_ids_from_params(params)
  assert num == 2 and ids.shape == (5 * 4 + 4 + 4 * 3 + 3,)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  marked = unravel(jnp.asarray(ids, flat.dtype))
  assert np.all(np.asarray(marked["Dense_0"]["kernel"]) == 0)
  assert np.all(np.asarray(marked["Dense_0"]["bias"]) == 0)
  assert np.all(np.asarray(marked["Dense_1"]["kernel"]) == 1)


def test_registry_and_validation_errors_name_the_field():
  agg = aggregators.get("romoa", num_clients=4, layer_sizes=(3, 2))
  state = agg.init(jnp.zeros(5))
  assert isinstance(state, aggregators.RomoaState)
  np.testing.assert_allclose(state.factors, np.full((4, 5), 0.25))
  assert "romoa" in aggregators.names()
  assert "beta" in aggregators.hparam_names("romoa")
  with pytest.raises(ValueError, match="does not take"):
    aggregators.get("romoa", num_clients=4, radius=1.0)
  with pytest.raises(ValueError, match="romoa.beta"):
    R.romoa(num_clients=4, beta=0.0)
  with pytest.raises(ValueError, match="romoa.selection_fraction"):
    R.romoa(num_clients=4, selection_fraction=1.5)
  with pytest.raises(ValueError, match="romoa.pearson"):
    R.romoa(num_clients=4, pearson="spearman")
  # Without num_clients the first update sizes the state (F_0 = 1/n).
  lazy = R.romoa(layer_sizes=(3, 2))
  assert lazy.init(jnp.zeros(5)).factors.shape == (0, 5)
  out, lazy_state, _ = jax.jit(lazy.update)(jnp.ones((4, 5)),
                                            lazy.init(jnp.zeros(5)))
  assert lazy_state.factors.shape == (4, 5)
  np.testing.assert_allclose(out, 1.0)
  with pytest.raises(ValueError, match="d=5"):
    R.romoa(layer_sizes=(2, 2), num_clients=2).init(jnp.zeros(5))
  with pytest.raises(ValueError, match="state was built"):
    agg.update(jnp.ones((3, 5)), state)


def test_identical_colluders_can_capture_the_majority_centroid():
  # Documented limitation of choice 2: the "most populated" cluster is the
  # densest ball. Seven honest measurements spread over [0.2, 0.8] and three
  # identical colluders at -0.5: the bandwidth (mean distance to the 3rd
  # nearest point, self included) is small, so the colluders' ball holds the
  # most points and the centroid is theirs; honest clients get f < 0.
  honest = np.linspace(0.2, 0.8, 7)
  x = np.concatenate([[-0.5] * 3, honest]).astype(np.float32)
  mode = R.cluster_modes(jnp.asarray(x)[:, None], jnp.ones(10, bool))[0]
  np.testing.assert_allclose(mode, -0.5, atol=1e-6)
  np.testing.assert_allclose(mode, _ref_mode(x), atol=1e-6)
