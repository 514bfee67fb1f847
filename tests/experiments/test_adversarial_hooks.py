"""The config hooks of adversarial training and evaluation (experiments/adversarial.py)."""

import copy
import json
import os

import pytest

from robustfl_jax.experiments import adversarial as adversarial_hooks
from robustfl_jax.experiments import runner
from robustfl_jax.experiments.builders import validate_config
from robustfl_jax.experiments.config import default_config


@pytest.mark.parametrize("field,value,match", [
    ("client.adversarial_training.method", "fgsm", "adversarial_training.method"),
    ("client.adversarial_training.norm", "l1", "adversarial_training.norm"),
    ("client.adversarial_training.steps", 0, "adversarial_training.steps"),
    ("client.adversarial_training.epsilon", 0.0, "adversarial_training.epsilon"),
    ("client.adversarial_training.step_size", -1.0,
     "adversarial_training.step_size"),
    ("client.adversarial_training.beta", -1.0, "adversarial_training.beta"),
    ("client.adversarial_training.sigma", 0.0, "adversarial_training.sigma"),
    ("eval.attack_epsilon", -0.1, "eval.attack_epsilon"),
    ("eval.attack_steps", 0, "eval.attack_steps"),
    ("eval.attack_norm", "l0", "eval.attack_norm"),
])
def test_config_errors_name_the_field(field, value, match):
  config = default_config()
  config.client.adversarial_training.method = "pgd"
  config.eval.attack_epsilon = 0.1
  section, *rest = field.split(".")
  target = config[section]
  for part in rest[:-1]:
    target = target[part]
  target[rest[-1]] = value
  with pytest.raises(ValueError, match=match.replace(".", r"\.")):
    validate_config(config)


def test_protocol_that_ignores_the_objective_is_refused():
  config = default_config()
  config.client.adversarial_training.method = "pgd"
  config.protocol = "romoa_async"
  with pytest.raises(ValueError, match=r"client\.adversarial_training\.method"):
    adversarial_hooks.validate(config)


def test_federated_adversarial_run_reports_robust_accuracy(tmp_path):
  config = default_config()
  config.num_rounds = 2
  config.num_clients = 4
  config.eval_every = 2
  config.model.hidden = (8,)
  config.attack.name = "sign_flip"
  config.attack.num_byzantine = 1
  config.aggregator.name = "coordinate_median"
  config.client.adversarial_training.method = "pgd"
  config.client.adversarial_training.steps = 2
  config.eval.attack_epsilon = 0.1
  config.eval.attack_steps = 3
  summary = runner.train(config, str(tmp_path / "adv"), log=lambda _: None,
                         checkpoint=False, plot=False).summary
  assert summary["robust_attack"] == "pgd3"
  assert 0 <= summary["robust_accuracy"] <= summary["clean_accuracy"] <= 1
  assert summary["clean_accuracy"] == pytest.approx(
      summary["final_test_accuracy"], abs=1e-6)
  on_disk = json.load(open(os.path.join(tmp_path, "adv", "summary.json")))
  assert on_disk["robust_accuracy"] == summary["robust_accuracy"]
  # Without eval.attack_epsilon the summary gets no adversarial fields.
  plain = copy.deepcopy(config)
  plain.eval.attack_epsilon = None
  assert adversarial_hooks.robust_summary(plain, None, None, None, None) == {}
