"""Robust aggregation rules over stacked client updates ``[n, d]``.

Every rule is a pure, jit-able function; non-finite rows are treated as
Byzantine and ignored; ``mask=`` excludes rows (e.g. flagged clients).
:func:`get` builds any registered rule by name as an optax-style
:class:`Aggregator`; :mod:`robustfl_jax.aggregators.base` is the toolkit for
writing a new one, and :func:`register_rule` / :func:`register` make it
available to :func:`get` and to configs.

Example::

  from robustfl_jax import aggregators as agg
  agg.krum(updates, num_byzantine=2)
  agg.chain(agg.nnm, agg.krum)(updates, num_byzantine=2)
  aggregator = agg.get("trimmed_mean", num_trim=2)
  state = aggregator.init(params)
  aggregate, state, info = aggregator.update(updates, state)
"""

from robustfl_jax.aggregators import base, columns
from robustfl_jax.aggregators.base import Aggregator, EmptyState
from robustfl_jax.aggregators._registry import (
    PRE_AGGREGATORS, RULES, get, hparam_names, names, pre_aggregator_names,
    register, register_pre_aggregator, register_rule, validate)
from robustfl_jax.aggregators._clipping import (
    CenteredClippingState, arc, centered_clipping, centered_clipping_aggregator,
    clip_by_norm)
from robustfl_jax.aggregators._coordinatewise import (
    coordinate_median, meamed, mean, trimmed_mean)
from robustfl_jax.aggregators._geometric_median import geometric_median
from robustfl_jax.aggregators._krum import (
    bulyan, krum, krum_scores, multi_krum, pairwise_sq_distances)
from robustfl_jax.aggregators._order_statistics import order_statistics
from robustfl_jax.aggregators._preaggregators import bucketing, chain, nnm
from robustfl_jax.aggregators import romoa  # module: romoa.romoa(...) builds it
from robustfl_jax.aggregators.romoa import RomoaState
from robustfl_jax.aggregators.differentiable import (
    DIFFERENTIABLE_RULES, differentiable_rule)

__all__ = [
    "Aggregator", "CenteredClippingState", "DIFFERENTIABLE_RULES",
    "EmptyState", "PRE_AGGREGATORS", "columns", "RULES", "RomoaState", "arc", "base",
    "bucketing", "bulyan", "centered_clipping", "centered_clipping_aggregator",
    "chain", "clip_by_norm", "coordinate_median", "differentiable_rule",
    "geometric_median", "get", "hparam_names", "krum", "krum_scores", "meamed",
    "mean", "multi_krum", "names", "nnm", "order_statistics",
    "pairwise_sq_distances", "pre_aggregator_names", "register",
    "register_pre_aggregator", "register_rule", "romoa", "trimmed_mean",
    "validate",
]
