"""Shared fixtures: a linear model and a small MLP trained on digits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustfl_jax import data, models
from robustfl_jax.adversarial import cross_entropy, eval_logits_fn


def linear_logits(params, x):
  """A linear classifier ``x @ w + b`` on flat inputs."""
  return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


@pytest.fixture(scope="session", name="linear_logits")
def linear_logits_fixture():
  return linear_logits


@pytest.fixture(scope="session")
def trained_mlp():
  """(logits_fn, params, x_test[:128], y_test[:128]) of a 64-16-10 MLP."""
  ds = data.load_digits()
  model = models.MLP(hidden=(16,), num_classes=10)
  params = models.init_params(model, jax.random.PRNGKey(0), (64,))
  logits_fn = eval_logits_fn(model.apply)
  opt = optax.adam(1e-2)
  x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)

  @jax.jit
  def train(p):
    def step(carry, _):
      p, s = carry
      g = jax.grad(lambda q: jnp.mean(cross_entropy(logits_fn(q, x), y)))(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=120)
    return p

  params = train(params)
  return (logits_fn, params, jnp.asarray(ds.x_test[:128]),
          jnp.asarray(ds.y_test[:128]))


@pytest.fixture(scope="session")
def linear_model():
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(64, 10)), jnp.float32),
            "b": jnp.zeros((10,), jnp.float32)}
  x = jnp.asarray(rng.uniform(size=(32, 64)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, size=32), jnp.int32)
  return params, x, y
