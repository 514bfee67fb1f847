"""Behaviour-based defences that need the model and data: FLTrust, the GAN filter.

Both are ``Aggregator(init, update)`` pairs like every rule in
:mod:`robustfl_jax.aggregators`; their factories capture the model's
``apply``, the parameter flattening and the server's data (root set, shared
sample or trained generator) in a closure, and at round time they read the
context ``global_params`` (flat ``[d]``) that the round passes to
``aggregator.update``. :func:`from_config` builds them for
``aggregator.name`` = ``"fltrust"`` or ``"gan_filter"``.

Example::

  from robustfl_jax import defenses
  gan = defenses.train_gan(key, x_shared, y_shared, 10)
  agg = defenses.gan_filter(model.apply, params, gan, rule="median")
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from robustfl_jax.defenses._probe import BehaviourProbe, accuracy_of
from robustfl_jax.defenses.fltrust import (fltrust, fltrust_aggregate,
                                           fltrust_probe, root_set,
                                           trust_scores)
from robustfl_jax.defenses.gan_filter import (THRESHOLD_RULES, accept_by_rule,
                                              gan_filter, gan_filter_probe)
from robustfl_jax.defenses.wgan_gp import (GANResult, balanced_labels,
                                           gradient_penalty, sample,
                                           sample_diversity, train_gan)

DEFENCES = ("fltrust", "gan_filter")


def shared_sample(x: Any, y: Any, fraction: float, num_classes: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The clients' shared sample: ``fraction`` of each class (at least one).

  The seed shares "0.5% of the samples" without saying how they are drawn;
  we stratify by class (``max(1, round(fraction * N_c))`` of class ``c``) so
  that the conditional generator sees every class even on small data sets.

  Raises:
    ValueError: ``fraction`` outside (0, 1] (names ``aggregator.shared_fraction``).
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"aggregator.shared_fraction={fraction} must be in (0, 1].")
  x, y = np.asarray(x), np.asarray(y)
  rng = np.random.default_rng([seed, 0x5A4E])
  idx = []
  for c in range(num_classes):
    members = np.flatnonzero(y == c)
    if len(members) == 0:
      continue
    take = min(len(members), max(1, int(round(fraction * len(members)))))
    idx.append(rng.choice(members, take, replace=False))
  idx = np.sort(np.concatenate(idx))
  return x[idx], y[idx]


def validate_config(config) -> None:
  """Raises ``ValueError`` naming the ``aggregator.*`` field that cannot work."""
  a = config.aggregator
  if a.name not in DEFENCES:
    raise ValueError(f"aggregator.name={a.name!r} is not a defence; choose one "
                     f"of {DEFENCES}.")
  if a.name == "fltrust":
    if int(a.root_size) < 1:
      raise ValueError(f"aggregator.root_size must be >= 1; got {a.root_size}.")
  else:
    if not 0.0 < float(a.shared_fraction) <= 1.0:
      raise ValueError(f"aggregator.shared_fraction={a.shared_fraction} must "
                       "be in (0, 1].")
    if int(a.gan_steps) < 0:
      raise ValueError(f"aggregator.gan_steps must be >= 0; got {a.gan_steps}.")
    if not float(a.gan_learning_rate) > 0:
      raise ValueError("aggregator.gan_learning_rate must be > 0; got "
                       f"{a.gan_learning_rate}.")
    if int(a.validation_per_class) < 1:
      raise ValueError("aggregator.validation_per_class must be >= 1; got "
                       f"{a.validation_per_class}.")
    from robustfl_jax.defenses.gan_filter import check_rule  # pylint: disable=import-outside-toplevel
    check_rule(a.threshold_rule, float(a.threshold), float(a.margin))
  if tuple(a.pre_aggregators):
    raise ValueError(f"aggregator.pre_aggregators={tuple(a.pre_aggregators)} "
                     f"cannot be combined with {a.name}.")


def from_config(config, *, model: Any, params: Any, dataset: Any):
  """Builds ``aggregator.name`` (``fltrust`` or ``gan_filter``) for an experiment.

  Args:
    config: the experiment config (``aggregator.root_size``,
      ``shared_fraction``, ``threshold_rule``, ``threshold``, ``margin``,
      ``validation_per_class``, ``gan_steps``, ``gan_learning_rate``; ``client.*`` for FLTrust's
      server training).
    model: the flax module.
    params: initial parameters (fixes the flattening).
    dataset: the loaded :class:`robustfl_jax.data.Dataset`; the root set and
      the shared sample are drawn from its training split with ``config.seed``.

  Returns:
    An ``Aggregator``.
  """
  from robustfl_jax.fl.local import make_optimizer  # pylint: disable=import-outside-toplevel
  validate_config(config)
  a = config.aggregator
  if a.name == "fltrust":
    x_root, y_root = root_set(dataset.x_train, dataset.y_train,
                              int(a.root_size), config.seed)
    return fltrust(model.apply, params, x_root, y_root,
                   optimizer=make_optimizer(config.client.optimizer,
                                            config.client.learning_rate),
                   batch_size=int(config.client.batch_size),
                   local_epochs=int(config.client.local_epochs),
                   mode=config.client.mode)
  x_shared, y_shared = shared_sample(dataset.x_train, dataset.y_train,
                                     float(a.shared_fraction),
                                     dataset.num_classes, config.seed)
  gan = train_gan(jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x6A7),
                  x_shared, y_shared, dataset.num_classes,
                  num_steps=int(a.gan_steps),
                  learning_rate=float(a.gan_learning_rate))
  return gan_filter(model.apply, params, gan,
                    per_class=int(a.validation_per_class),
                    rule=a.threshold_rule, threshold=float(a.threshold),
                    margin=float(a.margin))


__all__ = [
    "BehaviourProbe", "DEFENCES", "GANResult", "THRESHOLD_RULES",
    "accept_by_rule", "accuracy_of", "balanced_labels", "fltrust",
    "fltrust_aggregate", "fltrust_probe", "from_config", "gan_filter",
    "gan_filter_probe", "gradient_penalty", "root_set", "sample",
    "sample_diversity", "shared_sample", "train_gan", "trust_scores",
    "validate_config",
]
