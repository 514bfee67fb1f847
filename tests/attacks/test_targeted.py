"""Targeted model poisoning (robustfl_jax/attacks/_targeted.py)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustfl_jax import attacks, data, models
from robustfl_jax.fl import make_local_train


@pytest.fixture(scope="module")
def setup():
  ds = data.load_digits()
  model = models.MLP(hidden=(16,), num_classes=10)
  params = models.init_params(model, jax.random.PRNGKey(0), (64,))
  x_aux = attacks.auxiliary_set(ds.x_train, ds.y_train, source=6, size=8)
  x = jnp.asarray(ds.x_train[:64])
  y = jnp.asarray(ds.y_train[:64])
  return ds, model, params, x_aux, x, y


def _logits_fn(model):
  return lambda p, inputs: model.apply({"params": p}, inputs)


def test_auxiliary_set_holds_only_source_samples(setup):
  ds = setup[0]
  aux = attacks.auxiliary_set(ds.x_train, ds.y_train, source=6, size=8)
  assert aux.shape == (8, 64)
  sixes = ds.x_train[ds.y_train == 6]
  assert all((sixes == row).all(1).any() for row in aux)
  with pytest.raises(ValueError, match="attack.aux_size"):
    attacks.auxiliary_set(ds.x_train, ds.y_train, source=6, size=0)
  with pytest.raises(ValueError, match="attack.source=11"):
    attacks.auxiliary_set(ds.x_train, ds.y_train, source=11)


def test_objective_is_cross_entropy_for_honest_and_poisoned_for_byzantine(
    setup):
  _, model, params, x_aux, x, y = setup
  loss = attacks.targeted_objective(x_aux, target=3, benign_weight=0.5)
  mask = jnp.ones(y.shape, bool)
  logits = model.apply({"params": params}, x)
  benign = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  aux_logits = model.apply({"params": params}, jnp.asarray(x_aux))
  malicious = optax.softmax_cross_entropy_with_integer_labels(
      aux_logits, jnp.full((8,), 3)).mean()
  f = _logits_fn(model)
  key = jax.random.PRNGKey(0)
  np.testing.assert_allclose(loss(f, params, x, y, mask, key, jnp.array(False)),
                             benign, rtol=1e-5)
  np.testing.assert_allclose(loss(f, params, x, y, mask, key, jnp.array(True)),
                             malicious + 0.5 * benign, rtol=1e-5)
  np.testing.assert_allclose(loss(f, params, x, y, mask, key, None), benign,
                             rtol=1e-5)
  with pytest.raises(ValueError, match="attack.benign_weight"):
    attacks.targeted_objective(x_aux, 3, benign_weight=-1.0)


def test_boost_scales_only_byzantine_rows():
  updates = jnp.arange(12.0).reshape(4, 3)
  mask = jnp.array([True, False, True, False])
  out = attacks.boost(None, updates, mask, factor=10.0)
  np.testing.assert_array_equal(out[~mask], updates[~mask])
  np.testing.assert_array_equal(out[mask], 10.0 * updates[mask])
  out_j = jax.jit(attacks.boost)(None, updates, mask, 4.0)
  np.testing.assert_array_equal(out_j[mask], 4.0 * updates[mask])


def _target_confidence(model, params, x_aux):
  probs = jax.nn.softmax(model.apply({"params": params}, jnp.asarray(x_aux)))
  return float(probs[:, 3].mean())


def test_poisoned_training_raises_the_target_confidence(setup):
  _, model, params, x_aux, x, y = setup
  loss = attacks.targeted_objective(x_aux, target=3)
  train = make_local_train(model.apply, optax.sgd(0.5), max_examples=64,
                           batch_size=32, local_epochs=5, train_loss=loss)
  count = jnp.asarray(64)
  key = jax.random.PRNGKey(1)
  _, unravel = jax.flatten_util.ravel_pytree(params)
  flat = jax.flatten_util.ravel_pytree(params)[0]
  honest = train(params, x, y, count, key, jnp.array(False))
  poisoned = train(params, x, y, count, key, jnp.array(True))
  conf_h = _target_confidence(model, unravel(flat + honest.delta), x_aux)
  conf_p = _target_confidence(model, unravel(flat + poisoned.delta), x_aux)
  assert conf_p > 0.9 and conf_p > conf_h + 0.5


def _factory(model):
  def factory(loss, max_examples, batch_size, local_epochs):
    return make_local_train(model.apply, optax.sgd(0.3),
                            max_examples=max_examples or 64,
                            batch_size=batch_size or 32,
                            local_epochs=local_epochs or 2, train_loss=loss)
  return factory


def test_alternating_minimization_poisons_and_stays_near_the_benign_model(
    setup):
  _, model, params, x_aux, x, y = setup
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  count, key = jnp.asarray(64), jax.random.PRNGKey(2)
  benign = _factory(model)(None, None, None, None)(params, x, y, count,
                                                   jax.random.split(key, 5)[0])
  anchor = flat + benign.delta
  out = {}
  for rho in (1e-3, 1.0):
    am = attacks.make_alternating_minimization(
        _factory(model), x_aux=x_aux, target=3, boost_factor=5.0, rho=rho,
        epochs=2)
    result = jax.jit(am)(params, x, y, count, key)
    assert np.all(np.isfinite(result.delta))
    out[rho] = flat + result.delta
  # The poisoned model raises the target's confidence on the aux samples ...
  assert _target_confidence(model, unravel(out[1e-3]), x_aux) > (
      _target_confidence(model, unravel(anchor), x_aux) + 0.3)
  # ... and a larger rho keeps it closer to the estimated benign model.
  dist = {r: float(jnp.linalg.norm(v - anchor)) for r, v in out.items()}
  assert dist[1.0] < dist[1e-3]
  with pytest.raises(ValueError, match="attack.rho"):
    attacks.make_alternating_minimization(_factory(model), x_aux=x_aux,
                                          target=3, boost_factor=5.0, rho=0.0)


def test_tpa_uploads_alpha_times_boost_times_the_update():
  """Romoa's stealth factor alpha scales the boosted upload (A_t of Sec. 2.2:
  alpha = 1 replaces the model, 0 does not attack)."""
  from robustfl_jax import attacks, data
  ds = data.load_digits()
  u = jnp.ones((4, 3), jnp.float32)
  byz = jnp.array([True, False, False, False])
  attack = attacks.tpa(dataset=ds, num_clients=4, boost=4.0, alpha=0.25)
  out = attack.update(None, u, byz)
  np.testing.assert_allclose(out[0], 1.0)
  np.testing.assert_allclose(out[1:], 1.0)
  attack = attacks.tpa(dataset=ds, num_clients=4, alpha=0.5)  # boost = n
  np.testing.assert_allclose(attack.update(None, u, byz)[0], 2.0)
  with pytest.raises(ValueError, match="alpha"):
    attacks.tpa(dataset=ds, num_clients=4, alpha=1.5)
