"""Min-Max and Min-Sum (Shejwalkar & Houmansadr 2021): constraint and maximality."""

import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import attacks


def _direction(kind, honest):
  mean = honest.mean(0)
  if kind == "unit":
    return -mean / np.linalg.norm(mean)
  if kind == "std":
    return -honest.std(0)
  return -np.sign(mean)


def _gamma_star(objective, honest, p):
  """The largest feasible gamma, solved in closed form (float64)."""
  mean = honest.mean(0)
  pair = ((honest[:, None] - honest[None]) ** 2).sum(-1)
  a = p @ p
  if objective == "min_max":
    bound = pair.max()
    roots = []
    for u in honest:
      b = 2 * p @ (mean - u)
      c = ((mean - u) ** 2).sum() - bound
      roots.append((-b + np.sqrt(b * b - 4 * a * c)) / (2 * a))
    return min(roots)
  bound = pair.sum(1).max()
  spread = ((honest - mean) ** 2).sum()
  return np.sqrt((bound - spread) / (len(honest) * a))


def _example(seed=0, n=9, d=6, f=3):
  updates = 0.5 + jnp.asarray(np.random.default_rng(seed).normal(size=(n, d)), jnp.float32)
  mask = jnp.arange(n) >= n - f
  return updates, mask


@pytest.mark.parametrize("direction", ["unit", "std", "sign"])
@pytest.mark.parametrize("objective", ["min_max", "min_sum"])
def test_gamma_is_feasible_and_maximal(objective, direction):
  updates, mask = _example(seed=len(direction))
  out = np.asarray(attacks.get(objective, direction=direction)(None, updates, mask), np.float64)
  m = np.asarray(mask)
  honest = np.asarray(updates, np.float64)[~m]
  crafted = out[m]
  np.testing.assert_allclose(crafted, np.broadcast_to(crafted[0], crafted.shape))
  mean, p = honest.mean(0), _direction(direction, honest)
  gamma = (crafted[0] - mean) @ p / (p @ p)
  np.testing.assert_allclose(crafted[0], mean + gamma * p, rtol=1e-5, atol=1e-5)

  pair = ((honest[:, None] - honest[None]) ** 2).sum(-1)
  sq = ((crafted[0] - honest) ** 2).sum(-1)
  if objective == "min_max":
    assert sq.max() <= pair.max() * (1 + 1e-5)
  else:
    assert sq.sum() <= pair.sum(1).max() * (1 + 1e-5)
  # Maximal up to the search tolerance (1e-5) and float32 rounding.
  expected = _gamma_star(objective, honest, p)
  assert 0 < expected < 20
  assert gamma == pytest.approx(expected, abs=1e-4)


def test_search_is_capped_at_twice_gamma_init():
  updates, mask = _example()
  out = attacks.min_max(None, updates, mask, gamma_init=0.01)
  honest = np.asarray(updates)[~np.asarray(mask)]
  p = _direction("unit", honest)
  gamma = (np.asarray(out)[-1] - honest.mean(0)) @ p
  assert 0.02 - 2e-5 <= gamma < 0.02


def test_identical_honest_rows_give_their_mean():
  updates = jnp.array([[1.0, 2.0]] * 4 + [[9.0, 9.0]])
  mask = jnp.array([False] * 4 + [True])
  for name in ("min_max", "min_sum"):
    out = attacks.get(name)(None, updates, mask)
    np.testing.assert_allclose(out[-1], [1.0, 2.0], atol=1e-4)


def test_min_max_validates_hparams():
  updates, mask = _example()
  with pytest.raises(ValueError, match="direction to be one of"):
    attacks.min_max(None, updates, mask, direction="up")
  with pytest.raises(ValueError, match="gamma_init > 0"):
    attacks.min_sum(None, updates, mask, gamma_init=0.0)
  with pytest.raises(ValueError, match="max_iter"):
    attacks.min_sum(None, updates, mask, max_iter=2.5)
