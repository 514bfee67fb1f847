"""The jitted round: FedAvg arithmetic, attacks, NaN safety, one trace."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustfl_jax import aggregators as agg
from robustfl_jax import attacks
from robustfl_jax import fl


def _setup(tiny_problem, aggregator=None, attack=None, scorer=None,
           client_momentum=0.0, num_byzantine=2, server_opt=None):
  _, cd, model, params = tiny_problem
  aggregator = aggregator or agg.get("mean")
  server_opt = server_opt or optax.sgd(1.0)
  round_fn = fl.make_round_fn(
      model.apply, params, client_optimizer=optax.sgd(0.2),
      server_optimizer=server_opt, aggregator=aggregator,
      num_clients=cd.num_clients, max_examples=cd.max_examples, batch_size=16,
      local_epochs=1, attack=attack, scorer=scorer,
      client_momentum=client_momentum)
  byz = np.zeros(cd.num_clients, bool)
  byz[:num_byzantine] = True
  data = fl.FederatedData(jnp.asarray(cd.x), jnp.asarray(cd.y),
                          jnp.asarray(cd.count), jnp.asarray(byz))
  state = fl.init_server_state(params, server_opt, aggregator, cd.num_clients,
                               jax.random.PRNGKey(0), client_momentum)
  return round_fn, state, data, model


def _flat(tree):
  return jax.flatten_util.ravel_pytree(tree)[0]


def test_fedavg_round_applies_the_mean_delta(tiny_problem):
  round_fn, state, data, model = _setup(tiny_problem)
  _, cd, _, params = tiny_problem
  key = fl.round_key(state)
  new_state, metrics = jax.jit(round_fn)(state, data, key)
  train = jax.jit(fl.make_local_train(model.apply, optax.sgd(0.2),
                                      max_examples=cd.max_examples,
                                      batch_size=16))
  train_key = jax.random.split(key, 3)[0]
  deltas = [_flat(train(params, cd.x[c], cd.y[c], cd.count[c],
                        jax.random.fold_in(train_key, c)).delta)
            for c in range(cd.num_clients)]
  expected = _flat(params) + np.mean(deltas, axis=0)
  np.testing.assert_allclose(_flat(new_state.params), expected, rtol=1e-5,
                             atol=1e-6)
  assert int(new_state.round) == 1
  assert int(metrics["num_rejected"]) == 0


def test_round_compiles_once_and_is_deterministic(tiny_problem):
  round_fn, state, data, _ = _setup(tiny_problem)
  traced = jax.jit(chex.assert_max_traces(round_fn, n=1))
  s = state
  for _ in range(3):
    s, _ = traced(s, data, fl.round_key(s))
  again = state
  for _ in range(3):
    again, _ = traced(again, data, fl.round_key(again))
  np.testing.assert_array_equal(_flat(s.params), _flat(again.params))
  assert int(s.round) == 3


def test_non_finite_attack_never_reaches_the_model(tiny_problem):
  round_fn, state, data, _ = _setup(
      tiny_problem, attack=attacks.get("non_finite"), num_byzantine=2)
  state, metrics = jax.jit(round_fn)(state, data, fl.round_key(state))
  assert bool(jnp.all(jnp.isfinite(_flat(state.params))))
  assert int(metrics["num_nonfinite"]) == 2
  # The rows were rejected: both Byzantine clients flagged, no honest one.
  assert float(metrics["tpr"]) == 1.0 and float(metrics["fpr"]) == 0.0


def test_all_rejected_round_leaves_params_unchanged(tiny_problem):
  round_fn, state, data, _ = _setup(
      tiny_problem, attack=attacks.get("non_finite"), num_byzantine=6,
      server_opt=optax.sgd(1.0, momentum=0.9))
  before = _flat(state.params)
  state, metrics = jax.jit(round_fn)(state, data, fl.round_key(state))
  np.testing.assert_array_equal(_flat(state.params), before)
  assert bool(jnp.all(jnp.isfinite(_flat(state.params))))


def test_scaling_attack_breaks_mean_but_not_median(tiny_problem):
  attack = attacks.get("scaling", factor=100.0)
  honest_fn, honest_state, data, _ = _setup(tiny_problem, num_byzantine=0)
  reference, _ = jax.jit(honest_fn)(honest_state, data,
                                    fl.round_key(honest_state))
  moves = {}
  for name in ("mean", "coordinate_median"):
    fn, state, data2, _ = _setup(tiny_problem, aggregator=agg.get(name),
                                 attack=attack, num_byzantine=2)
    new, _ = jax.jit(fn)(state, data2, fl.round_key(state))
    moves[name] = float(jnp.linalg.norm(_flat(new.params)
                                        - _flat(reference.params)))
  honest_step = float(jnp.linalg.norm(_flat(reference.params)
                                      - _flat(honest_state.params)))
  assert moves["mean"] > 10 * honest_step
  assert moves["coordinate_median"] < 2 * honest_step


def test_krum_detection_rates(tiny_problem):
  fn, state, data, _ = _setup(
      tiny_problem, aggregator=agg.get("krum", num_byzantine=1),
      attack=attacks.get("scaling", factor=100.0), num_byzantine=1)
  _, metrics = jax.jit(fn)(state, data, fl.round_key(state))
  # Krum keeps one honest row: the Byzantine one is flagged (tpr 1) and
  # 4 of the 5 honest ones are not selected (fpr 0.8).
  assert float(metrics["tpr"]) == 1.0
  np.testing.assert_allclose(float(metrics["fpr"]), 0.8)


def test_scorer_exclusion_reaches_the_aggregator(tiny_problem):
  flag_first = lambda updates: jnp.arange(updates.shape[0]) == 0
  fn, state, data, _ = _setup(tiny_problem, scorer=flag_first,
                              attack=attacks.get("scaling", factor=1e4),
                              num_byzantine=1)
  new, metrics = jax.jit(fn)(state, data, fl.round_key(state))
  assert int(metrics["num_rejected"]) == 1
  assert float(metrics["tpr"]) == 1.0
  step = float(jnp.linalg.norm(_flat(new.params) - _flat(state.params)))
  assert step < 10.0  # a 1e4-scaled row would have moved it far more


def test_client_momentum_state_is_the_sent_update(tiny_problem):
  fn, state, data, _ = _setup(tiny_problem, client_momentum=0.5,
                              num_byzantine=0)
  assert state.client_state.shape[0] == 6
  s1, _ = jax.jit(fn)(state, data, fl.round_key(state))
  # First round: m = 0.5 * 0 + 0.5 * delta, and FedAvg applies mean(m).
  step = _flat(s1.params) - _flat(state.params)
  np.testing.assert_allclose(step, jnp.mean(s1.client_state, axis=0),
                             rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="client.momentum"):
    _setup(tiny_problem, client_momentum=1.0)
