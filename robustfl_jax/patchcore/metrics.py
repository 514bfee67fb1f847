"""Anomaly-detection metrics: image AUROC, pixel AUROC and AUPRO.

All metrics are computed over the whole test set at once and are invariant to
any strictly increasing transformation of the scores, so no normalisation is
needed; in particular no per-image normalisation is ever applied (it would
make every image's maximum look equally anomalous). These are evaluation
functions on host arrays (NumPy), not jitted code.

References:
  Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV 2021
  (per-region overlap, AUPRO integrated up to a false-positive rate of 0.3).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats


def _check_binary(labels, name):
  labels = np.asarray(labels).astype(bool).ravel()
  if labels.all() or not labels.any():
    raise ValueError(f"{name} needs both positive and negative labels; got only "
                     f"{'positives' if labels.all() else 'negatives'}")
  return labels


def image_auroc(scores, labels) -> float:
  """Area under the ROC curve of image scores (ties count one half).

  Args:
    scores: f[n] anomaly scores (higher = more anomalous).
    labels: bool/int[n], 1 for anomalous images.

  Returns:
    AUROC in [0, 1] as a Python float (0.5 = chance).

  Raises:
    ValueError: lengths differ, labels hold a single class, or scores are NaN.
  """
  scores = np.asarray(scores, np.float64).ravel()
  labels = _check_binary(labels, "image_auroc")
  if scores.shape != labels.shape:
    raise ValueError(f"scores and labels differ in length: {scores.shape} vs {labels.shape}")
  if np.isnan(scores).any():
    raise ValueError("image_auroc got NaN scores")
  # Mann-Whitney U statistic with average ranks for ties.
  ranks = stats.rankdata(scores)
  num_pos = labels.sum()
  num_neg = labels.size - num_pos
  u = ranks[labels].sum() - num_pos * (num_pos + 1) / 2.0
  return float(u / (num_pos * num_neg))


def threshold_at_fpr(scores, labels, max_fpr: float = 0.05) -> float:
  """The lowest threshold t with at most `max_fpr` of the normal images scored > t.

  Args:
    scores: f[n] image scores (higher = more anomalous).
    labels: bool/int[n], 1 for anomalous images (both classes needed).
    max_fpr: allowed share of false positives on normal images, in [0, 1).

  Returns:
    t, a normal image's score (images scored > t are called defective).
  """
  if not 0.0 <= max_fpr < 1.0:
    raise ValueError(f"max_fpr must be in [0, 1); got {max_fpr}")
  labels = _check_binary(labels, "threshold_at_fpr")
  normal = np.sort(np.asarray(scores, np.float64).ravel()[~labels])
  allowed = int(np.floor(max_fpr * normal.size + 1e-9))
  return float(normal[normal.size - 1 - allowed])


def recall_at_fpr(scores, labels, max_fpr: float = 0.05) -> float:
  """Share of anomalous images scored above `threshold_at_fpr(scores, labels, max_fpr)`."""
  t = threshold_at_fpr(scores, labels, max_fpr)
  labels = np.asarray(labels).astype(bool).ravel()
  return float(np.mean(np.asarray(scores, np.float64).ravel()[labels] > t))


def pixel_auroc(anomaly_maps, masks) -> float:
  """AUROC over all pixels of all test images (maps and masks of equal shape)."""
  anomaly_maps = np.asarray(anomaly_maps)
  masks = np.asarray(masks)
  if anomaly_maps.shape != masks.shape:
    raise ValueError(f"maps {anomaly_maps.shape} and masks {masks.shape} differ in shape")
  return image_auroc(anomaly_maps.ravel(), masks.ravel())


def pro_curve(anomaly_maps, masks):
  """False-positive rate and mean per-region overlap at every threshold.

  Regions are the 8-connected components of each ground-truth mask. At a
  threshold t the per-region overlap of a region is the fraction of its pixels
  scored >= t; PRO is the mean over all regions of the test set; FPR is the
  fraction of normal pixels scored >= t.

  Returns:
    (fpr, pro): increasing f64 arrays starting at (0, 0), one point per
    distinct score value.
  """
  anomaly_maps = np.asarray(anomaly_maps, np.float64)
  masks = np.asarray(masks).astype(bool)
  if anomaly_maps.shape != masks.shape or anomaly_maps.ndim != 3:
    raise ValueError(f"expected maps and masks of equal shape [n, h, w]; got "
                     f"{anomaly_maps.shape} and {masks.shape}")
  # Each pixel's weight: 1 / (region size * number of regions) for defect
  # pixels, 1 / (number of normal pixels) for normal ones.
  region_weight = np.zeros(masks.shape, np.float64)
  num_regions = 0
  labelled = np.zeros(masks.shape, np.int64)
  for i, mask in enumerate(masks):
    labelled[i], count = ndimage.label(mask, structure=np.ones((3, 3)))
    labelled[i][labelled[i] > 0] += num_regions
    num_regions += count
  if num_regions == 0:
    raise ValueError("pro_curve needs at least one defect region in the masks")
  normal = ~masks
  if not normal.any():
    raise ValueError("pro_curve needs normal pixels")
  sizes = np.bincount(labelled.ravel(), minlength=num_regions + 1).astype(np.float64)
  region_weight = np.where(masks, 1.0 / (sizes[labelled] * num_regions), 0.0)
  fpr_weight = normal / normal.sum()

  order = np.argsort(-anomaly_maps.ravel(), kind="stable")
  sorted_scores = anomaly_maps.ravel()[order]
  pro = np.cumsum(region_weight.ravel()[order])
  fpr = np.cumsum(fpr_weight.ravel()[order])
  # Keep the last index of each run of tied scores: a threshold includes all ties.
  last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
  return np.r_[0.0, fpr[last_of_tie]], np.r_[0.0, pro[last_of_tie]]


def aupro(anomaly_maps, masks, max_fpr: float = 0.3) -> float:
  """Area under the PRO curve up to `max_fpr`, divided by `max_fpr` (in [0, 1]).

  Args:
    anomaly_maps: f[n, h, w] pixel scores.
    masks: bool[n, h, w] ground truth (images without defects have all-False masks).
    max_fpr: integration limit in (0, 1]; 0.3 as in the MVTec AD protocol.

  Returns:
    Normalised AUPRO as a Python float; 1.0 for a perfect map, about
    max_fpr / 2 for random scores.
  """
  if not 0.0 < max_fpr <= 1.0:
    raise ValueError(f"max_fpr must be in (0, 1]; got {max_fpr}")
  fpr, pro = pro_curve(anomaly_maps, masks)
  # Interpolate the curve at exactly max_fpr, then integrate with trapezoids.
  cut = np.searchsorted(fpr, max_fpr, side="right")
  pro_at_limit = np.interp(max_fpr, fpr, pro)
  x = np.r_[fpr[:cut], max_fpr]
  y = np.r_[pro[:cut], pro_at_limit]
  return float(np.trapezoid(y, x) / max_fpr)
