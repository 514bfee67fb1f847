"""Model-poisoning attacks on stacked client updates.

Every attack is a pure, jittable function
``attack(key, updates, byzantine_mask, **hparams) -> updates`` over
``updates: [n, d]`` and ``byzantine_mask: bool[n]`` (possibly traced); only
Byzantine rows change, shape and dtype are kept. Honest statistics are taken
over the honest rows (over all rows when every row is Byzantine).

>>> import jax, jax.numpy as jnp
>>> from robustfl_jax import attacks
>>> updates = jnp.arange(12.0).reshape(4, 3)
>>> mask = jnp.array([True, False, False, False])
>>> poisoned = attacks.alie(jax.random.key(0), updates, mask)
>>> attack = jax.jit(attacks.get("min_max", direction="std"))
>>> poisoned = attack(jax.random.key(0), updates, mask)
"""

from robustfl_jax.attacks._adaptive import aggregator_aware
from robustfl_jax.attacks._adaptive import gradient_attack
from robustfl_jax.attacks._adaptive import stealth
from robustfl_jax.attacks._fang import fang_krum
from robustfl_jax.attacks._fang import fang_trimmed_mean
from robustfl_jax.attacks._fang import krum_scores
from robustfl_jax.attacks._min_max import min_max
from robustfl_jax.attacks._min_max import min_sum
from robustfl_jax.attacks._omniscient import alie
from robustfl_jax.attacks._omniscient import alie_z_max
from robustfl_jax.attacks._omniscient import ipm
from robustfl_jax.attacks._omniscient import mimic
from robustfl_jax.attacks._omniscient import mimic_target
from robustfl_jax.attacks._registry import get
from robustfl_jax.attacks._registry import names
from robustfl_jax.attacks._simple import gaussian_noise
from robustfl_jax.attacks._simple import model_replacement
from robustfl_jax.attacks._simple import non_finite
from robustfl_jax.attacks._simple import random
from robustfl_jax.attacks._simple import scaling
from robustfl_jax.attacks._simple import sign_flip
from robustfl_jax.attacks._simple import zero
from robustfl_jax.attacks._strategic import differentiable_rule
from robustfl_jax.attacks._strategic import distance_bounded
from robustfl_jax.attacks._strategic import honest_ball
from robustfl_jax.attacks._strategic import validation_evading
from robustfl_jax.attacks._targeted import auxiliary_set
from robustfl_jax.attacks._targeted import boost
from robustfl_jax.attacks._targeted import make_alternating_minimization
from robustfl_jax.attacks._targeted import targeted_objective

__all__ = (
    "aggregator_aware",
    "alie",
    "alie_z_max",
    "fang_krum",
    "fang_trimmed_mean",
    "gaussian_noise",
    "get",
    "gradient_attack",
    "ipm",
    "krum_scores",
    "mimic",
    "mimic_target",
    "min_max",
    "min_sum",
    "model_replacement",
    "names",
    "non_finite",
    "random",
    "scaling",
    "sign_flip",
    "stealth",
    "zero",
    "differentiable_rule",
    "distance_bounded",
    "honest_ball",
    "validation_evading",
    "auxiliary_set",
    "boost",
    "make_alternating_minimization",
    "targeted_objective",
)
