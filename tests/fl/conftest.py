"""Small shared fixtures for the simulation tests (tiny MLP, tiny data)."""

import jax
import pytest

from robustfl_jax import data, models


@pytest.fixture(scope="session")
def tiny_problem():
  """Digits split over 6 IID clients, a 64-16-10 MLP and its parameters."""
  ds = data.load_digits()
  parts = data.iid(ds.y_train[:300], 6, seed=0)
  client_data = data.to_client_data(ds.x_train[:300], ds.y_train[:300], parts)
  model = models.MLP(hidden=(16,), num_classes=10)
  params = models.init_params(model, jax.random.PRNGKey(0), (64,))
  return ds, client_data, model, params
