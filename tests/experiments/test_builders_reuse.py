"""One Experiment can start several runs (its round function donates state)."""

import jax
import numpy as np

from robustfl_jax.experiments import config as config_lib
from robustfl_jax.experiments import builders as experiment


def test_init_state_survives_a_donating_round():
  config = config_lib.default_config()
  config.num_clients = 4
  config.model.hidden = (8,)
  exp = experiment.build_experiment(config)
  finals = []
  for _ in range(2):
    state = exp.init_state()
    state, _ = exp.round_fn(state, exp.data)
    finals.append(jax.flatten_util.ravel_pytree(state.params)[0])
  # Same start, same round key: the second run repeats the first exactly.
  np.testing.assert_array_equal(np.asarray(finals[0]), np.asarray(finals[1]))
