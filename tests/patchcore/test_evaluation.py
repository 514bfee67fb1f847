"""Evaluating a memory bank: image metrics, dropped non-finite rows, reweighting, row counts."""

import numpy as np
import pytest

from robustfl_jax.data.anomaly_folders import AnomalyData
from robustfl_jax.patchcore import evaluation, federated

DIM = 4


def _data(labels, severity=None, name="elpv"):
  labels = np.asarray(labels, np.int32)
  severity = labels.astype(np.float32) if severity is None else np.asarray(severity, np.float32)
  return AnomalyData(train_images=None, train_groups=None, test_images=None, test_labels=labels,
                     test_severity=severity, test_categories=None, test_masks=None, name=name)


def _features(labels, seed=0):
  """f32[M, 3, 3, d] near the origin; anomalous images get one far-away patch."""
  rng = np.random.default_rng(seed)
  feats = rng.normal(0, 0.1, (len(labels), 3, 3, DIM)).astype(np.float32)
  for i, label in enumerate(labels):
    if label:
      feats[i, 1, 2] += 5.0 + i
  return feats


def test_image_metrics_p1_only_on_elpv_with_certain_defects():
  scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8])
  severity = [0, 0, 1, 0.5, 1]
  out = evaluation.image_metrics(scores, _data([0, 0, 1, 1, 1], severity))
  assert out["image_auroc"] == pytest.approx(1.0)
  assert out["image_auroc_p1"] == pytest.approx(1.0)  # the p = 0.5 cell left out
  assert out["recall_at_5fpr"] == pytest.approx(1.0)  # threshold 0.2, the top normal score
  assert set(evaluation.image_metrics(scores, _data([0, 0, 1, 1, 1], name="mvtec"))) == {
    "image_auroc", "recall_at_5fpr"}
  assert set(evaluation.image_metrics(scores, _data([0, 0, 1, 1, 1], [0, 0, .5, .5, .5]))) == {
    "image_auroc", "recall_at_5fpr"}


def test_image_metrics_per_defect_probability_and_the_ceiling():
  rng = np.random.default_rng(0)
  severity = np.concatenate([np.zeros(40), np.full(15, 1 / 3), np.full(5, 2 / 3), np.full(20, 1.0)])
  labels = (severity > 0).astype(int)
  scores = rng.normal(0, 1, len(severity)) + 1.5 * severity
  out = evaluation.image_metrics(scores, _data(labels, severity))
  groups = {"image_auroc_p1_3": 1 / 3, "image_auroc_p2_3": 2 / 3, "image_auroc_p1": 1.0}
  for key, p in groups.items():  # each group against the functional cells only
    chosen = (severity == 0) | np.isclose(severity, p)
    assert out[key] == pytest.approx(evaluation.metrics.image_auroc(scores[chosen],
                                                                     severity[chosen] > 0))
  # All defects = the count-weighted mean of the groups (same negatives).
  counts = {"image_auroc_p1_3": 15, "image_auroc_p2_3": 5, "image_auroc_p1": 20}
  weighted = sum(counts[k] * out[k] for k in counts) / 40
  assert out["image_auroc"] == pytest.approx(weighted, abs=1e-12)
  # The ceiling: the same scores with every p = 1 cell above every functional one.
  lifted = scores.copy()
  lifted[severity == 1] = scores.max() + 1.0
  assert out["image_auroc_ceiling"] == pytest.approx(
    evaluation.metrics.image_auroc(lifted, labels), abs=1e-12)
  assert out["image_auroc_ceiling"] > out["image_auroc"]


@pytest.mark.parametrize("reweight_neighbors", [0, 3, 50])
def test_evaluate_bank_separates_and_drops_non_finite_rows(reweight_neighbors):
  labels = [0, 0, 0, 1, 1]
  data = _data(labels)
  bank = np.random.default_rng(1).normal(0, 0.1, (20, DIM)).astype(np.float32)
  feats = _features(labels)
  out, scores = evaluation.evaluate_bank(bank, feats, data, block_size=8,
                                         reweight_neighbors=reweight_neighbors)
  assert scores.shape == (5, 3, 3)
  assert out["image_auroc"] == 1.0 and out["image_auroc_p1"] == 1.0
  poisoned = np.concatenate([bank, np.full((2, DIM), np.nan, np.float32),
                             np.full((1, DIM), np.inf, np.float32)])
  out_p, scores_p = evaluation.evaluate_bank(poisoned, feats, data, block_size=8,
                                             reweight_neighbors=reweight_neighbors)
  np.testing.assert_array_equal(scores_p, scores)
  assert out_p == out


def test_evaluate_bank_image_score_is_the_highest_patch_score():
  labels = [0, 1, 0, 1]
  bank = np.zeros((3, DIM), np.float32)
  feats = _features(labels)
  _, scores = evaluation.evaluate_bank(bank, feats, _data(labels), block_size=4)
  np.testing.assert_allclose(scores, np.linalg.norm(feats, axis=-1), rtol=1e-5, atol=1e-6)


def test_rows_in_bank_counts_exact_copies():
  rows = np.arange(12, dtype=np.float32).reshape(2, 2, 3)  # two clients' coresets
  bank = np.stack([rows[0, 1], np.ones(3, np.float32), rows[1, 0], rows[1, 0] + 1e-6])
  assert evaluation.rows_in_bank(bank, rows) == 2
  assert evaluation.rows_in_bank(bank, rows[:0]) == 0


def test_strategy_robustness():
  assert evaluation.strategy_robustness("federated_coreset") == federated.RobustnessConfig()
  for strategy in federated.STRATEGIES[1:]:
    robust = evaluation.strategy_robustness(strategy, num_byzantine=1,
                                            client_scoring_method="robust_zscore")
    assert robust.enabled and robust.aggregation_method == strategy and robust.num_byzantine == 1
  with pytest.raises(ValueError, match="aggregation_method"):
    evaluation.strategy_robustness("krum")
