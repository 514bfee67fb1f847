"""Checkpointer: round trip of the server state, corrupt steps skipped."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustfl_jax import aggregators as agg
from robustfl_jax import fl
from robustfl_jax.checkpoint import Checkpointer


def _state(seed, momentum):
  params = {"w": jnp.arange(6.0).reshape(2, 3) + seed, "b": jnp.ones(3)}
  return fl.init_server_state(params, optax.adam(1e-3),
                              agg.get("centered_clipping"), 4,
                              jax.random.PRNGKey(seed), momentum)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_round_trip_whole_state(tmp_path, momentum):
  state = _state(1, momentum).replace(round=jnp.asarray(7, jnp.int32))
  ckpt = Checkpointer(str(tmp_path))
  ckpt.save(7, state)
  restored, step = Checkpointer(str(tmp_path)).restore_latest(_state(0, momentum))
  assert step == 7
  leaves_a, tree_a = jax.tree_util.tree_flatten(state)
  leaves_b, tree_b = jax.tree_util.tree_flatten(restored)
  assert tree_a == tree_b
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype


def test_corrupt_latest_is_skipped_with_warning(tmp_path):
  ckpt = Checkpointer(str(tmp_path))
  ckpt.save(1, _state(1, 0.0))
  ckpt.save(2, _state(2, 0.0))
  # Corrupt every data file of step 2.
  for path in glob.glob(os.path.join(str(tmp_path), "2", "**", "*"),
                        recursive=True):
    if os.path.isfile(path) and "METADATA" not in path:
      with open(path, "wb") as f:
        f.write(b"\x00garbage")
  with pytest.warns(RuntimeWarning, match="step 2 .* has a changed file"):
    restored, step = Checkpointer(str(tmp_path)).restore_latest(_state(0, 0.0))
  assert step == 1
  np.testing.assert_array_equal(restored.params["w"], _state(1, 0.0).params["w"])
  # The bad step was set aside, so step 2 can be written again.
  again = Checkpointer(str(tmp_path))
  assert again.all_steps() == [1]
  again.save(2, _state(2, 0.0))
  assert again.all_steps() == [1, 2]


def test_empty_directory_restores_nothing(tmp_path):
  assert Checkpointer(str(tmp_path)).restore_latest(_state(0, 0.0)) == (None, None)


def test_restored_state_is_placed_like_its_target(tmp_path):
  """Orbax restores committed arrays; an uncommitted (one-device) target's
  leaves come back uncommitted, so a jitted round does not compile again."""
  state = _state(1, 0.9)
  Checkpointer(str(tmp_path)).save(1, state)
  target = _state(0, 0.9)
  restored, _ = Checkpointer(str(tmp_path)).restore_latest(target)
  step = jax.jit(lambda s: jax.tree.map(lambda x: x * 2, s))
  step(target)
  step(restored)
  assert step._cache_size() == 1  # pylint: disable=protected-access
  for ref, leaf in zip(jax.tree.leaves(target), jax.tree.leaves(restored)):
    assert leaf.committed == ref.committed
  committed = jax.device_put(target, jax.devices()[0])
  again, _ = Checkpointer(str(tmp_path)).restore_latest(committed)
  assert all(leaf.committed for leaf in jax.tree.leaves(again))
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
