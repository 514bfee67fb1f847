"""Robust aggregation rules over stacked client updates ``[n, d]``.

Every rule is a pure, jit-able function; non-finite rows are treated as
Byzantine and ignored; ``mask=`` excludes rows (e.g. flagged clients).
:func:`get` builds any rule by name as an optax-style :class:`Aggregator`.

Example::

  from robustfl_jax import aggregators as agg
  agg.krum(updates, num_byzantine=2)
  agg.chain(agg.nnm, agg.krum)(updates, num_byzantine=2)
  aggregator = agg.get("trimmed_mean", num_trim=2)
  state = aggregator.init(params)
  aggregate, state, info = aggregator.update(updates, state)
"""

from robustfl_jax.aggregators._base import Aggregator, EmptyState
from robustfl_jax.aggregators._clipping import arc, centered_clipping, clip_by_norm
from robustfl_jax.aggregators._coordinatewise import (
    coordinate_median, meamed, mean, trimmed_mean)
from robustfl_jax.aggregators._geometric_median import geometric_median
from robustfl_jax.aggregators._krum import (
    bulyan, krum, krum_scores, multi_krum, pairwise_sq_distances)
from robustfl_jax.aggregators._order_statistics import order_statistics
from robustfl_jax.aggregators._preaggregators import bucketing, chain, nnm
from robustfl_jax.aggregators import romoa  # module: romoa.romoa(...) builds it
from robustfl_jax.aggregators.romoa import RomoaState
from robustfl_jax.aggregators._registry import (
    CenteredClippingState, get, hparam_names, names, pre_aggregator_names, validate)

__all__ = [
    "Aggregator", "CenteredClippingState", "EmptyState", "arc", "bucketing",
    "bulyan", "centered_clipping", "chain", "clip_by_norm", "coordinate_median",
    "geometric_median", "get", "hparam_names", "krum", "krum_scores", "meamed", "mean",
    "multi_krum", "names", "nnm", "order_statistics", "pairwise_sq_distances",
    "pre_aggregator_names", "trimmed_mean", "validate",
    "RomoaState", "romoa",
]
