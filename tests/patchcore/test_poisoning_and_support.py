"""Bank poisoning (defect_injection) and the patch support filter, on small synthetic banks."""

import jax
import numpy as np
import pytest

from robustfl_jax import patchcore
from robustfl_jax.patchcore import RobustnessConfig, metrics

N, M, D = 5, 80, 8
DEFECT_CENTER = np.full(D, 4.0, np.float32)
_SHIFT = np.r_[np.full(D // 2, 1.5), np.zeros(D - D // 2)].astype(np.float32)  # a non-IID client


def _honest(seed=0, shift=None):
  """Honest coresets; `shift` moves client 4 to its own region (a non-IID client)."""
  rng = np.random.default_rng(seed)
  banks = rng.normal(1.0, 0.3, size=(N, M, D)).astype(np.float32)
  if shift is not None:
    banks[4] += shift
  return banks


def _defect_images(seed=1, num=12, grid=4):
  """f32[num, grid, grid, D]: normal patches, two per image on the planted defect cluster."""
  rng = np.random.default_rng(seed)
  feats = rng.normal(1.0, 0.3, size=(num, grid * grid, D)).astype(np.float32)
  feats[:, :2] = DEFECT_CENTER + rng.normal(0, 0.2, size=(num, 2, D))
  return feats.reshape(num, grid, grid, D)


def _on_cluster(rows):
  return np.linalg.norm(np.asarray(rows) - DEFECT_CENTER, axis=-1) < 1.5


BYZ = np.array([True, False, False, False, False])


def test_select_defect_patches_takes_the_defects_not_the_normal_patches():
  picked = patchcore.select_defect_patches(jax.random.key(0), _defect_images(), _honest()[0], 10)
  assert picked.shape == (10, D)
  assert _on_cluster(picked).all()


def test_defect_injection_replaces_only_the_byzantine_tail():
  honest = _honest()
  poisoned = np.asarray(patchcore.defect_injection(jax.random.key(0), honest, BYZ,
                                                   _defect_images(), fraction=0.25))
  np.testing.assert_array_equal(poisoned[1:], honest[1:])
  np.testing.assert_array_equal(poisoned[0, :60], honest[0, :60])
  assert _on_cluster(poisoned[0, 60:]).all() and not _on_cluster(poisoned[0, :60]).any()


@pytest.mark.parametrize("bad", [dict(fraction=0.0), dict(fraction=1.5),
                                 dict(byzantine_mask=np.array([True, False]))])
def test_defect_injection_rejects_bad_settings(bad):
  kwargs = {"fraction": 0.25, "byzantine_mask": BYZ, **bad}
  with pytest.raises(ValueError, match="fraction|byzantine_mask"):
    patchcore.defect_injection(jax.random.key(0), _honest(), kwargs.pop("byzantine_mask"),
                               _defect_images(), **kwargs)


def test_injected_defects_enter_the_undefended_bank_and_hide_a_defect():
  honest = _honest()
  poisoned = patchcore.defect_injection(jax.random.key(0), honest, BYZ, _defect_images(), 0.25)
  bank = np.asarray(patchcore.federated_coreset(jax.random.key(1), poisoned, 100))
  assert _on_cluster(bank).sum() >= 5  # greedy k-center takes the far cluster early
  clean_bank = patchcore.federated_coreset(jax.random.key(1), honest, 100)
  query = DEFECT_CENTER[None]
  assert (float(patchcore.nearest_neighbor_scores(query, bank)[0])
          < 0.3 * float(patchcore.nearest_neighbor_scores(query, clean_bank)[0]))


def test_support_mask_removes_a_planted_cluster_and_keeps_a_non_iid_client():
  honest = _honest(shift=_SHIFT)
  poisoned = np.asarray(patchcore.defect_injection(jax.random.key(0), honest, BYZ,
                                                   _defect_images(), 0.25))
  # The non-IID client really is unsupported in absolute terms: far from the others.
  dist = np.asarray(patchcore.support_distances(poisoned))
  assert np.median(dist[4]) > 2 * np.median(dist[1:4])
  keep = np.asarray(patchcore.support_mask(poisoned, threshold=4.0))
  assert not keep[0, 60:].any()            # every injected patch dropped
  assert keep[0, :60].mean() >= 0.95       # the attacker's honest rows mostly kept
  assert keep[4].mean() >= 0.95            # the honest non-IID client kept
  assert keep[1:4].mean() >= 0.95


def test_support_mask_edge_cases():
  honest = _honest()
  keep = np.asarray(patchcore.support_mask(honest, kept=np.array([1, 0, 0, 0, 0], bool)))
  assert keep[0].all() and not keep[1:].any()   # a lone client: nobody can support it
  bad = honest.copy()
  bad[2, 0, 0] = np.nan
  keep = np.asarray(patchcore.support_mask(bad))
  assert not keep[2].any() and keep[[0, 1, 3, 4]].mean() > 0.9
  with pytest.raises(ValueError, match="threshold"):
    patchcore.support_mask(honest, threshold=0.0)
  with pytest.raises(ValueError, match="support_threshold"):
    RobustnessConfig(enabled=True, aggregation_method="supported_coreset", support_threshold=-1.0)


# Higher-dimensional banks, closer to real patch features: nearest-neighbour
# distances concentrate, the planted defects and the non-IID client have honest
# norms (so only the support can tell them apart).
_D2 = 32
_NON_IID = np.r_[np.full(_D2 // 2, 1.5), np.full(_D2 // 2, 0.5)].astype(np.float32)
_DEFECT2 = np.tile(np.array([1.6, 0.4], np.float32), _D2 // 2)


def _banks(fraction, seed=0):
  """(honest coresets with client 4 non-IID, the same with client 0 poisoned)."""
  rng = np.random.default_rng(seed)
  honest = rng.normal(1.0, 0.3, size=(N, M, _D2)).astype(np.float32)
  honest[4] += _NON_IID - 1.0
  images = rng.normal(1.0, 0.3, size=(12, 16, _D2)).astype(np.float32)
  images[:, :4] = _DEFECT2 + rng.normal(0, 0.2, size=(12, 4, _D2))
  poisoned = patchcore.defect_injection(jax.random.key(0), honest, BYZ,
                                        images.reshape(12, 4, 4, _D2), fraction)
  return honest, np.asarray(poisoned)


def _on_cluster2(rows):
  return np.linalg.norm(np.asarray(rows) - _DEFECT2, axis=-1) < 2.0


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_supported_coreset_removes_a_planted_cluster_and_keeps_a_non_iid_client(fraction):
  honest, poisoned = _banks(fraction)
  dist = np.asarray(patchcore.support_distances(honest))
  assert np.median(dist[4]) > 1.5 * np.median(dist[:4])  # client 4 really is far from the rest
  assert _on_cluster2(patchcore.federated_coreset(jax.random.key(1), poisoned, 100)).any()
  config = patchcore.strategy_robustness("supported_coreset", num_byzantine=1,
                                         client_scoring_method="none")
  bank, info = patchcore.build_global_bank(jax.random.key(1), poisoned, 100, config)
  assert bank.shape == (100, _D2) and not _on_cluster2(bank).any()
  np.testing.assert_array_equal(np.asarray(info["kept"]), ~BYZ)  # the non-IID client 4 kept
  assert info["num_flagged"] == 1 and info["support_z"][0] > 3.0
  _, clean_info = patchcore.build_global_bank(jax.random.key(1), honest, 100, config)
  assert np.asarray(clean_info["kept"]).all()  # no honest client excluded


def test_exclude_unsupported_respects_the_byzantine_budget():
  _, poisoned = _banks(0.5)
  kept, _ = patchcore.exclude_unsupported(poisoned, np.ones(N, bool), num_byzantine=1)
  np.testing.assert_array_equal(kept, ~BYZ)
  # Budget spent on a client dropped before (here client 1): nobody more is excluded.
  before = np.array([True, False, True, True, True])
  kept, _ = patchcore.exclude_unsupported(poisoned, before, num_byzantine=1)
  np.testing.assert_array_equal(kept, before)
  kept, _ = patchcore.exclude_unsupported(poisoned, np.ones(N, bool), num_byzantine=0)
  assert kept.all()
  share, z = patchcore.unsupported_share_scores(poisoned, kept=np.array([1, 1, 0, 0, 0], bool))
  assert (z[:2] == 0).all() and np.isneginf(z[2:]).all()  # under 3 clients: no judgement
  with pytest.raises(ValueError, match="ratio"):
    patchcore.unsupported_share_scores(poisoned, ratio=1.0)
  with pytest.raises(ValueError, match="threshold"):
    patchcore.exclude_unsupported(poisoned, kept, 1, threshold=0.0)
  with pytest.raises(ValueError, match="support_ratio"):
    RobustnessConfig(enabled=True, aggregation_method="supported_coreset", support_ratio=0.5)


def test_recall_at_fpr_threshold():
  scores = np.r_[np.arange(20.0), 5.5, 18.5, 30.0]
  labels = np.r_[np.zeros(20), np.ones(3)]
  assert metrics.threshold_at_fpr(scores, labels, 0.05) == 18.0  # one of 20 normals above
  assert metrics.recall_at_fpr(scores, labels, 0.05) == pytest.approx(2 / 3)
  assert metrics.threshold_at_fpr(scores, labels, 0.0) == 19.0
  with pytest.raises(ValueError, match="max_fpr"):
    metrics.threshold_at_fpr(scores, labels, 1.0)
