"""The experiment config schema (an ``ml_collections.ConfigDict``).

Every ``configs/*.py`` starts from :func:`default_config` and overrides fields,
so the set of fields (which scripts and checks rely on) lives in one place.
Hyper-parameters that only some rules or attacks take are placeholders
(``None``): a set value is passed to the rule, an unset one keeps the rule's
default.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def default_config() -> ml_collections.ConfigDict:
  """Digits, 10 IID clients, an MLP, FedAvg, no attack (unlocked)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_rounds = 40
  config.num_clients = 10
  config.eval_every = 5
  config.checkpoint_every = 10
  # Shard the client axis over all local devices (a no-op on one device).
  config.shard_clients = True

  config.data = ml_collections.ConfigDict()
  config.data.name = "digits"
  config.data.dir = ""
  config.data.partition = "iid"
  config.data.alpha = 0.5
  config.data.classes_per_client = 2

  config.model = ml_collections.ConfigDict()
  config.model.name = "mlp"
  config.model.hidden = (128,)

  config.client = ml_collections.ConfigDict()
  config.client.mode = "fedavg"
  config.client.optimizer = "sgd"
  config.client.learning_rate = 0.1
  config.client.local_epochs = 1
  config.client.batch_size = 32
  # Client (worker) momentum across rounds, Karimireddy et al. 2021; 0 = off.
  config.client.momentum = 0.0

  config.attack = ml_collections.ConfigDict()
  config.attack.name = "none"
  config.attack.num_byzantine = 0
  config.attack.byzantine = "first"  # or "random" (a fixed set drawn by seed)
  # Model-poisoning hyper-parameters, passed to attacks that take them.
  config.attack.factor = config_dict.placeholder(float)
  config.attack.std = config_dict.placeholder(float)
  config.attack.value = config_dict.placeholder(str)
  config.attack.boost = config_dict.placeholder(float)
  config.attack.z = config_dict.placeholder(float)
  config.attack.epsilon = config_dict.placeholder(float)
  config.attack.b = config_dict.placeholder(float)
  config.attack.direction = config_dict.placeholder(str)
  # Romoa's stealth factor alpha in [0, 1]; None = no stealth mixing.
  config.attack.stealth = config_dict.placeholder(float)
  # Data-poisoning settings (label_flip, targeted_flip, backdoor).
  config.attack.source = 6
  config.attack.target = 3
  config.attack.fraction = 0.5
  config.attack.trigger_size = 2
  config.attack.trigger_value = 1.0

  config.aggregator = ml_collections.ConfigDict()
  config.aggregator.name = "mean"
  # None: the rule gets attack.num_byzantine when it needs one.
  config.aggregator.num_byzantine = config_dict.placeholder(int)
  config.aggregator.num_trim = config_dict.placeholder(int)
  # Alternative to num_trim: floor(trim_fraction * num_clients), in (0, 0.5).
  config.aggregator.trim_fraction = config_dict.placeholder(float)
  config.aggregator.num_selected = config_dict.placeholder(int)
  config.aggregator.radius = config_dict.placeholder(float)
  config.aggregator.num_iters = config_dict.placeholder(int)
  config.aggregator.max_iter = config_dict.placeholder(int)
  config.aggregator.pre_aggregators = ()

  config.scorer = ml_collections.ConfigDict()
  config.scorer.name = "none"  # "zscore" or "robust_zscore"
  config.scorer.threshold = 3.0

  config.server = ml_collections.ConfigDict()
  config.server.optimizer = "sgd"
  config.server.learning_rate = 1.0
  config.server.momentum = 0.0
  return config
