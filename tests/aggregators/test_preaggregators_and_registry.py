"""NNM, bucketing, chain, and building rules by name."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_reference as ref
from robustfl_jax import aggregators as agg


def _rand(n, d, seed=0):
  return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("n,f", [(5, 1), (8, 3), (10, 0)])
def test_nnm_matches_reference(n, f):
  u = _rand(n, 6, seed=n)
  np.testing.assert_allclose(agg.nnm(u, f), ref.nnm(u, f), rtol=1e-5, atol=1e-6)


def test_nnm_hand_case_and_excluded_rows():
  u = np.array([[0.0], [1.0], [3.0], [10.0]], np.float32)
  # n - f = 2 nearest including itself: 0->{0,1}, 1->{1,0}, 3->{3,1}, 10->{10,3}
  np.testing.assert_allclose(np.asarray(agg.nnm(u, 2))[:, 0], [0.5, 0.5, 2.0, 6.5])
  v = u.copy()
  v[1] = np.nan
  out = np.asarray(agg.nnm(v, 2))[:, 0]
  assert np.isnan(out[1])
  np.testing.assert_allclose(out[[0, 2, 3]], [1.5, 1.5, 6.5])


def test_bucketing_shapes_means_and_key():
  u = _rand(10, 4)
  key = jax.random.key(3)
  out = np.asarray(agg.bucketing(key, u, 3))
  assert out.shape == (4, 4)
  # Bucket sizes 3, 3, 3, 1: the size-weighted mean of buckets is the mean.
  perm = np.asarray(jax.random.permutation(key, 10))
  expected = np.stack([u[perm[i:i + 3]].mean(0) for i in range(0, 10, 3)])
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(out, np.asarray(agg.bucketing(jax.random.key(4), u, 3)))
  one = np.asarray(agg.bucketing(key, u, 1))
  np.testing.assert_allclose(np.sort(one, axis=0), np.sort(u, axis=0))
  v = u.copy()
  v[perm[9]] = np.nan  # alone in the last bucket: the bucket is excluded
  assert np.all(np.isnan(np.asarray(agg.bucketing(key, v, 3))[3]))


def test_chain_equals_manual_composition_and_routes_hparams():
  u = _rand(11, 5)
  u[0] = 1e30
  chained = agg.chain(agg.nnm, agg.krum)(u, num_byzantine=2)
  np.testing.assert_array_equal(chained, agg.krum(agg.nnm(u, 2), 2))
  key = jax.random.key(0)
  bucket_then_median = agg.chain(functools.partial(agg.bucketing, bucket_size=2),
                                 agg.coordinate_median)
  got = bucket_then_median(u, key=key)
  k0 = jax.random.split(key, 2)[0]
  np.testing.assert_allclose(got, agg.coordinate_median(agg.bucketing(k0, u, 2)))
  with pytest.raises(ValueError, match="needs a PRNG key"):
    bucket_then_median(u)
  with pytest.raises(ValueError, match="at least one stage"):
    agg.chain()


def test_every_registered_rule_builds_runs_jitted_and_reports_info():
  u = _rand(11, 6)
  u[4] = np.nan
  mask = np.ones(11, bool)
  mask[7] = False
  hp = {"trimmed_mean": {"num_trim": 2}, "meamed": {"num_byzantine": 2},
        "krum": {"num_byzantine": 2}, "multi_krum": {"num_byzantine": 2},
        "bulyan": {"num_byzantine": 2}}
  for name in agg.names():
    a = agg.get(name, **hp.get(name, {}))
    state = a.init(jnp.zeros(6))
    out, state, info = jax.jit(a.update)(u, state, mask=mask)
    assert out.shape == (6,) and np.all(np.isfinite(np.asarray(out))), name
    assert int(info["num_nonfinite"]) == 1 and int(info["num_rejected"]) == 2, name
    np.testing.assert_array_equal(np.asarray(info["rejected"]), ~mask | (np.arange(11) == 4))


def test_registry_pre_aggregators_inherit_num_byzantine():
  u = _rand(11, 4)
  a = agg.get("krum", num_byzantine=2, pre_aggregators=("nnm", ("clip_by_norm", {"max_norm": 1.0})))
  out, _, _ = a.update(u, a.init(u[0]))
  expected = agg.krum(agg.clip_by_norm(agg.nnm(u, 2), 1.0), 2)
  np.testing.assert_array_equal(out, expected)
  b = agg.get("coordinate_median", pre_aggregators=(("bucketing", {"bucket_size": 2}),))
  out, _, info = b.update(u, b.init(u[0]), key=jax.random.key(1))
  assert out.shape == (4,)


def test_registry_errors_name_the_problem():
  with pytest.raises(ValueError, match="unknown aggregator 'krumm'"):
    agg.get("krumm")
  with pytest.raises(ValueError, match="does not take \\['num_trim'\\]"):
    agg.get("krum", num_byzantine=1, num_trim=2)
  with pytest.raises(ValueError, match="aggregator 'krum' needs num_byzantine"):
    agg.get("krum")
  with pytest.raises(ValueError, match="krum needs n > 2f \\+ 2; got n=10, f=4"):
    agg.get("krum", num_byzantine=4, num_clients=10)
  with pytest.raises(ValueError, match="unknown pre-aggregator"):
    agg.get("mean", pre_aggregators=("nope",))
  # Bucketing 20 clients by 4 leaves 5 buckets: too few for Krum with f=2.
  with pytest.raises(ValueError, match="got n=5, f=2"):
    agg.get("krum", num_byzantine=2, num_clients=20,
            pre_aggregators=(("bucketing", {"bucket_size": 4}),))
  agg.validate("trimmed_mean", 10, num_trim=4)
  with pytest.raises(ValueError, match="2\\*num_trim < n"):
    agg.validate("trimmed_mean", 10, num_trim=5)


def test_weights_reach_weighted_rules_through_the_registry():
  u = np.array([[0.0], [1.0], [2.0]], np.float32)
  a = agg.get("median")
  out, _, _ = a.update(u, a.init(u[0]), weights=jnp.array([1.0, 1.0, 5.0]))
  assert float(out[0]) == 2.0
  m = agg.get("mean")
  out, _, info = m.update(u, m.init(u[0]), weights=jnp.array([1.0, 0.0, 1.0]))
  assert float(out[0]) == 1.0
  np.testing.assert_allclose(info["weights"], [0.5, 0.0, 0.5])


def test_hparam_names_lists_what_get_accepts():
  assert agg.hparam_names("multi_krum") == ["num_byzantine", "num_selected"]
  assert agg.hparam_names("centered_clipping") == ["num_iters", "radius"]
  assert agg.hparam_names("mean") == []
  with pytest.raises(ValueError, match="unknown aggregator"):
    agg.hparam_names("nope")
