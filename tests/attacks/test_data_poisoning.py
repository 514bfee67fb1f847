"""Data poisoning touches only the Byzantine clients' real examples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import attacks, data


@pytest.fixture()
def client_data():
  ds = data.load_digits(flatten=False)
  parts = data.dirichlet(ds.y_train[:200], 5, alpha=1.0, seed=0)
  return data.to_client_data(ds.x_train[:200], ds.y_train[:200], parts)


BYZ = np.array([True, False, True, False, False])


def test_label_flip(client_data):
  out = attacks.poison_clients(client_data, BYZ, attacks.DataPoisoning("label_flip"),
                          jax.random.PRNGKey(0))
  mask = client_data.example_mask()
  for c in range(5):
    real = mask[c]
    if BYZ[c]:
      np.testing.assert_array_equal(out.y[c][real], 9 - client_data.y[c][real])
    else:
      np.testing.assert_array_equal(out.y[c], client_data.y[c])
    np.testing.assert_array_equal(out.y[c][~real], client_data.y[c][~real])
  np.testing.assert_array_equal(out.x, client_data.x)
  np.testing.assert_array_equal(attacks.label_flip(jnp.arange(10), 10),
                                jnp.arange(10)[::-1])


def test_targeted_flip_only_source(client_data):
  spec = attacks.DataPoisoning("targeted_flip", source=6, target=3)
  out = attacks.poison_clients(client_data, BYZ, spec, jax.random.PRNGKey(0))
  changed = np.asarray(out.y) != client_data.y
  assert changed.any()
  assert np.all(np.asarray(client_data.y)[changed] == 6)
  assert np.all(np.asarray(out.y)[changed] == 3)
  assert not changed[~BYZ].any()


def test_backdoor_stamps_trigger_and_target(client_data):
  spec = attacks.DataPoisoning("backdoor", target=0, fraction=1.0, trigger_size=2)
  out = attacks.poison_clients(client_data, BYZ, spec, jax.random.PRNGKey(0))
  mask = client_data.example_mask()
  x, y = np.asarray(out.x), np.asarray(out.y)
  for c in np.flatnonzero(BYZ):
    assert np.all(y[c][mask[c]] == 0)
    assert np.all(x[c][mask[c]][:, -2:, -2:, :] == 1.0)
    np.testing.assert_array_equal(x[c][mask[c]][:, :-2, :, :],
                                  client_data.x[c][mask[c]][:, :-2, :, :])
    assert np.all(x[c][~mask[c]] == 0)  # padding untouched
  np.testing.assert_array_equal(x[~BYZ], client_data.x[~BYZ])


def test_backdoor_fraction_and_flat_trigger():
  x = jnp.zeros((1000, 16))
  y = jnp.ones((1000,), jnp.int32)
  px, py = attacks.backdoor(x, y, 800, jax.random.PRNGKey(0), target=7, fraction=0.25)
  poisoned = np.asarray(py) == 7
  assert 0.18 < poisoned[:800].mean() < 0.32 and not poisoned[800:].any()
  assert np.all(np.asarray(px)[poisoned][:, -4:] == 1.0)


def test_validation_names_fields():
  with pytest.raises(ValueError, match="attack.target=12"):
    attacks.data_poisoning.validate(attacks.DataPoisoning("backdoor", target=12))
  with pytest.raises(ValueError, match="must differ"):
    attacks.data_poisoning.validate(attacks.DataPoisoning("targeted_flip", source=2,
                                                target=2))
  with pytest.raises(ValueError, match="attack.fraction"):
    attacks.data_poisoning.validate(attacks.DataPoisoning("backdoor", fraction=0.0))
