"""Romoa's asynchronous protocol (robustfl_jax/fl/async_protocol.py)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustfl_jax import aggregators, attacks
from robustfl_jax.aggregators import base
from robustfl_jax.checkpoint import Checkpointer
from robustfl_jax.experiments import builders as experiment, config as config_lib, protocols
from robustfl_jax.fl import async_protocol
from robustfl_jax.experiments import runner
from robustfl_jax.fl import local as local_lib
from robustfl_jax.fl.round import make_round_fn
from robustfl_jax.fl.server import (FederatedData, init_server_state,
                                    params_sha256)


def _fed(client_data, num_byzantine=0):
  n = client_data.y.shape[0]
  byz = np.zeros(n, bool)
  byz[:num_byzantine] = True
  return FederatedData(jnp.asarray(client_data.x), jnp.asarray(client_data.y),
                       jnp.asarray(client_data.count), jnp.asarray(byz))


def _round(problem, aggregator, **kw):
  _, client_data, model, params = problem
  n = client_data.y.shape[0]
  opts = dict(client_optimizer=optax.sgd(0.1), server_optimizer=optax.sgd(1.0),
              aggregator=aggregator, num_clients=n,
              max_examples=client_data.max_examples, batch_size=32)
  opts.update(kw)
  fn = async_protocol.make_async_round_fn(model.apply, params, **opts)
  state = async_protocol.init_async_state(params, opts["server_optimizer"],
                                          aggregator, n, jax.random.PRNGKey(1))
  return jax.jit(fn), state


def test_moving_rate_and_global_is_the_mean_of_local_models(tiny_problem):
  _, client_data, _, params = tiny_problem
  data = _fed(client_data)
  mean = aggregators.get("mean")
  out = {}
  for gamma in (0.5, 0.25):
    fn, state = _round(tiny_problem, mean, tau=1, moving_rate=gamma,
                       lookahead=False)
    out[gamma] = fn(state, data)[0]
  bar = jax.flatten_util.ravel_pytree(out[0.5].params)[0]
  # Same training, same aggregate whatever gamma is.
  np.testing.assert_array_equal(
      bar, jax.flatten_util.ravel_pytree(out[0.25].params)[0])
  # theta_i <- theta_i - gamma (theta_i - theta_bar): the offsets from the
  # global scale with (1 - gamma).
  off_half = np.asarray(out[0.5].client_state - bar)
  off_quarter = np.asarray(out[0.25].client_state - bar)
  np.testing.assert_allclose(off_half, off_quarter * (0.5 / 0.75), atol=1e-6)
  assert np.abs(off_half).max() > 1e-4  # local models really differ
  # With tau = 1 and the mean, the global model is the mean of local models.
  np.testing.assert_allclose(out[0.5].client_state.mean(0), bar, atol=1e-6)
  flat0 = jax.flatten_util.ravel_pytree(params)[0]
  assert out[0.5].client_state.shape == (client_data.y.shape[0], flat0.size)


def test_moving_rate_one_with_uniform_weights_is_fedavg_over_tau_epochs(
    tiny_problem):
  """gamma = 1 and factors all 1/n (the mean): every round is FedAvg with tau
  local epochs. Full-batch local steps make both runs deterministic."""
  _, client_data, model, params = tiny_problem
  data = _fed(client_data)
  n, m = client_data.y.shape[0], client_data.max_examples
  mean = aggregators.get("mean")
  fn, state = _round(tiny_problem, mean, tau=3, moving_rate=1.0,
                     lookahead=False, batch_size=m)
  sync = jax.jit(make_round_fn(
      model.apply, params, client_optimizer=optax.sgd(0.1),
      server_optimizer=optax.sgd(1.0), aggregator=mean, num_clients=n,
      max_examples=m, batch_size=m, local_epochs=3))
  sync_state = init_server_state(params, optax.sgd(1.0), mean, n,
                                 jax.random.PRNGKey(1))
  for _ in range(2):
    state, _ = fn(state, data)
    sync_state, _ = sync(sync_state, data)
    a = jax.flatten_util.ravel_pytree(state.params)[0]
    b = jax.flatten_util.ravel_pytree(sync_state.params)[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # gamma = 1: every client restarts from the global model.
    np.testing.assert_allclose(state.client_state, np.tile(a, (n, 1)),
                               atol=1e-7)
  assert float(jnp.abs(a - jax.flatten_util.ravel_pytree(params)[0]).max()
               ) > 1e-3


def test_minibatch_lookahead_step_is_one_sgd_step(tiny_problem):
  _, client_data, model, params = tiny_problem
  x, y = client_data.x[0], client_data.y[0]
  count, m = client_data.count[0], client_data.max_examples
  kw = dict(max_examples=m, batch_size=8)
  key = jax.random.PRNGKey(3)
  one = local_lib.make_local_train(model.apply, optax.sgd(0.1), max_steps=1,
                                   **kw)(params, x, y, count, key)
  full = local_lib.make_local_train(model.apply, optax.sgd(0.1),
                                    **kw)(params, x, y, count, key)
  capped = local_lib.make_local_train(model.apply, optax.sgd(0.1),
                                      max_steps=10_000, **kw)(
                                          params, x, y, count, key)
  assert int(one.num_steps) == 1 and int(full.num_steps) > 1
  np.testing.assert_array_equal(capped.delta, full.delta)
  assert float(jnp.linalg.norm(one.delta)) < float(
      jnp.linalg.norm(full.delta))
  with pytest.raises(ValueError, match="max_steps"):
    local_lib.make_local_train(model.apply, optax.sgd(0.1), max_steps=0, **kw)
  # In the protocol: tau minibatch steps move the models less than tau epochs.
  data = _fed(client_data)
  moved = {}
  for unit in async_protocol.LOOKAHEAD_UNITS:
    fn, state = _round(tiny_problem, aggregators.get("mean"), tau=2,
                       lookahead=False, batch_size=8, lookahead_unit=unit)
    new, _ = fn(state, data)
    moved[unit] = float(jnp.abs(new.client_state - state.client_state).max())
  assert 0 < moved["minibatch"] < moved["epoch"]


def _counting_aggregator():
  def init(_):
    return (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def update(updates, state, *, key=None, mask=None, lookahead_step=None,
             **context):
    del key, mask, context
    valid = base.valid_rows(updates)
    info = base.base_info(valid, valid)
    return (jnp.mean(updates, 0),
            (state[0] + 1, state[1] + jnp.asarray(lookahead_step)), info)

  return base.Aggregator(init, update)


@pytest.mark.parametrize("lookahead", [True, False])
def test_lookahead_rule_sees_every_step_and_sync_rule_only_the_last(
    tiny_problem, lookahead):
  _, client_data, _, _ = tiny_problem
  fn, state = _round(tiny_problem, _counting_aggregator(), tau=3,
                     moving_rate=0.5, lookahead=lookahead)
  state, _ = fn(state, _fed(client_data))
  calls, steps = (int(x) for x in state.aggregator_state)
  assert (calls, steps) == ((3, 1 + 2 + 3) if lookahead else (1, 3))
  assert int(state.round) == 1


def _naive_mean():
  """A non-robust mean that lets NaN through (to test the round's guard)."""
  def update(updates, state, **context):
    del context
    valid = jnp.ones(updates.shape[0], bool)
    return jnp.mean(updates, 0), state, base.base_info(valid, valid)
  return base.Aggregator(lambda _: (), update)


def test_non_finite_uploads_never_reach_any_model(tiny_problem):
  _, client_data, _, params = tiny_problem
  attack = attacks.get("non_finite")
  fn, state = _round(tiny_problem, _naive_mean(), tau=2, moving_rate=0.5,
                     lookahead=False, attack=attack)
  new, metrics = fn(state, _fed(client_data, num_byzantine=2))
  assert bool(metrics["skipped"])
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  assert bool(jnp.all(jnp.isfinite(new.client_state)))
  # The library's rules drop the rows and the round goes on.
  fn, state = _round(tiny_problem, aggregators.get("mean"), tau=2,
                     moving_rate=0.5, lookahead=False, attack=attack)
  new, metrics = fn(state, _fed(client_data, num_byzantine=2))
  assert not bool(metrics["skipped"]) and int(metrics["num_nonfinite"]) == 2
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new))


def test_checkpoint_restore_resumes_bit_identically(tiny_problem, tmp_path):
  _, client_data, _, _ = tiny_problem
  agg = aggregators.get("romoa", num_clients=6)
  fn, state0 = _round(tiny_problem, agg, tau=2, moving_rate=0.3)
  data = _fed(client_data, num_byzantine=1)
  host0 = jax.device_get(state0)
  fresh = lambda: jax.tree.map(jnp.asarray, host0)
  straight = fresh()
  for _ in range(2):
    straight, _ = fn(straight, data)
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  half, _ = fn(fresh(), data)
  ckpt.save(1, half)
  restored, step = ckpt.restore_latest(fresh())
  ckpt.close()
  assert step == 1
  np.testing.assert_array_equal(restored.client_state, half.client_state)
  resumed, _ = fn(restored, data)
  assert params_sha256(resumed.params) == params_sha256(straight.params)
  np.testing.assert_array_equal(resumed.client_state, straight.client_state)
  np.testing.assert_array_equal(resumed.aggregator_state.factors,
                                straight.aggregator_state.factors)


def _config(**overrides):
  config = config_lib.default_config()
  config.num_clients = 10
  config.num_rounds = 3
  config.eval_every = 3
  config.model.hidden = (8,)
  config.client.learning_rate = 0.1
  config.protocol = "romoa_async"
  config.romoa.tau = 2
  config.aggregator.name = "romoa"
  for key, value in overrides.items():
    section = config
    parts = key.split(".")
    for p in parts[:-1]:
      section = section[p]
    section[parts[-1]] = value
  return config


def test_romoa_stops_a_x100_scaling_client_at_moving_rate_one():
  """The issue asks for the factor below 1e-3 within one round: eq. 11 does
  not allow it (F_t >= (1 - beta)^t / n = 6.25e-3 after tau = 4 steps), so
  the test checks the floor is reached every step and 1e-3 is passed in the
  second round (t = 8: 3.9e-4); accuracy within 0.03 of no attack."""
  base = {"romoa.tau": 4, "num_rounds": 6, "client.learning_rate": 0.3,
          "model.hidden": (32,)}
  runs = {}
  for name, extra in (("clean", {}), ("scaling", {
      "attack.name": "scaling", "attack.num_byzantine": 1,
      "attack.factor": 100.0})):
    exp = experiment.build_experiment(_config(**base, **extra))
    state, trace = exp.init_state(), []
    for _ in range(6):
      state, metrics = exp.round_fn(state, exp.data)
      trace.append(np.asarray(metrics["factor_mean"]))
    runs[name] = (float(exp.eval_fn(state.params)["accuracy"]), trace)
  acc_clean, _ = runs["clean"]
  acc, trace = runs["scaling"]
  assert trace[0][0] < 0.5 ** 4 / 10 * 1.1
  assert trace[1][0] < 1e-3
  assert acc_clean > 0.8 and abs(acc - acc_clean) <= 0.03, (acc, acc_clean)


def test_romoa_factors_punish_a_scaling_attacker_within_a_few_rounds():
  config = _config(**{"attack.name": "scaling", "attack.num_byzantine": 1,
                      "attack.factor": 100.0})
  exp = experiment.build_experiment(config)
  state = exp.init_state()
  n, tau = config.num_clients, config.romoa.tau
  for r in range(3):
    state, metrics = exp.round_fn(state, exp.data)
    factors = np.asarray(metrics["factor_mean"])
    # Its softmax share is ~0 at every lookahead step, so eq. 11 halves its
    # factor each step: F = (1 - beta)^t / n after t steps (the fastest
    # punishment eq. 11 allows), while honest clients keep theirs.
    bound = 0.5 ** (tau * (r + 1)) / n
    assert bound * 0.9 < factors[0] < bound * 1.1, (r, factors)
    assert factors[0] == factors.min()
    assert np.median(factors[1:]) > 3 * factors[0]


def test_config_wiring_validation_and_train_script_path(tmp_path):
  with pytest.raises(ValueError, match="protocol"):
    experiment.validate_config(_config(protocol="lockstep"))
  with pytest.raises(ValueError, match="romoa.tau"):
    experiment.validate_config(_config(**{"romoa.tau": 0}))
  with pytest.raises(ValueError, match="romoa.moving_rate"):
    experiment.validate_config(_config(**{"romoa.moving_rate": "1.5"}))
  with pytest.raises(ValueError, match="romoa.moving_rate"):
    experiment.validate_config(_config(**{"romoa.moving_rate": "fast"}))
  with pytest.raises(ValueError, match="romoa.lookahead_unit"):
    experiment.validate_config(_config(**{"romoa.lookahead_unit": "round"}))
  with pytest.raises(ValueError, match="romoa.beta"):
    experiment.validate_config(_config(**{"romoa.beta": 2.0}))
  with pytest.raises(ValueError, match="client.momentum"):
    experiment.validate_config(_config(**{"client.momentum": 0.9}))
  with pytest.raises(ValueError, match="scorer.name"):
    experiment.validate_config(_config(**{"scorer.name": "zscore"}))
  assert protocols.moving_rate(_config()) == 1.0
  assert protocols.moving_rate(_config(**{"romoa.moving_rate": "1/n"})) == 0.1
  # scripts/train.py's loop runs the asynchronous protocol end to end.
  config = _config(**{"aggregator.name": "mean", "num_rounds": 3,
                      "eval_every": 1, "checkpoint_every": 1,
                      "client.learning_rate": 0.5})
  summary = runner.train(config, str(tmp_path / "run"), log=lambda _: None,
                         plot=False).summary
  assert summary["rounds_completed"] == 3
  assert summary["final_test_accuracy"] > 0.4  # chance is 0.1


def test_rfa_baseline_uses_rfa_reference_settings():
  updates = jax.random.normal(jax.random.PRNGKey(0), (7, 5)).at[0].mul(50.0)
  rfa = aggregators.get("rfa")
  out, _, _ = rfa.update(updates, rfa.init(jnp.zeros(5)))
  expect = aggregators.geometric_median(updates, max_iter=4, smoothing=1e-5,
                                        ftol=1e-6)
  np.testing.assert_allclose(out, expect, rtol=1e-6)
  # More Weiszfeld steps move it: the 4-step budget is what RFA's code runs.
  longer = aggregators.geometric_median(updates, max_iter=100)
  assert float(jnp.abs(longer - expect).max()) > 1e-6
