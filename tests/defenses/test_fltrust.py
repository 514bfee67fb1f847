"""FLTrust: trust scores and weights on hand-made updates, the Aggregator."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustfl_jax import defenses
from robustfl_jax.models import MLP

# One compile per shape for all the hand-made cases.
_aggregate = jax.jit(defenses.fltrust_aggregate)


def test_weights_on_hand_made_updates():
  g0 = jnp.array([2.0, 0.0])
  updates = jnp.array([[4.0, 0.0],      # cos 1
                       [0.0, 3.0],      # orthogonal: cos 0
                       [-1.0, 0.0],     # opposite: ReLU(-1) = 0
                       [1.0, 1.0],      # cos 1/sqrt(2)
                       [jnp.nan, 0.0],  # non-finite: trust 0
                       [0.0, 0.0]])     # zero: trust 0
  out, info = _aggregate(updates, g0)
  c = 1 / np.sqrt(2)
  np.testing.assert_allclose(info["trust"], [1, 0, 0, c, 0, 0], atol=1e-6)
  np.testing.assert_allclose(info["weights"], np.array([1, 0, 0, c, 0, 0]) / (1 + c),
                             atol=1e-6)
  # Rescaled to |g0| = 2: [2, 0] and 2 * [1, 1] / sqrt(2).
  expected = (1 * np.array([2.0, 0.0]) + c * np.array([np.sqrt(2), np.sqrt(2)])) / (1 + c)
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  np.testing.assert_array_equal(info["selected"], [True, False, False, True, False, False])
  assert int(info["num_nonfinite"]) == 1


def test_aggregate_norm_is_bounded_by_the_server_update_norm():
  rng = np.random.default_rng(0)
  for _ in range(5):
    g0 = jnp.asarray(rng.normal(size=7), jnp.float32)
    updates = jnp.asarray(rng.normal(size=(9, 7)) * rng.choice([1e-3, 1, 1e6], size=(9, 1)),
                          jnp.float32)
    out, _ = _aggregate(updates, g0)
    assert float(jnp.linalg.norm(out)) <= float(jnp.linalg.norm(g0)) * (1 + 1e-5)


def test_no_trust_means_no_update_and_mask_removes_rows():
  g0 = jnp.array([1.0, 0.0])
  out, info = _aggregate(-jnp.ones((3, 2)), g0)
  np.testing.assert_array_equal(out, [0.0, 0.0])
  assert float(jnp.sum(info["weights"])) == 0.0
  updates = jnp.array([[1.0, 0.0], [1.0, 0.5]])
  out, info = _aggregate(updates, g0, jnp.array([False, True]))
  np.testing.assert_allclose(info["weights"], [0.0, 1.0])
  np.testing.assert_array_equal(info["rejected"], [True, False])


def _model():
  model = MLP(hidden=(8,), num_classes=3)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))["params"]
  rng = np.random.default_rng(0)
  x = rng.normal(size=(12, 4)).astype(np.float32)
  y = (np.arange(12) % 3).astype(np.int32)
  return model, params, x, y


def test_aggregator_uses_the_server_update_from_the_root_set():
  model, params, x, y = _model()
  kw = dict(optimizer=optax.sgd(0.5), batch_size=12, local_epochs=1)
  agg = defenses.fltrust(model.apply, params, x, y, **kw)
  probe = defenses.fltrust_probe(model.apply, params, x, y, **kw)
  flat, _ = jax.flatten_util.ravel_pytree(params)
  key = jax.random.PRNGKey(3)
  noise = jnp.asarray(np.random.default_rng(1).normal(size=flat.shape), jnp.float32)

  @jax.jit
  def run(flat, key):
    g0 = probe.reference(flat, key)
    updates = jnp.stack([5 * g0, -g0, noise])
    out, _, info = agg.update(updates, agg.init(flat), key=key, global_params=flat)
    return g0, out, info

  g0, out, info = run(flat, key)
  assert float(jnp.linalg.norm(g0)) > 0
  assert float(info["trust"][0]) == pytest.approx(1.0, abs=1e-5)
  assert float(info["trust"][1]) == 0.0
  # 5 g0 is rescaled to g0; the noise row has a small positive or zero trust.
  t2 = float(info["trust"][2])
  expected = (g0 + t2 * noise * jnp.linalg.norm(g0) / jnp.linalg.norm(noise)) / (1 + t2)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="global"):
    agg.update(jnp.zeros((2, flat.shape[0])), agg.init(flat), key=key)


def test_root_set_validates_size():
  x, y = np.zeros((5, 2)), np.zeros(5)
  assert defenses.root_set(x, y, 3)[0].shape == (3, 2)
  with pytest.raises(ValueError, match=r"root_size=6 must be in \[1, 5\]"):
    defenses.root_set(x, y, 6)
