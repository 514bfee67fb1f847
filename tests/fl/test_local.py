"""Local training: padding, FedSGD equivalence, vmap equals a loop."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustfl_jax import fl


def _flat(tree):
  return jax.flatten_util.ravel_pytree(tree)[0]


def test_fedsgd_is_one_full_gradient_step(tiny_problem):
  _, cd, model, params = tiny_problem
  lr = 0.5
  train = fl.make_local_train(model.apply, optax.sgd(lr),
                              max_examples=cd.max_examples, batch_size=8,
                              mode="fedsgd")
  x, y, n = cd.x[0], cd.y[0], int(cd.count[0])
  result = jax.jit(train)(params, x, y, n, jax.random.PRNGKey(0))

  def loss(p):
    logits = model.apply({"params": p}, x[:n])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y[:n]).mean()

  grad = jax.grad(loss)(params)
  np.testing.assert_allclose(_flat(result.delta), -lr * _flat(grad),
                             rtol=1e-4, atol=1e-6)
  assert int(result.num_steps) == 1


def test_padding_does_not_change_full_batch_training(tiny_problem):
  _, cd, model, params = tiny_problem
  x, y, n = cd.x[1], cd.y[1], int(cd.count[1])
  key = jax.random.PRNGKey(3)
  exact = fl.make_local_train(model.apply, optax.sgd(0.3), max_examples=n,
                              batch_size=n, local_epochs=3)
  padded = fl.make_local_train(model.apply, optax.sgd(0.3),
                               max_examples=n + 17, batch_size=n + 17,
                               local_epochs=3)
  xp = jnp.concatenate([x[:n], 1e3 * jnp.ones((17,) + x.shape[1:])])
  yp = jnp.concatenate([y[:n], jnp.full((17,), 9, y.dtype)])
  a = exact(params, x[:n], y[:n], n, key)
  b = padded(params, xp, yp, n, key)
  np.testing.assert_allclose(_flat(a.delta), _flat(b.delta), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)


def test_steps_follow_the_client_size(tiny_problem):
  _, cd, model, params = tiny_problem
  batch, epochs = 8, 2
  train = jax.jit(fl.make_local_train(model.apply, optax.sgd(0.1),
                                      max_examples=cd.max_examples,
                                      batch_size=batch, local_epochs=epochs))
  for count in (0, 5, 20, 50):
    result = train(params, cd.x[0], cd.y[0], count, jax.random.PRNGKey(0))
    assert int(result.num_steps) == epochs * -(-count // batch)
    if count == 0:
      assert float(jnp.max(jnp.abs(_flat(result.delta)))) == 0.0
      assert float(result.loss) == 0.0


def test_vmap_over_clients_equals_a_loop(tiny_problem):
  _, cd, model, params = tiny_problem
  train = fl.make_local_train(model.apply, optax.sgd(0.1, momentum=0.9),
                              max_examples=cd.max_examples, batch_size=16,
                              local_epochs=2)
  keys = jax.random.split(jax.random.PRNGKey(1), cd.num_clients)
  batched = jax.jit(jax.vmap(train, in_axes=(None, 0, 0, 0, 0)))(
      params, cd.x, cd.y, cd.count, keys)
  one = jax.jit(train)
  for c in range(cd.num_clients):
    single = one(params, cd.x[c], cd.y[c], cd.count[c], keys[c])
    np.testing.assert_allclose(_flat(single.delta),
                               _flat(jax.tree.map(lambda t: t[c], batched.delta)),
                               rtol=2e-5, atol=1e-6)


def test_local_training_lowers_the_loss(tiny_problem):
  _, cd, model, params = tiny_problem
  train = jax.jit(fl.make_local_train(
      model.apply, optax.sgd(0.3), max_examples=cd.max_examples, batch_size=10,
      local_epochs=5))
  first = train(params, cd.x[2], cd.y[2], cd.count[2], jax.random.PRNGKey(0))
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  assert first.delta.shape == flat.shape  # deltas come flat, in ravel order
  trained = unravel(flat + first.delta)
  second = train(trained, cd.x[2], cd.y[2], cd.count[2], jax.random.PRNGKey(1))
  assert float(second.loss) < float(first.loss)


def test_errors_name_the_setting():
  apply = lambda *a, **k: None
  with pytest.raises(ValueError, match="client.mode"):
    fl.make_local_train(apply, optax.sgd(0.1), max_examples=4, batch_size=2,
                        mode="fedprox")
  with pytest.raises(ValueError, match="local_epochs"):
    fl.make_local_train(apply, optax.sgd(0.1), max_examples=4, batch_size=2,
                        local_epochs=0)
  with pytest.raises(ValueError, match="unknown optimizer"):
    fl.make_optimizer("lamb", 0.1)


def test_masked_cross_entropy_ignores_padding_and_empty():
  logits = jnp.array([[2.0, 0.0], [0.0, 5.0], [9.0, -9.0]])
  labels = jnp.array([0, 1, 1])
  full = fl.masked_cross_entropy(logits[:2], labels[:2], jnp.array([True, True]))
  masked = fl.masked_cross_entropy(logits, labels, jnp.array([True, True, False]))
  np.testing.assert_allclose(full, masked, rtol=1e-6)
  assert float(fl.masked_cross_entropy(logits, labels, jnp.zeros(3, bool))) == 0.0
