"""Mean, coordinate median, trimmed mean, Meamed and the order-statistic core."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_reference as ref
from robustfl_jax import aggregators as agg
from robustfl_jax.aggregators._order_statistics import callback_trimmed_sum, order_statistics


def _rand(n, d, seed=0):
  return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _tied_with_infinities(n, d, seed):
  rng = np.random.default_rng(seed)
  # Ties, infinities and signed zeros are where networks go wrong.
  x = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
  x[rng.random((n, d)) < 0.1] = np.inf
  x[rng.random((n, d)) < 0.1] = -np.inf
  x[rng.random((n, d)) < 0.05] = -0.0
  return x


@pytest.mark.parametrize("n", list(range(1, 20)) + [33, 64, 129, 256, 1000])
def test_every_method_gives_the_sorted_order_statistics(n):
  x = _tied_with_infinities(n, 40, n)
  ranks = tuple(sorted({0, n // 4, n // 2, (n - 1) // 2, n - 1}))
  expected = np.sort(x, axis=0)
  methods = ["sort", "callback"] + (["network"] if n <= 64 else [])
  for method in methods:
    got = order_statistics(jnp.asarray(x), ranks, method=method)
    for r, value in zip(ranks, got):
      np.testing.assert_array_equal(np.asarray(value), expected[r], err_msg=method)


@pytest.mark.parametrize("n", list(range(1, 20)) + [33])
def test_network_gives_every_rank_of_the_sort(n):
  x = _tied_with_infinities(n, 50, n)
  ranks = tuple(range(n))
  got = order_statistics(jnp.asarray(x), ranks, method="network")
  expected = np.sort(x, axis=0)
  for r in ranks:
    np.testing.assert_array_equal(np.asarray(got[r]), expected[r])


def test_callback_method_under_vmap_grad_and_batched_ranks():
  x = _rand(150, 6, seed=4)
  batch = jnp.stack([jnp.asarray(x), -jnp.asarray(x)])
  got = jax.vmap(lambda v: order_statistics(v, (3, 75), method="callback")[1])(batch)
  want = jax.vmap(lambda v: order_statistics(v, (3, 75), method="sort")[1])(batch)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # d median / d x is 1 at the element holding it (values distinct here).
  grad = jax.grad(lambda v: jnp.sum(order_statistics(v, (75,), method="callback")[0]))(
      jnp.asarray(x))
  grad_sort = jax.grad(lambda v: jnp.sum(order_statistics(v, (75,), method="sort")[0]))(
      jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(grad), np.asarray(grad_sort))
  assert float(grad.sum()) == 6.0


@pytest.mark.parametrize("n,t", [(129, 15), (256, 31), (300, 0)])
def test_callback_trimmed_sum_is_the_sorted_slice(n, t):
  """The trimmed sum off the host's sorted blocks equals the sum of the
  sorted middle (ties, +-inf and -0 included)."""
  x = _tied_with_infinities(n, 40, seed=n)
  low, high, total = callback_trimmed_sum(jnp.asarray(x), t)
  ordered = np.sort(x, axis=0)
  np.testing.assert_array_equal(np.asarray(low), ordered[t])
  np.testing.assert_array_equal(np.asarray(high), ordered[n - 1 - t])
  finite = np.all(np.isfinite(ordered[t:n - t]), axis=0)
  np.testing.assert_allclose(np.asarray(total)[finite],
                             ordered[t:n - t][:, finite].sum(axis=0, dtype=np.float64),
                             rtol=1e-6, atol=1e-4)



def test_callback_trimmed_mean_grad_and_vmap():
  """The trimmed sum's JVP is the clipped-sum formula's: grad and vmap agree
  with the sort method."""
  # Distinct finite values: the trimmed mean's gradient is the rank indicator.
  # (21 rows: the clipped-sum branch's row loop compiles slowly under grad.)
  n, t = 21, 4
  v = jnp.asarray(_rand(n, 5, seed=n))
  grads = [jax.grad(lambda u, m=m: agg.trimmed_mean(u, t, method=m).sum())(v)
           for m in ("callback", "sort")]
  np.testing.assert_allclose(np.asarray(grads[0]), np.asarray(grads[1]), atol=1e-7)
  np.testing.assert_allclose(np.asarray(grads[0]).sum(axis=0), 1.0, rtol=1e-5)
  batch = jnp.stack([v, 3 * v])
  got = jax.vmap(lambda u: agg.trimmed_mean(u, t, method="callback"))(batch)
  np.testing.assert_allclose(np.asarray(got[1]), 3 * np.asarray(got[0]), rtol=1e-5,
                             atol=1e-6)


def test_auto_method_by_backend_rows_and_devices(monkeypatch):
  from robustfl_jax.aggregators import _order_statistics as os_
  monkeypatch.setattr(os_.jax, "default_backend", lambda: "cpu")
  monkeypatch.setattr(os_.jax, "device_count", lambda: 1)
  assert os_.default_method(64) == "network" and os_.default_method(65) == "callback"
  monkeypatch.setattr(os_.jax, "device_count", lambda: 4)
  assert os_.default_method(65) == "sort"
  monkeypatch.setattr(os_.jax, "default_backend", lambda: "gpu")
  assert os_.default_method(8) == "sort"


@pytest.mark.parametrize("n", [129, 256, 1000])
def test_rules_past_the_network_agree_across_methods_with_excluded_rows(n):
  u = _rand(n, 30, seed=n)
  u[:, :10] = np.round(u[:, :10])  # ties
  u[3] = np.nan
  u[5, :4] = -np.inf
  mask = np.ones(n, bool)
  mask[[7, 11]] = False
  f = (n - 3) // 8
  keep = np.delete(u, [3, 5, 7, 11], axis=0)  # non-finite or masked
  for method in ("callback", "sort"):
    np.testing.assert_allclose(agg.coordinate_median(u, mask=mask, method=method),
                               np.median(keep, axis=0), rtol=1e-6)
    np.testing.assert_allclose(agg.trimmed_mean(u, f, mask=mask, method=method),
                               ref.trimmed_mean(keep, f), rtol=1e-5, atol=1e-6)
  # The reference breaks ties at the cut-off by index, the library shares
  # them: compare the untied columns with it, all columns across methods.
  meamed = agg.meamed(keep, f, method="callback")
  np.testing.assert_allclose(meamed[10:], ref.meamed(keep, f)[10:], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(meamed, agg.meamed(keep, f, method="sort"), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(agg.bulyan(u, f, mask=mask, method="callback"),
                             agg.bulyan(u, f, mask=mask, method="sort"), rtol=1e-5, atol=1e-6)


def test_order_statistics_rejects_bad_rank_and_method():
  with pytest.raises(ValueError, match="rank 5"):
    order_statistics(jnp.zeros((5, 2)), (5,))
  with pytest.raises(ValueError, match="method"):
    order_statistics(jnp.zeros((5, 2)), (1,), method="bogus")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 16])
def test_median_matches_numpy_odd_and_even(n):
  u = _rand(n, 9, seed=n)
  np.testing.assert_allclose(agg.coordinate_median(u), np.median(u, axis=0), rtol=1e-6)


def test_median_hand_case_even_averages_middle_values():
  u = np.array([[1.0], [10.0], [3.0], [4.0]], np.float32)
  assert float(agg.coordinate_median(u)[0]) == 3.5


@pytest.mark.parametrize("drop", [[0], [0, 3], [1, 2, 5], [0, 1, 2, 3]])
@pytest.mark.parametrize("n", [7, 8])
def test_median_ignores_nonfinite_and_masked_rows(n, drop):
  u = _rand(n, 11, seed=3)
  v = u.copy()
  v[drop[0]] = np.nan
  mask = np.ones(n, bool)
  mask[drop[1:]] = False
  keep = np.delete(u, drop, axis=0)
  for method in ("network", "sort"):
    got = agg.coordinate_median(v, mask=mask, method=method)
    np.testing.assert_allclose(got, np.median(keep, axis=0), rtol=1e-6)


def test_all_rows_excluded_gives_zeros_for_every_rule():
  u = np.full((7, 3), np.nan, np.float32)
  for fn in (agg.mean, agg.coordinate_median, lambda x: agg.trimmed_mean(x, 2),
             lambda x: agg.meamed(x, 2), lambda x: agg.krum(x, 2),
             lambda x: agg.multi_krum(x, 2, 3), lambda x: agg.bulyan(x, 1),
             agg.geometric_median, lambda x: agg.centered_clipping(x, None, 1.0)):
    np.testing.assert_array_equal(np.asarray(fn(u)), np.zeros(3, np.float32))


def test_weighted_median_hand_case_and_equal_weights():
  u = np.array([[1.0], [2.0], [3.0]], np.float32)
  assert float(agg.coordinate_median(u, weights=np.array([1.0, 1.0, 5.0]))[0]) == 3.0
  assert float(agg.coordinate_median(u, weights=np.array([3.0, 1.0, 1.0]))[0]) == 1.0
  v = _rand(8, 13)
  np.testing.assert_allclose(agg.coordinate_median(v, weights=np.full(8, 2.0)),
                             np.median(v, axis=0), rtol=1e-6)


def test_weighted_median_minimises_weighted_absolute_deviation():
  rng = np.random.default_rng(1)
  u = rng.standard_normal((9, 1)).astype(np.float32)
  w = rng.uniform(0.1, 3.0, 9)
  m = float(agg.coordinate_median(u, weights=w)[0])
  grid = np.linspace(-3, 3, 6001)
  cost = lambda z: np.sum(w * np.abs(u[:, 0] - z))
  assert cost(m) <= min(cost(z) for z in grid) + 1e-5


@pytest.mark.parametrize("n,t", [(5, 1), (7, 3), (10, 2), (16, 5), (64, 10)])
def test_trimmed_mean_matches_sorted_reference(n, t):
  u = _rand(n, 17, seed=n + t)
  for method in ("network", "sort"):
    np.testing.assert_allclose(agg.trimmed_mean(u, t, method=method),
                               ref.trimmed_mean(u, t), rtol=1e-5, atol=1e-6)


def test_trimmed_mean_with_zero_trim_is_the_mean():
  u = _rand(9, 5)
  np.testing.assert_allclose(agg.trimmed_mean(u, 0), u.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_trimmed_mean_hand_case_with_ties():
  u = np.array([[1.0], [1.0], [1.0], [5.0], [100.0]], np.float32)
  assert float(agg.trimmed_mean(u, 1)[0]) == pytest.approx((1 + 1 + 5) / 3)


def test_trimmed_mean_excludes_rows_then_falls_back_to_median():
  u = _rand(7, 4)
  v = u.copy()
  v[[0, 1]] = np.nan
  np.testing.assert_allclose(agg.trimmed_mean(v, 1), ref.trimmed_mean(u[2:], 1), rtol=1e-5)
  # 3 valid rows cannot lose 2 at each end: the limit of trimming is the median.
  v[[2, 3]] = np.inf
  np.testing.assert_allclose(agg.trimmed_mean(v, 2), np.median(u[4:], axis=0), rtol=1e-6)


def test_weighted_trimmed_mean_equal_weights_and_mass_trimming():
  u = _rand(10, 6)
  np.testing.assert_allclose(agg.trimmed_mean(u, 2, weights=np.ones(10)),
                             ref.trimmed_mean(u, 2), rtol=1e-5, atol=1e-6)
  # Weight 2 on one row is the same as that row appearing twice.
  x = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
  dup = np.array([[0.0], [1.0], [2.0], [2.0], [3.0]], np.float32)
  got = agg.trimmed_mean(x, 1, weights=np.array([1.0, 1.0, 2.0, 1.0]))
  # Trim mass 1/4 of 5 = 1.25 at each end; the weight intervals are
  # 0:[0,1] 1:[1,2] 2:[2,4] 3:[4,5], and [1.25, 3.75] is kept.
  expected = (0.75 * 1.0 + 1.75 * 2.0) / 2.5
  assert float(got[0]) == pytest.approx(expected, rel=1e-6)
  assert expected != pytest.approx(float(ref.trimmed_mean(dup, 1)[0]))


@pytest.mark.parametrize("n,f", [(5, 2), (8, 3), (11, 1), (20, 6)])
def test_meamed_matches_reference(n, f):
  u = _rand(n, 13, seed=n * f)
  for method in ("network", "sort"):
    np.testing.assert_allclose(agg.meamed(u, f, method=method), ref.meamed(u, f),
                               rtol=1e-5, atol=1e-6)


def test_meamed_zero_byzantine_is_mean_and_ties_are_symmetric():
  u = _rand(6, 3)
  np.testing.assert_allclose(agg.meamed(u, 0), u.mean(0), rtol=1e-5, atol=1e-6)
  # Median 0; distances 1 tie between -1 and +1; one slot left: they share it.
  x = np.array([[-1.0], [0.0], [0.0], [1.0], [9.0]], np.float32)
  assert float(agg.meamed(x, 2)[0]) == pytest.approx(0.0, abs=1e-7)
  perm = x[[4, 3, 2, 1, 0]]
  assert float(agg.meamed(perm, 2)[0]) == float(agg.meamed(x, 2)[0])


def test_meamed_with_excluded_rows():
  u = _rand(9, 5, seed=2)
  v = u.copy()
  v[4] = -np.inf
  np.testing.assert_allclose(agg.meamed(v, 2), ref.meamed(np.delete(u, 4, 0), 2),
                             rtol=1e-5, atol=1e-6)


def test_mean_weights_mask_and_nonfinite():
  u = _rand(6, 4)
  w = np.array([1.0, 2.0, 3.0, 0.0, 1.0, 1.0])
  np.testing.assert_allclose(agg.mean(u, w), (w[:, None] * u).sum(0) / w.sum(), rtol=1e-5)
  v = u.copy()
  v[1] = np.inf
  mask = np.array([True, True, True, True, False, True])
  keep = [0, 2, 3, 5]
  np.testing.assert_allclose(agg.mean(v, mask=mask), u[keep].mean(0), rtol=1e-5)


@pytest.mark.parametrize("call,message", [
    (lambda u: agg.trimmed_mean(u, 3), "trimmed_mean needs 2\\*num_trim < n; got n=6, num_trim=3"),
    (lambda u: agg.trimmed_mean(u, 1.5), "static Python int"),
    (lambda u: agg.trimmed_mean(u, -1), "num_trim must be >= 0"),
    (lambda u: agg.meamed(u, 3), "meamed needs n > 2f; got n=6, f=3"),
    (lambda u: agg.mean(u, np.ones(5)), "weights must have shape"),
    (lambda u: agg.coordinate_median(u, mask=np.ones(5, bool)), "mask must have shape"),
    (lambda u: agg.coordinate_median(u[0]), "shape \\[n, d\\]"),
    (lambda u: agg.coordinate_median(u.astype(np.int32)), "floating-point"),
])
def test_bad_input_raises_a_clear_value_error(call, message):
  with pytest.raises(ValueError, match=message):
    call(_rand(6, 3))


def test_median_is_fast_path_free_of_sort_on_cpu():
  """On CPU the network is used: no sort op in the compiled median."""
  if jax.default_backend() != "cpu":
    pytest.skip("CPU-specific lowering")
  text = jax.jit(agg.coordinate_median).lower(jnp.zeros((16, 8))).as_text()
  assert "sort" not in text
  text = jax.jit(lambda u: agg.coordinate_median(u, method="sort")).lower(jnp.zeros((16, 8))).as_text()
  assert "sort" in text
