"""Sequential (``lax.map``) and vmapped client execution give the same round."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustfl_jax import aggregators as agg
from robustfl_jax import data, fl, models
from robustfl_jax.experiments import config as config_lib
from robustfl_jax.experiments import builders as experiment


def test_map_and_vmap_rounds_agree_for_a_cnn():
  ds = data.load_digits()
  x = ds.x_train[:120].reshape(-1, 8, 8, 1)
  parts = data.iid(ds.y_train[:120], 4, seed=0)
  cd = data.to_client_data(x, ds.y_train[:120], parts)
  model = models.get("romoa_mnist_cnn", 10, (8, 8, 1))
  params = models.init_params(model, jax.random.PRNGKey(0), (8, 8, 1))
  fd = fl.FederatedData(jnp.asarray(cd.x), jnp.asarray(cd.y),
                        jnp.asarray(cd.count), jnp.zeros(4, bool))
  results = []
  for execution in ("vmap", "map"):
    aggregator = agg.get("coordinate_median")
    round_fn = jax.jit(fl.make_round_fn(
        model.apply, params, client_optimizer=optax.sgd(0.05),
        server_optimizer=optax.sgd(1.0), aggregator=aggregator,
        num_clients=4, max_examples=cd.max_examples, batch_size=16,
        client_execution=execution))
    state = fl.init_server_state(params, optax.sgd(1.0), aggregator, 4,
                                 jax.random.PRNGKey(1))
    state, metrics = round_fn(state, fd)
    results.append((jax.flatten_util.ravel_pytree(state.params)[0],
                    metrics["train_loss"]))
  (p_vmap, l_vmap), (p_map, l_map) = results
  assert not np.allclose(p_vmap, jax.flatten_util.ravel_pytree(params)[0])
  np.testing.assert_allclose(p_map, p_vmap, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(l_map, l_vmap, rtol=1e-4)


def test_unknown_execution_is_rejected():
  with pytest.raises(ValueError, match="client.execution"):
    fl.make_round_fn(lambda *a, **k: None, {"w": jnp.zeros(2)},
                     client_optimizer=optax.sgd(0.1),
                     server_optimizer=optax.sgd(1.0), aggregator=agg.get("mean"),
                     num_clients=2, max_examples=4, batch_size=2,
                     client_execution="threads")
  config = config_lib.default_config()
  config.client.execution = "threads"
  with pytest.raises(ValueError, match="client.execution"):
    experiment.validate_config(config)


def test_auto_picks_map_for_cnns_on_one_cpu_and_vmap_for_the_mlp():
  config = config_lib.default_config()
  assert experiment.client_execution(config) == "vmap"
  config.model.name = "romoa_mnist_cnn"
  expected = "map" if jax.default_backend() == "cpu" else "vmap"
  assert experiment.client_execution(config) == expected
  config.client.execution = "vmap"
  assert experiment.client_execution(config) == "vmap"
