"""Scoring a memory bank on a test set: image metrics, the bank's evaluation.

Plain functions of arrays and an :class:`~robustfl_jax.data.anomaly_folders.AnomalyData`
(no config): ``robustfl_jax.experiments.patchcore`` runs them for every bank of
an experiment, and a notebook or a user's script can call them on its own
banks.

Example::

  metrics, patch_scores = evaluate_bank(bank, test_features, data, block_size=1024)
  metrics["image_auroc"], patch_scores.shape  # [M, h, w]
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from robustfl_jax.patchcore import metrics
from robustfl_jax.patchcore.federated import RobustnessConfig
from robustfl_jax.patchcore.nearest_neighbor import reweighted_image_scores, score_patches


_ELPV_PROBABILITIES = {"p1_3": 1.0 / 3.0, "p2_3": 2.0 / 3.0, "p1": 1.0}


def image_metrics(image_scores: np.ndarray, data) -> dict[str, float]:
  """Image AUROC on all defective images, and (ELPV) per defect probability.

  The all-defects AUROC is exactly the defect-count-weighted mean of the
  AUROCs of each probability group against the same functional cells (each
  is a Mann-Whitney statistic over the same negatives). So the cells the
  annotators were least sure of (p = 1/3, 2/3) bound it:
  ``image_auroc_ceiling`` is the all-defects AUROC the same scores would
  reach if every p = 1 cell scored above every functional cell.

  Note: InCTRL (Zhu and Pang, CVPR 2024) evaluates ELPV with the p = 1 cells
  as the only anomalies (its ``convert_elpv.py``); ``image_auroc_p1`` is
  that protocol on this test set.

  Args:
    image_scores: f32[M] one score per test image of ``data``.
    data: the ``AnomalyData`` the scores belong to (``test_labels``,
      ``test_severity`` and ``name`` are read).

  Returns:
    ``{"image_auroc": ..., "recall_at_5fpr": ...}`` (the share of defective
    images caught at the threshold that flags 5% of the normal ones). For
    ELPV, when some test cell is defective with probability 1, also
    ``"image_auroc_p1"`` (those cells against the functional ones, p = 0;
    the others left out), ``"image_auroc_p1_3"`` and ``"image_auroc_p2_3"``
    (the same for p = 1/3 and 2/3, where present) and
    ``"image_auroc_ceiling"``.
  """
  image_scores = np.asarray(image_scores)
  out = {"image_auroc": metrics.image_auroc(image_scores, data.test_labels),
         "recall_at_5fpr": metrics.recall_at_fpr(image_scores, data.test_labels, 0.05)}
  severity = np.asarray(data.test_severity)
  functional = severity == 0
  if data.name != "elpv" or not np.any(severity == 1) or not np.any(functional):
    return out
  defective = np.asarray(data.test_labels) == 1
  weighted, count = 0.0, 0
  for name, probability in _ELPV_PROBABILITIES.items():
    group = defective & np.isclose(severity, probability)
    if not np.any(group):
      continue
    chosen = functional | group
    auroc = metrics.image_auroc(image_scores[chosen], group[chosen])
    out[f"image_auroc_{name}"] = auroc
    weighted += group.sum() * (1.0 if probability == 1.0 else auroc)
    count += group.sum()
  if count == defective.sum():  # every defect is in one of the three groups
    out["image_auroc_ceiling"] = float(weighted / count)
  return out


def evaluate_bank(bank, test_features, data, *, block_size: int = 1024,
                  reweight_neighbors: int = 0) -> tuple[dict[str, float], np.ndarray]:
  """Scores every test patch against ``bank``; the image metrics of the scores.

  Args:
    bank: f32[m, d] memory bank; rows that are not finite are dropped first
      (a poisoned bank may hold them).
    test_features: f32[M, h, w, d] patch features of the test images.
    data: the ``AnomalyData`` of the test images (see :func:`image_metrics`).
    block_size: test patches scored per block (memory, not results).
    reweight_neighbors: 0 scores an image by its highest patch score; b > 0
      uses the PatchCore paper's reweighted score (Eq. 7) with b neighbours
      (at most the bank's size).

  Returns:
    ``(image_metrics, patch_scores)``, the patch scores as f32[M, h, w].
  """
  bank = jnp.asarray(bank)
  bank = bank[jnp.all(jnp.isfinite(bank), axis=1)]
  scores = np.asarray(score_patches(test_features, bank, 1, block_size))
  if reweight_neighbors > 0:
    flat = jnp.asarray(test_features).reshape(len(test_features), -1, test_features.shape[-1])
    image_scores = np.asarray(reweighted_image_scores(
      flat, bank, min(reweight_neighbors, bank.shape[0]), block_size))
  else:
    image_scores = scores.max(axis=(1, 2))
  return image_metrics(image_scores, data), scores


def rows_in_bank(bank, rows) -> int:
  """How many rows of ``bank`` are exact (bitwise) copies of one of ``rows``.

  Args:
    bank: [m, d] the global memory bank.
    rows: [..., d] e.g. the coresets the Byzantine clients submitted.

  Returns:
    The count (the coordinate-wise strategies synthesise rows, so 0 there).
  """
  bank = np.asarray(bank)
  submitted = {r.tobytes() for r in np.asarray(rows, bank.dtype).reshape(-1, bank.shape[-1])}
  return int(sum(r.tobytes() in submitted for r in bank))


def strategy_robustness(strategy: str, **settings: Any) -> RobustnessConfig:
  """The server's settings for one strategy of ``federated.STRATEGIES``.

  Args:
    strategy: ``"federated_coreset"`` is the undefended server (robustness
      disabled); any other name is the ``aggregation_method`` of an enabled
      :class:`~robustfl_jax.patchcore.federated.RobustnessConfig`.
    **settings: its other fields (``num_byzantine``, ``trim_fraction``,
      ``client_scoring_method``, ``zscore_threshold``, ``exclude_flagged``).

  Raises:
    ValueError: an unknown strategy or an invalid setting.
  """
  enabled = strategy != "federated_coreset"
  return RobustnessConfig(enabled=enabled,
                          aggregation_method=strategy if enabled else "coordinate_median",
                          **settings)
