"""The contract every attack shares: rows, shapes, dtypes, jit, registry."""


import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import attacks


def _median_rule(updates):
  return jnp.median(updates, axis=0)


# Hyper-parameters for the factories; the plain attacks use their defaults.
_FACTORY_HPARAMS = {
    "aggregator_aware": dict(rule=_median_rule, num_grid=5, num_refine=3),
    "gradient_attack": dict(rule=_median_rule, num_steps=3),
    "stealth": dict(attack=attacks.alie, alpha=0.5),
}
# Attacks on the uploads alone (the others need a data set, a model or the
# server's rule name; tests/attacks/test_targeted.py and test_strategic.py
# build them).
ALL_NAMES = tuple(
    n for n in attacks.names()
    if attacks.ATTACKS.entry(n).meta["kind"] == "update" or n in _FACTORY_HPARAMS)
# Attacks whose output is not finite by design.
_NON_FINITE_OUTPUT = {"non_finite"}


# Built once so the factories' jitted attacks compile once per shape and dtype.
_BUILT = {name: attacks.get(name, **_FACTORY_HPARAMS.get(name, {})) for name in ALL_NAMES}


def _build(name):
  return _BUILT[name]


# Tests share the shape (8, 5) so compiled attacks are reused across tests.
# Keys are "rbg": XLA's RngBitGenerator compiles much faster than threefry on
# CPU, and no attack depends on the key implementation.
def _data(n=8, d=5, dtype=jnp.float32, seed=0):
  updates = jnp.asarray(np.random.default_rng(seed).normal(size=(n, d)), jnp.float32) + 0.5
  mask = jnp.zeros(n, bool).at[jnp.array([1, 4, 6])].set(True)
  return updates.astype(dtype), mask


def test_names_cover_the_public_attacks():
  expected = {
      "sign_flip", "scaling", "gaussian_noise", "random", "zero", "non_finite",
      "model_replacement", "alie", "ipm", "fang_trimmed_mean", "fang_krum",
      "fang_deviation",
      "min_max", "min_sum", "mimic", "aggregator_aware", "gradient_attack",
      "stealth"}
  assert set(ALL_NAMES) == expected
  for name in ALL_NAMES:
    assert callable(getattr(attacks, name))
  # Targeted, strategic and data poisoning are registered like the others.
  assert set(attacks.names()) == expected | {
      "tpa", "tpa_am", "validation_evading", "distance_bounded", "label_flip",
      "targeted_flip", "backdoor"}


def test_every_attack_from_get_is_an_attack_taking_context():
  updates, mask = _data()
  key = jax.random.key(0, impl="rbg")
  for name in ALL_NAMES:
    attack = _build(name)
    assert isinstance(attack, attacks.Attack) and attack.name.endswith(name) or (
        name == "stealth" and attack.name.startswith("stealth("))
    # The round's context is accepted (and ignored by attacks that do not
    # declare it).
    out = attack(key, updates, mask, global_params=jnp.zeros(5), round=3,
                 aggregator=None)
    np.testing.assert_array_equal(out, attack(key, updates, mask))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_only_byzantine_rows_change_and_jit_equals_eager(name):
  updates, mask = _data()
  attack = _build(name)
  key = jax.random.key(3, impl="rbg")
  eager = attack(key, updates, mask)
  jitted = jax.jit(attack)(key, updates, mask)   # the mask is traced here
  assert eager.shape == updates.shape and eager.dtype == updates.dtype
  honest = np.asarray(~mask)
  np.testing.assert_array_equal(np.asarray(eager)[honest], np.asarray(updates)[honest])
  # Every Byzantine row is actually poisoned.
  changed = np.any(np.asarray(eager) != np.asarray(updates), axis=1)
  np.testing.assert_array_equal(changed, np.asarray(mask))
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_no_byzantine_rows_is_identity_and_all_byzantine_is_finite(name):
  updates, _ = _data()
  attack = _build(name)
  key = jax.random.key(1, impl="rbg")
  out = attack(key, updates, jnp.zeros(8, bool))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(updates))
  out = attack(key, updates, jnp.ones(8, bool))
  assert out.shape == updates.shape
  if name not in _NON_FINITE_OUTPUT:
    assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("dtype", ["bfloat16", "float64"])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_dtype_is_kept(name, dtype):
  with jax.enable_x64(dtype == "float64"):
    updates, mask = _data(dtype=jnp.dtype(dtype))
    out = _build(name)(jax.random.key(0, impl="rbg"), updates, mask)
    assert out.dtype == jnp.dtype(dtype)
    honest = np.asarray(~mask)
    np.testing.assert_array_equal(
        np.asarray(out.astype(jnp.float32))[honest],
        np.asarray(updates.astype(jnp.float32))[honest])
    if name not in _NON_FINITE_OUTPUT:
      assert np.all(np.isfinite(np.asarray(out.astype(jnp.float32))))


def test_float64_results_are_computed_in_float64():
  with jax.enable_x64(True):
    updates = jnp.array([[1.0], [1.0 + 1e-12], [1.0 + 3e-12]], jnp.float64)
    mask = jnp.array([True, False, False])
    out = attacks.alie(None, updates, mask, z=1.0)
    mean, std = 1.0 + 2e-12, 1e-12
    np.testing.assert_allclose(float(out[0, 0]), mean - std, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", ["alie", "min_max", "fang_krum"])
def test_one_trace_per_shape(name):
  attack = attacks.get(name)
  chex.clear_trace_counter()  # the counter is keyed by the code location

  @chex.assert_max_traces(n=1)
  def traced(key, updates, mask):
    return attack(key, updates, mask)

  jitted = jax.jit(traced)
  updates, mask = _data()
  for seed in range(3):
    jitted(jax.random.key(seed, impl="rbg"), updates + seed, jnp.roll(mask, seed))


def test_get_binds_hparams_and_rejects_bad_names():
  updates, mask = _data()
  np.testing.assert_array_equal(
      np.asarray(attacks.get("scaling", factor=3.0)(None, updates, mask)),
      np.asarray(attacks.scaling(None, updates, mask, factor=3.0)))
  with pytest.raises(ValueError, match="unknown attack 'nope'; choose one of"):
    attacks.get("nope")
  with pytest.raises(ValueError, match=r"does not take \['factr'\]"):
    attacks.get("scaling", factr=3.0)


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match=r"shape \[n, d\]"):
    attacks.sign_flip(None, jnp.zeros(3), jnp.zeros(3, bool))
  with pytest.raises(ValueError, match="byzantine_mask of shape"):
    attacks.alie(None, jnp.zeros((3, 2)), jnp.zeros(4, bool))
  with pytest.raises(ValueError, match="floating-point"):
    attacks.zero(None, jnp.zeros((3, 2), jnp.int32), jnp.zeros(3, bool))


_HYPOTHESIS_ATTACKS = ("alie", "ipm", "min_max", "min_sum", "fang_trimmed_mean",
                       "mimic", "sign_flip")


@hypothesis.settings(max_examples=10, deadline=None, derandomize=True)
@hypothesis.given(
    n=st.sampled_from([5, 8]), d=st.just(5),
    mask_bits=st.integers(0, 2**8 - 1), seed=st.integers(0, 1000),
    name=st.sampled_from(_HYPOTHESIS_ATTACKS))
def test_property_honest_rows_untouched_and_byzantine_rows_equal(n, d, mask_bits, seed, name):
  """Any shape and mask: honest rows keep their bits; the omniscient attacks
  that send one crafted vector give all Byzantine rows the same vector."""
  updates = jnp.asarray(np.random.default_rng(seed).normal(size=(n, d)), jnp.float32)
  mask = jnp.array([(mask_bits >> i) & 1 == 1 for i in range(n)])
  out = np.asarray(attacks.get(name)(jax.random.key(seed, impl="rbg"), updates, mask))
  m = np.asarray(mask)
  np.testing.assert_array_equal(out[~m], np.asarray(updates)[~m])
  assert np.all(np.isfinite(out))
  if name in ("alie", "ipm", "min_max", "min_sum", "mimic") and m.sum() > 1:
    np.testing.assert_array_equal(out[m], np.broadcast_to(out[m][0], out[m].shape))


@pytest.mark.parametrize("name", ["alie", "min_max", "fang_krum"])
def test_vmap_over_rounds_equals_a_loop(name):
  # epsilon=0 makes fang_krum deterministic: rbg draws differ under vmap.
  attack = attacks.get(name, epsilon=0.0) if name == "fang_krum" else _build(name)
  batch = [_data(seed=seed) for seed in range(2)]
  updates = jnp.stack([u for u, _ in batch])
  masks = jnp.stack([jnp.roll(m, seed) for seed, (_, m) in enumerate(batch)])
  keys = jax.random.split(jax.random.key(0, impl="rbg"), 2)
  batched = jax.vmap(attack)(keys, updates, masks)
  for i in range(2):
    np.testing.assert_allclose(batched[i], attack(keys[i], updates[i], masks[i]),
                               rtol=1e-5, atol=1e-6)
