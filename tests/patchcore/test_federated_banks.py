"""Federated memory banks: strategies, robustness, client scoring, config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import patchcore
from robustfl_jax.patchcore import RobustnessConfig

N_CLIENTS, M, D = 5, 60, 8


def _coresets(seed=0):
  rng = np.random.default_rng(seed)
  # Honest patches: non-negative-mean features, as after a backbone.
  return jnp.asarray(rng.normal(1.0, 0.3, size=(N_CLIENTS, M, D)), jnp.float32)


BYZ = jnp.array([True, False, False, False, False])


def _honest_range(coresets):
  honest = np.asarray(coresets[1:]).reshape(-1, D)
  return honest.min(axis=0), honest.max(axis=0)


def test_config_validation_only_when_enabled():
  RobustnessConfig(enabled=False, trim_fraction=0.9, aggregation_method="bogus")
  for bad in [dict(aggregation_method="mean"), dict(num_byzantine=-1), dict(trim_fraction=0.0),
              dict(trim_fraction=0.5), dict(client_scoring_method="lof"),
              dict(zscore_threshold=0.0),
              dict(aggregation_method="filtered_coreset", client_scoring_method="none")]:
    with pytest.raises(ValueError):
      RobustnessConfig(enabled=True, **bad)
  assert RobustnessConfig().strategy == "federated_coreset"
  assert RobustnessConfig(enabled=True, aggregation_method="trimmed_mean").strategy == "trimmed_mean"


def test_num_trim_really_trims():
  assert patchcore.num_trim_for(5, 0.1) == 1
  assert patchcore.num_trim_for(10, 0.1, num_byzantine=3) == 3
  with pytest.raises(ValueError, match="2 \\* num_trim < n"):
    patchcore.num_trim_for(4, 0.4, num_byzantine=2)


@pytest.mark.parametrize("attack", ["scaling", "gaussian_noise", "sign_flip", "non_finite"])
@pytest.mark.parametrize("rule", ["coordinate_median", "trimmed_mean"])
def test_coordinatewise_banks_stay_in_honest_range_under_attack(attack, rule):
  clean = _coresets()
  kwargs = {"value": "nan"} if attack == "non_finite" else {}
  poisoned = patchcore.attack_coresets(jax.random.key(1), clean, BYZ, attack, **kwargs)
  assert not np.allclose(np.asarray(poisoned[0]), np.asarray(clean[0]), equal_nan=False)
  config = RobustnessConfig(enabled=True, aggregation_method=rule, client_scoring_method="none")
  bank, info = patchcore.build_global_bank(jax.random.key(2), poisoned, 200, config)
  assert bank.shape == (20, D) and np.isfinite(np.asarray(bank)).all()
  lo, hi = _honest_range(clean)
  assert np.all(np.asarray(bank) >= lo - 1e-5) and np.all(np.asarray(bank) <= hi + 1e-5)


def test_trimmed_mean_bank_differs_from_mean_and_median():
  from robustfl_jax import aggregators as agg
  clean = _coresets()
  key = jax.random.key(3)
  trimmed = patchcore.coordinatewise_bank(key, clean, 100, "trimmed_mean", num_trim=1)
  median = patchcore.coordinatewise_bank(key, clean, 100, "coordinate_median")
  flat = patchcore.sample_per_client(key, clean, 10).reshape(N_CLIENTS, -1)
  mean = agg.mean(flat).reshape(10, D)
  assert not np.allclose(trimmed, mean) and not np.allclose(trimmed, median)


def test_federated_coreset_without_defence_is_displaced_and_filter_is_not():
  clean = _coresets()
  poisoned = patchcore.attack_coresets(jax.random.key(1), clean, BYZ, "scaling")
  bank, info = patchcore.build_global_bank(jax.random.key(0), poisoned, 100, RobustnessConfig())
  norms = np.linalg.norm(np.asarray(bank), axis=1)
  # Greedy k-center picks the far-away poison first: all 60 scaled patches enter.
  assert np.sum(norms > 20) == M and info["client_scores"] is None
  config = RobustnessConfig(enabled=True, aggregation_method="filtered_coreset",
                            client_scoring_method="robust_zscore")
  bank, info = patchcore.build_global_bank(jax.random.key(0), poisoned, 100, config)
  assert np.asarray(info["kept"]).tolist() == [False, True, True, True, True]
  assert np.linalg.norm(np.asarray(bank), axis=1).max() < 20


@pytest.mark.parametrize("attack", ["scaling", "gaussian_noise", "sign_flip"])
def test_robust_scoring_flags_seed_attacks_but_seed_zscore_cannot(attack):
  poisoned = patchcore.attack_coresets(jax.random.key(1), _coresets(), BYZ, attack)
  robust = patchcore.score_clients(poisoned, "robust_zscore", 3.0)
  assert np.asarray(robust.is_outlier).tolist() == [True, False, False, False, False]
  seed = patchcore.score_clients(poisoned, "zscore", 3.0, cross_client=False)
  # One outlier among 5 clients has |z| <= sqrt(4) = 2 < 3 under the seed's rule.
  assert not np.asarray(seed.is_outlier).any()
  assert robust.z.shape == (N_CLIENTS, len(patchcore.CLIENT_METRICS))


def test_clean_clients_are_not_flagged_and_nan_client_is():
  clean = _coresets(5)
  assert not np.asarray(patchcore.score_clients(clean, "robust_zscore").is_outlier).any()
  nan = clean.at[2, 3, 1].set(jnp.nan)
  scores = patchcore.score_clients(nan, "robust_zscore")
  assert np.asarray(scores.is_outlier).tolist() == [False, False, True, False, False]
  bank = patchcore.federated_coreset(jax.random.key(0), nan, 50)
  assert np.isfinite(np.asarray(bank)).all() and bank.shape == (50, D)


def test_local_coresets_shapes_and_small_clients():
  rng = np.random.default_rng(0)
  feats = [rng.normal(size=(100, D)).astype(np.float32), rng.normal(size=(7, D)).astype(np.float32)]
  out = patchcore.local_coresets(jax.random.key(0), feats, 20)
  assert out.shape == (2, 20, D)
  # The small client sends all its patches (padded by repeats).
  assert {r.tobytes() for r in np.asarray(out[1])} == {r.tobytes() for r in feats[1]}
