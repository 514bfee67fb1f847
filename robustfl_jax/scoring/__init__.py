"""Client anomaly scores: the seed's z-score detector and a robust variant.

Example::

  from robustfl_jax import aggregators as agg, scoring
  result = scoring.robust_zscore_scores(updates)
  aggregate = agg.coordinate_median(updates, mask=scoring.keep_mask(result))
"""

from robustfl_jax.scoring._zscore import (
    METRICS, ClientScores, client_statistics, get, keep_mask, names,
    robust_zscore_scores, zscore_scores)

__all__ = ["METRICS", "ClientScores", "client_statistics", "get", "keep_mask",
           "names", "robust_zscore_scores", "zscore_scores"]
