"""Model-poisoning attacks on stacked client updates.

Every attack is a pure, jittable function
``attack(key, updates, byzantine_mask, **hparams) -> updates`` over
``updates: [n, d]`` and ``byzantine_mask: bool[n]`` (possibly traced); only
Byzantine rows change, shape and dtype are kept. Honest statistics are taken
over the honest rows (over all rows when every row is Byzantine).
:func:`get` returns any registered attack by name as an :class:`Attack`,
called as ``attack(key, updates, byzantine_mask, **context)``; attacks that
change the Byzantine clients' training (targeted poisoning) or data (label
flipping, backdoors) are :class:`Attack` objects too.

>>> import jax, jax.numpy as jnp
>>> from robustfl_jax import attacks
>>> updates = jnp.arange(12.0).reshape(4, 3)
>>> mask = jnp.array([True, False, False, False])
>>> poisoned = attacks.alie(jax.random.key(0), updates, mask)
>>> attack = jax.jit(attacks.get("min_max", direction="std"))
>>> poisoned = attack(jax.random.key(0), updates, mask)
"""

from robustfl_jax.attacks._registry import ATTACKS
from robustfl_jax.attacks._registry import Attack
from robustfl_jax.attacks._registry import as_attack
from robustfl_jax.attacks._registry import get
from robustfl_jax.attacks._registry import hparams
from robustfl_jax.attacks._registry import names
from robustfl_jax.attacks._registry import register_attack
from robustfl_jax.attacks._registry import register_factory
from robustfl_jax.attacks._adaptive import aggregator_aware
from robustfl_jax.attacks._adaptive import gradient_attack
from robustfl_jax.attacks._adaptive import stealth
from robustfl_jax.attacks._fang import fang_deviation
from robustfl_jax.attacks._fang import fang_krum
from robustfl_jax.attacks._fang import fang_krum_scores
from robustfl_jax.attacks._fang import fang_trimmed_mean
from robustfl_jax.attacks._min_max import min_max
from robustfl_jax.attacks._min_max import min_sum
from robustfl_jax.attacks._omniscient import alie
from robustfl_jax.attacks._omniscient import alie_z_max
from robustfl_jax.attacks._omniscient import ipm
from robustfl_jax.attacks._omniscient import mimic
from robustfl_jax.attacks._omniscient import mimic_target
from robustfl_jax.attacks._simple import gaussian_noise
from robustfl_jax.attacks._simple import model_replacement
from robustfl_jax.attacks._simple import non_finite
from robustfl_jax.attacks._simple import random
from robustfl_jax.attacks._simple import scaling
from robustfl_jax.attacks._simple import sign_flip
from robustfl_jax.attacks._simple import zero
from robustfl_jax.attacks._strategic import attacker_sample
from robustfl_jax.attacks._strategic import distance_bounded
from robustfl_jax.attacks._strategic import honest_ball
from robustfl_jax.attacks._strategic import poison_objective
from robustfl_jax.attacks._strategic import validation_evading
from robustfl_jax.attacks._targeted import auxiliary_set
from robustfl_jax.attacks._targeted import boost
from robustfl_jax.attacks._targeted import make_alternating_minimization
from robustfl_jax.attacks._targeted import targeted_objective
from robustfl_jax.attacks._targeted import tpa
from robustfl_jax.attacks._targeted import tpa_am
from robustfl_jax.attacks import data_poisoning
from robustfl_jax.attacks.data_poisoning import DATA_ATTACKS
from robustfl_jax.attacks.data_poisoning import DataPoisoning
from robustfl_jax.attacks.data_poisoning import add_trigger
from robustfl_jax.attacks.data_poisoning import backdoor
from robustfl_jax.attacks.data_poisoning import label_flip
from robustfl_jax.attacks.data_poisoning import poison_clients
from robustfl_jax.attacks.data_poisoning import targeted_label_flip

__all__ = (
    "ATTACKS", "Attack", "DATA_ATTACKS", "DataPoisoning", "add_trigger",
    "aggregator_aware", "alie", "alie_z_max", "as_attack", "attacker_sample",
    "auxiliary_set", "backdoor", "boost", "data_poisoning", "distance_bounded",
    "fang_deviation", "fang_krum", "fang_krum_scores", "fang_trimmed_mean",
    "gaussian_noise",
    "get", "gradient_attack", "honest_ball", "hparams", "ipm", "label_flip",
    "make_alternating_minimization", "mimic", "mimic_target", "min_max",
    "min_sum", "model_replacement", "names", "non_finite", "poison_clients",
    "poison_objective",
    "random", "register_attack", "register_factory", "scaling", "sign_flip",
    "stealth", "targeted_label_flip", "targeted_objective", "tpa", "tpa_am",
    "validation_evading", "zero",
)
