"""Adding a part is one file: a toy rule and a toy attack, registered by this
test module, run end to end through scripts/train.py's code path with their
own new hyper-parameters set from config overrides."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import aggregators, attacks
from robustfl_jax.aggregators import base
from robustfl_jax.experiments import cli, config as config_lib
from robustfl_jax.experiments import builders


# --- The whole of "a new rule" ------------------------------------------------
def toy_shrunk_mean(updates, *, mask=None, shrink: float = 1.0):
  """The mean of the valid rows times ``shrink`` (a toy, not a robust rule)."""
  valid = base.valid_rows(updates, mask)
  rows = base.zero_invalid(updates, valid)
  out = shrink * jnp.sum(rows, 0) / jnp.maximum(jnp.sum(valid), 1)
  return out.astype(updates.dtype), {"selected": valid}


def _check_toy(n, shrink=1.0):
  if not shrink > 0:
    raise ValueError(f"toy_shrunk_mean needs shrink > 0; got shrink={shrink}.")


# --- The whole of "a new attack" ----------------------------------------------
def toy_shift(key, updates, byzantine_mask, shift: float = 1.0):
  """Byzantine rows move by ``shift`` in every coordinate."""
  del key
  return jnp.where(byzantine_mask[:, None], updates + shift, updates)


@pytest.fixture()
def registered():
  aggregators.register_rule("toy_shrunk_mean", toy_shrunk_mean,
                            rows_check=_check_toy)
  attacks.register_attack("toy_shift", toy_shift)
  yield
  aggregators.RULES.unregister("toy_shrunk_mean")
  attacks.ATTACKS.unregister("toy_shift")


def test_new_fields_appear_in_the_config_and_parts_in_the_errors(registered):
  config = config_lib.load_config("digits_fedavg.py")
  assert config.aggregator.shrink == 1.0 and config.attack.shift == 1.0
  config.aggregator.name = "nope"
  with pytest.raises(ValueError, match="'toy_shrunk_mean'"):
    builders.validate_config(config)
  config = config_lib.load_config(
      "digits_fedavg.py", {"aggregator.name": "toy_shrunk_mean",
                           "aggregator.shrink": -1.0})
  with pytest.raises(ValueError, match=r"aggregator.shrink=-1.0|shrink > 0"):
    builders.validate_config(config)


def test_toy_rule_and_attack_train_through_the_script_path(registered, tmp_path):
  overrides = ["num_rounds=2", "eval_every=1", "num_clients=5",
               "model.hidden=(8,)", "aggregator.name=toy_shrunk_mean",
               "aggregator.shrink=0.5", "attack.name=toy_shift",
               "attack.num_byzantine=1", "attack.shift=3.0"]
  config = config_lib.load_config("digits_fedavg.py", overrides)
  workdir = str(tmp_path / "toy")
  status = cli.train_main(config, config_path="configs/digits_fedavg.py",
                          workdir=workdir)
  assert status == 0
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["rounds_completed"] == 2
  assert summary["config"]["aggregator"] == "toy_shrunk_mean"
  # The rule and the attack really ran with the values given: one round of the
  # toy pair equals the mean of the shifted updates, halved.
  exp = builders.build_experiment(config)
  state = exp.init_state()
  before = np.asarray(jnp.concatenate(
      [a.ravel() for a in jax.tree.leaves(state.params)]))
  state, _ = exp.round_fn(state, exp.data)
  after = np.asarray(jnp.concatenate(
      [a.ravel() for a in jax.tree.leaves(state.params)]))
  step = after - before
  assert exp.attack.name == "toy_shift"
  mean_config = config_lib.load_config(
      "digits_fedavg.py", [o for o in overrides if "toy" not in o
                           and "shrink" not in o and "shift" not in o]
      + ["attack.name=toy_shift", "attack.num_byzantine=1",
         "attack.shift=3.0"])
  plain = builders.build_experiment(mean_config)
  plain_state = plain.init_state()
  plain_state, _ = plain.round_fn(plain_state, plain.data)
  plain_step = np.asarray(jnp.concatenate(
      [a.ravel() for a in jax.tree.leaves(plain_state.params)])) - before
  np.testing.assert_allclose(step, 0.5 * plain_step, rtol=1e-5, atol=1e-7)
