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
  # How clients run inside the jitted round: "vmap" (one batched computation),
  # "map" (one after another), or "auto": "map" for convolutional models on a
  # single CPU device (vmapped per-client convolutions are slow there), else
  # "vmap".
  config.client.execution = "auto"
  # Local adversarial / noise training (robustfl_jax.adversarial.training):
  # method none | pgd (Madry) | mix (0.5 clean + 0.5 PGD) | trades | gaussian.
  config.client.adversarial_training = ml_collections.ConfigDict()
  config.client.adversarial_training.method = "none"
  config.client.adversarial_training.epsilon = 0.1
  # None: 2.5 * epsilon / steps (Madry et al.).
  config.client.adversarial_training.step_size = config_dict.placeholder(float)
  config.client.adversarial_training.steps = 10
  config.client.adversarial_training.beta = 6.0  # TRADES trade-off
  config.client.adversarial_training.norm = "linf"  # or "l2"
  config.client.adversarial_training.sigma = 0.25  # Gaussian noise (smoothing)

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
  # Targeted model poisoning (attack.name tpa / tpa_am, protocol romoa_async):
  # the adversary's auxiliary source-class samples, the benign-loss weight of
  # its objective, and the distance-to-benign weight of the alternating
  # minimisation; attack.boost (None: num_clients) boosts the upload.
  config.attack.aux_size = 10
  config.attack.benign_weight = 0.0
  config.attack.rho = 1e-2

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
  # Behaviour-based defences (robustfl_jax.defenses), aggregator.name fltrust
  # or gan_filter: FLTrust's root set size (Cao et al.: 100); the GAN filter's
  # shared sample (fraction of the training data; the seed shares 0.5%),
  # generator steps, synthetic validation samples per class, and threshold
  # rule (fixed: accuracy >= threshold; median: >= median - margin; global:
  # >= the global model's accuracy - margin; two_cluster: the upper of two
  # clusters at least margin apart).
  config.aggregator.root_size = 100
  config.aggregator.shared_fraction = 0.005
  config.aggregator.gan_steps = 1000
  config.aggregator.gan_learning_rate = 1e-4  # Adam; Gulrajani et al.'s 1e-4
  config.aggregator.validation_per_class = 20
  config.aggregator.threshold_rule = "median"
  config.aggregator.threshold = 0.5
  config.aggregator.margin = 0.1

  config.scorer = ml_collections.ConfigDict()
  config.scorer.name = "none"  # "zscore" or "robust_zscore"
  config.scorer.threshold = 3.0

  config.server = ml_collections.ConfigDict()
  config.server.optimizer = "sgd"
  config.server.learning_rate = 1.0
  config.server.momentum = 0.0

  # "sync" (fl/round.py) or "romoa_async" (fl/async_protocol.py: per-client
  # local models, tau lookahead steps per round, moving rate gamma).
  config.protocol = "sync"
  config.romoa = ml_collections.ConfigDict()
  config.romoa.tau = 4
  config.romoa.gamma = config_dict.placeholder(float)  # None: 1/num_clients
  config.romoa.beta = 0.5
  config.romoa.selection_fraction = config_dict.placeholder(float)  # None: 1/n
  config.romoa.pearson = "paper"  # eq. 7 as printed, or "correlation"

  # Adversarial evaluation: with attack_epsilon set, summary.json adds
  # clean_accuracy and robust_accuracy under PGD-<attack_steps>.
  config.eval = ml_collections.ConfigDict()
  config.eval.attack_epsilon = config_dict.placeholder(float)
  config.eval.attack_steps = 20
  config.eval.attack_step_size = config_dict.placeholder(float)
  config.eval.attack_norm = "linf"
  return config
