"""Config validation names the field; a small experiment builds and runs."""

import jax
import pytest

from robustfl_jax.experiments import config as config_lib
from robustfl_jax.experiments import builders as experiment


def _config(**overrides):
  config = config_lib.default_config()
  for dotted, value in overrides.items():
    section, _, key = dotted.rpartition(".")
    target = config[section] if section else config
    target[key] = value
  return config


@pytest.mark.parametrize("overrides,pattern", [
    ({"aggregator.name": "krum", "attack.name": "scaling",
      "attack.num_byzantine": 5},
     r"attack.num_byzantine \(used as aggregator.num_byzantine\)=5 is too "
     r"large for krum with num_clients=10"),
    ({"aggregator.name": "krum", "aggregator.num_byzantine": 4},
     r"aggregator.num_byzantine=4 is too large for krum with num_clients=10"),
    ({"attack.name": "telepathy", "attack.num_byzantine": 1},
     r"attack.name='telepathy' is not known"),
    ({"aggregator.name": "mode"}, r"aggregator.name='mode' is not known"),
    ({"aggregator.name": "trimmed_mean", "aggregator.trim_fraction": 0.6},
     r"aggregator.trim_fraction=0.6 must be in \(0, 0.5\)"),
    ({"aggregator.name": "trimmed_mean", "aggregator.num_trim": 5},
     r"aggregator.num_trim=5 is invalid for trimmed_mean"),
    ({"data.partition": "zipf"}, r"data.partition='zipf'"),
    ({"model.name": "vgg"}, r"model.name='vgg'"),
    ({"attack.name": "scaling", "attack.num_byzantine": 0},
     r"attack.num_byzantine >= 1"),
    ({"attack.num_byzantine": 11}, r"attack.num_byzantine=11"),
    ({"client.learning_rate": 0.0}, r"client.learning_rate must be > 0"),
    ({"num_rounds": 0}, r"num_rounds must be >= 1"),
    ({"scorer.name": "robust_zscore", "scorer.threshold": -1.0},
     r"scorer.threshold must be > 0"),
    ({"attack.name": "backdoor", "attack.num_byzantine": 1,
      "attack.fraction": 0.0}, r"attack.fraction=0.0 must be in"),
    ({"attack.name": "targeted_flip", "attack.num_byzantine": 1,
      "attack.source": 3}, r"attack.source and attack.target must differ"),
    ({"aggregator.name": "gan_filter", "aggregator.threshold_rule": "vote"},
     r"aggregator.name='gan_filter' cannot work: "
     r"aggregator.threshold_rule='vote' is not known"),
    ({"aggregator.name": "mean", "aggregator.pre_aggregators": ("clip_by_norm",)},
     r"clip_by_norm needs aggregator.max_norm"),
    ({"attack.name": "tpa", "attack.num_byzantine": 1, "attack.source": 3},
     r"attack.source=3 and attack.target=3 must be distinct"),
])
def test_invalid_configs_fail_naming_the_field(overrides, pattern):
  with pytest.raises(ValueError, match=pattern):
    experiment.validate_config(_config(**overrides))


def test_trim_fraction_sets_num_trim_and_defaults_follow_attack():
  cfg = _config(**{"aggregator.name": "trimmed_mean",
                   "aggregator.trim_fraction": 0.25})
  assert experiment.aggregator_hparams(cfg) == {"num_trim": 2, "method": "auto"}
  cfg = _config(**{"aggregator.name": "krum", "attack.name": "scaling",
                   "attack.num_byzantine": 3, "aggregator.radius": 1.0})
  assert experiment.aggregator_hparams(cfg) == {"num_byzantine": 3}


def test_build_experiment_runs_a_round_with_data_poisoning():
  cfg = _config(**{"num_clients": 5, "attack.name": "backdoor",
                   "attack.num_byzantine": 1, "attack.target": 0,
                   "model.hidden": (8,)})
  exp = experiment.build_experiment(cfg)
  assert exp.byzantine.tolist() == [True, False, False, False, False]
  state = exp.init_state()
  state, metrics = exp.round_fn(state, exp.data,
                                jax.random.fold_in(state.key, 0))
  out = exp.eval_fn(state.params)
  assert {"accuracy", "loss", "per_class_accuracy",
          "backdoor_success"} <= set(out)
  assert int(state.round) == 1


def test_a_label_outside_the_data_set_fails_when_the_attack_is_built():
  cfg = _config(**{"attack.name": "backdoor", "attack.num_byzantine": 1,
                   "attack.target": 10})
  experiment.validate_config(cfg)  # the classes are not known yet
  dataset = experiment.build_dataset(cfg)
  with pytest.raises(ValueError, match=r"attack.target=10 is outside the 10"):
    experiment.build_attack(cfg, dataset=dataset)


def test_unknown_aggregator_lists_every_registered_choice_with_defenses():
  with pytest.raises(ValueError) as err:
    experiment.validate_config(_config(**{"aggregator.name": "mode"}))
  for name in ("fltrust", "gan_filter", "romoa", "krum", "centered_clipping"):
    assert repr(name) in str(err.value)


def test_random_byzantine_set_is_seeded():
  cfg = _config(**{"attack.name": "sign_flip", "attack.num_byzantine": 3,
                   "attack.byzantine": "random"})
  a = experiment.byzantine_mask(cfg)
  b = experiment.byzantine_mask(cfg)
  assert a.sum() == 3 and (a == b).all()


def test_robust_zscore_scorer_flags_scaled_clients():
  cfg = _config(**{"num_clients": 6, "attack.name": "scaling",
                   "attack.num_byzantine": 1, "attack.factor": 100.0,
                   "scorer.name": "robust_zscore", "model.hidden": (8,)})
  exp = experiment.build_experiment(cfg)
  state, metrics = exp.round_fn(exp.init_state(), exp.data)
  assert float(metrics["tpr"]) == 1.0 and float(metrics["fpr"]) == 0.0
  assert metrics["flagged"].tolist() == [True] + [False] * 5


def test_aggregator_aware_attack_targets_the_configured_rule():
  cfg = _config(**{"num_clients": 6, "attack.name": "aggregator_aware",
                   "attack.num_byzantine": 1, "aggregator.name": "mean",
                   "model.hidden": (8,)})
  assert "stealth" not in experiment.attack_names()
  attack = experiment.build_attack(cfg)
  assert attack.name == "aggregator_aware" and attack.poison_data is None
  updates = jax.random.normal(jax.random.PRNGKey(0), (6, 5))
  mask = jax.numpy.arange(6) == 0
  poisoned = attack(jax.random.PRNGKey(1), updates, mask)
  assert bool((poisoned[1:] == updates[1:]).all())
  assert not bool((poisoned[0] == updates[0]).all())
