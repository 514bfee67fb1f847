"""Behaviour-based defenses that need the model and data: FLTrust, the GAN filter.

Both are ``Aggregator(init, update)`` pairs like every rule in
:mod:`robustfl_jax.aggregators`; their factories capture the model's
``apply``, the parameter flattening and the server's data (root set, shared
sample or trained generator) in a closure, and at round time they read the
context ``global_params`` (flat ``[d]``) that the round passes to
``aggregator.update``. Each registers a :class:`Defense` factory
(:func:`get`, :func:`names`) that builds it, with its probe, for an
experiment.

Example::

  from robustfl_jax import defenses
  gan = defenses.train_gan(key, x_shared, y_shared, 10)
  agg = defenses.gan_filter(model.apply, params, gan, rule="median")
"""

from robustfl_jax.defenses._probe import BehaviourProbe, accuracy_of
from robustfl_jax.defenses._registry import (DEFENSES, Defense, get, names,
                                             register)
from robustfl_jax.defenses.fltrust import (fltrust, fltrust_aggregate,
                                           fltrust_defense, fltrust_probe,
                                           root_set, trust_scores)
from robustfl_jax.defenses.gan_filter import (THRESHOLD_RULES, Recording,
                                              accept_by_rule, calibrate_margin,
                                              calibrate_robust_k, cantelli_k,
                                              gan_filter, gan_filter_defense,
                                              gan_filter_probe,
                                              recording_filter, robust_z,
                                              shared_sample,
                                              shared_sample_indices)
from robustfl_jax.defenses.wgan_gp import (GANResult, balanced_labels,
                                           gradient_penalty, sample,
                                           sample_diversity, train_gan)

__all__ = [
    "BehaviourProbe", "DEFENSES", "Defense", "GANResult", "THRESHOLD_RULES",
    "Recording", "accept_by_rule", "accuracy_of", "balanced_labels",
    "calibrate_margin", "calibrate_robust_k", "cantelli_k", "fltrust",
    "fltrust_aggregate", "fltrust_defense", "fltrust_probe", "gan_filter",
    "gan_filter_defense", "gan_filter_probe", "get", "gradient_penalty",
    "names", "recording_filter", "register", "robust_z", "root_set", "sample",
    "sample_diversity",
    "shared_sample", "shared_sample_indices", "train_gan", "trust_scores",
]
