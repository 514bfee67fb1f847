"""ALIE, IPM and Mimic: hand-computed cases and the papers' formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from robustfl_jax import attacks


def test_alie_z_max_paper_and_blades_for_50_clients_10_byzantine():
  # s = floor(50 / 2 + 1) - 10 = 16. Paper (Algorithm 1): Phi(z) < (n - s) / n
  # = 34 / 50; Blades: Phi^-1((n - f - s) / (n - f)) = Phi^-1(0.6).
  z = attacks.alie_z_max(50, 10)
  assert z == pytest.approx(stats.norm.ppf(34 / 50), abs=1e-9)
  assert z == pytest.approx(0.467698799, abs=1e-6)
  blades = attacks.alie_z_max(50, 10, "blades")
  assert blades == pytest.approx(0.253347103, abs=1e-6)
  assert z - blades > 0.2


def test_alie_z_max_issue_figures_20_4_and_10_1():
  assert attacks.alie_z_max(20, 4) == pytest.approx(0.3853, abs=1e-4)
  assert attacks.alie_z_max(20, 4, "blades") == pytest.approx(0.1573, abs=1e-4)
  assert attacks.alie_z_max(10, 1) == pytest.approx(0.0, abs=1e-9)
  assert attacks.alie_z_max(10, 1, "blades") < 0  # the Blades sign flip


@pytest.mark.parametrize("n,f", [(50, 10), (20, 3), (11, 5), (7, 1), (10, 1)])
def test_alie_z_max_formula(n, f):
  s = math.floor(n / 2 + 1) - f
  assert attacks.alie_z_max(n, f) == pytest.approx(
      stats.norm.ppf((n - s) / n), abs=1e-9)
  assert attacks.alie_z_max(n, f, "blades") == pytest.approx(
      stats.norm.ppf((n - f - s) / (n - f)), abs=1e-9)


def test_alie_z_max_edge_cases_stay_finite():
  # Byzantine majority: no supporter needed, s is clamped to 1.
  assert attacks.alie_z_max(10, 8, "blades") == pytest.approx(
      stats.norm.ppf(1 / 2), abs=1e-9)
  assert attacks.alie_z_max(10, 8) == pytest.approx(stats.norm.ppf(0.9),
                                                    abs=1e-9)
  for formula in ("paper", "blades"):
    assert attacks.alie_z_max(10, 9, formula) == 0.0
    assert attacks.alie_z_max(10, 10, formula) == 0.0


def test_alie_options_validate():
  updates, mask = jnp.ones((3, 2)), jnp.array([True, False, False])
  with pytest.raises(ValueError, match="z_formula"):
    attacks.alie(None, updates, mask, z_formula="fltrust")
  with pytest.raises(ValueError, match="stats_from"):
    attacks.alie(None, updates, mask, stats_from="all")
  with pytest.raises(ValueError, match="z_formula"):
    attacks.alie_z_max(5, 1, "x")


def test_alie_byzantine_statistics_use_the_attackers_own_rows():
  updates = jnp.array([[1.0, 0.0], [3.0, 4.0], [10.0, 10.0], [20.0, 30.0]])
  mask = jnp.array([True, True, False, False])
  out = attacks.alie(None, updates, mask, z=1.0, stats_from="byzantine")
  # own mean (2, 2), std (1, 2): (1, 0); the honest statistics give
  # mean (15, 20) - std (5, 10) = (10, 10).
  np.testing.assert_allclose(out[:2], [[1.0, 0.0], [1.0, 0.0]])
  np.testing.assert_allclose(out[2:], updates[2:])
  honest = attacks.alie(None, updates, mask, z=1.0)
  np.testing.assert_allclose(honest[:2], [[10.0, 10.0], [10.0, 10.0]])


def test_alie_z_max_validates():
  with pytest.raises(ValueError, match="num_byzantine <= num_clients"):
    attacks.alie_z_max(5, 6)
  with pytest.raises(ValueError, match="num_clients >= 1"):
    attacks.alie_z_max(0, 0)


def test_alie_uses_z_max_from_a_traced_mask():
  n, d = 50, 4
  updates = jnp.asarray(np.random.default_rng(0).normal(size=(n, d)), jnp.float32)
  mask = jnp.arange(n) % 5 == 0          # 10 Byzantine rows
  out = jax.jit(attacks.alie)(None, updates, mask)
  honest = np.asarray(updates)[~np.asarray(mask)]
  mean, std = honest.mean(0), honest.std(0)
  z_used = (mean - np.asarray(out)[0]) / std
  np.testing.assert_allclose(z_used, stats.norm.ppf(34 / 50), rtol=1e-4)
  static = attacks.alie(None, updates, mask, num_byzantine=10)
  np.testing.assert_allclose(static, out, rtol=1e-5, atol=1e-6)
  blades = jax.jit(lambda u, m: attacks.alie(None, u, m, z_formula="blades"))(
      updates, mask)
  np.testing.assert_allclose((mean - np.asarray(blades)[0]) / std,
                             stats.norm.ppf(0.6), rtol=1e-4)


def test_alie_hand_case():
  updates = jnp.array([[100.0, 0.0], [1.0, 2.0], [3.0, 6.0]])
  mask = jnp.array([True, False, False])
  out = attacks.alie(None, updates, mask, z=1.5)
  # honest mean (2, 4), population std (1, 2): mean - 1.5 std = (0.5, 1.0).
  np.testing.assert_allclose(out, [[0.5, 1.0], [1.0, 2.0], [3.0, 6.0]])
  with pytest.raises(ValueError, match="num_byzantine <= n"):
    attacks.alie(None, updates, mask, num_byzantine=4)


def test_alie_all_byzantine_uses_all_rows():
  updates = jnp.array([[1.0], [3.0]])
  out = attacks.alie(None, updates, jnp.array([True, True]), z=1.0)
  np.testing.assert_allclose(out, [[1.0], [1.0]])   # mean 2, std 1


def test_ipm_reverses_the_honest_mean():
  updates = jnp.array([[9.0, 9.0], [1.0, 2.0], [3.0, 6.0]])
  mask = jnp.array([True, False, False])
  np.testing.assert_allclose(
      attacks.ipm(None, updates, mask, epsilon=0.5), [[-1.0, -2.0], [1.0, 2.0], [3.0, 6.0]])
  out = attacks.ipm(None, updates, mask)
  honest_mean = jnp.array([2.0, 4.0])
  assert float(out[0] @ honest_mean) < 0


def test_mimic_copies_the_honest_row_farthest_along_the_top_direction():
  # Honest rows spread mostly along e0; row 3 is the extreme one on that axis.
  updates = jnp.array([
      [50.0, 50.0, 50.0],   # Byzantine
      [0.0, 0.1, 0.0],
      [1.0, -0.1, 0.0],
      [-4.0, 0.0, 0.1],
      [2.0, 0.0, -0.1],
      [1.0, 0.2, 0.0],
  ])
  mask = jnp.array([True, False, False, False, False, False])
  assert int(attacks.mimic_target(updates, mask)) == 3
  out = attacks.mimic(None, updates, mask)
  np.testing.assert_array_equal(out[0], updates[3])
  np.testing.assert_array_equal(out[1:], updates[1:])


def test_mimic_target_matches_a_covariance_eigendecomposition():
  rng = np.random.default_rng(0)
  for trial in range(3):
    updates = rng.normal(size=(9, 6)) * rng.uniform(0.2, 3.0, size=6)
    mask = np.zeros(9, bool)
    mask[[0, 4]] = True
    honest = np.flatnonzero(~mask)
    centred = updates[honest] - updates[honest].mean(0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    expected = honest[np.argmax(np.abs(centred @ vecs[:, -1]))]
    chosen = attacks.mimic_target(jnp.asarray(updates, jnp.float32), jnp.asarray(mask))
    assert int(chosen) == expected


def test_mimic_static_target():
  updates = jnp.arange(12.0).reshape(4, 3)
  mask = jnp.array([False, True, True, False])
  out = attacks.mimic(None, updates, mask, target=3)
  np.testing.assert_array_equal(out[1], updates[3])
  np.testing.assert_array_equal(out[2], updates[3])
  with pytest.raises(ValueError, match="0 <= target < n"):
    attacks.mimic(None, updates, mask, target=4)
