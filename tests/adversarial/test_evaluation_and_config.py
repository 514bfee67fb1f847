"""robust_accuracy's cascade, the PGD eval, and the config wiring."""

import copy
import functools
import json
import os

import jax
import numpy as np
import pytest

from robustfl_jax import adversarial as adv
from robustfl_jax.fl import runner
from robustfl_jax.fl.config import default_config
from robustfl_jax.fl.experiment import validate_config


def _deterministic_attacks(eps):
  fgsm = functools.partial(adv.fgsm, epsilon=eps)
  pgd = functools.partial(adv.pgd, epsilon=eps, num_steps=10, rand_init=False)
  return [("fgsm", lambda f, p, x, y, k: fgsm(f, p, x, y)),
          ("pgd10", lambda f, p, x, y, k: pgd(f, p, x, y, None))]


def test_cascade_equals_all_points_and_is_monotone(trained_mlp):
  logits_fn, params, x, y = trained_mlp
  key = jax.random.PRNGKey(0)
  attacks = _deterministic_attacks(0.08)
  cascade = adv.robust_accuracy(logits_fn, params, x, y, key, attacks=attacks,
                                batch_size=50)
  alone = adv.robust_accuracy(logits_fn, params, x, y, key, attacks=attacks,
                              batch_size=50, cascade=False)
  # Attacks act per example, so skipping broken points changes nothing.
  assert cascade["robust_accuracy"] == alone["robust_accuracy"]
  assert cascade["clean_accuracy"] == alone["clean_accuracy"] > 0.8
  after = [v["robust_accuracy"] for v in cascade["per_attack"].values()]
  assert cascade["clean_accuracy"] >= after[0] >= after[1]
  assert after[1] == cascade["robust_accuracy"]
  assert cascade["robust_accuracy"] <= min(
      v["robust_accuracy"] for v in alone["per_attack"].values())
  # The second attack of the cascade only saw the survivors of the first.
  n = len(y)
  assert cascade["per_attack"]["pgd10"]["num_attacked"] == round(after[0] * n)
  assert alone["per_attack"]["pgd10"]["num_attacked"] == round(
      alone["clean_accuracy"] * n)


def test_default_cascade_and_pgd_eval(trained_mlp):
  logits_fn, params, x, y = trained_mlp
  key = jax.random.PRNGKey(1)
  out = adv.robust_accuracy(
      logits_fn, params, x, y, key,
      attacks=adv.default_attacks(0.1, pgd_steps=5, apgd_steps=5,
                                  num_targets=1), batch_size=64)
  assert list(out["per_attack"]) == ["fgsm", "pgd5", "apgd_ce", "apgd_t"]
  assert out["robust_accuracy"] < out["clean_accuracy"]
  eval_fn = adv.make_pgd_eval_fn(logits_fn, x, y, epsilon=0.1, num_steps=5,
                                 batch_size=50)
  pgd = jax.device_get(eval_fn(params, key))
  assert float(pgd["clean_accuracy"]) == pytest.approx(out["clean_accuracy"])
  assert float(pgd["robust_accuracy"]) <= float(pgd["clean_accuracy"])
  # The cascade is at least as strong as PGD alone (a small key margin).
  assert out["robust_accuracy"] <= float(pgd["robust_accuracy"]) + 0.03


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
  if "protocol" not in config:
    pytest.skip("no config.protocol in this checkout")
  config.client.adversarial_training.method = "pgd"
  config.protocol = "romoa_async"
  with pytest.raises(ValueError, match=r"client\.adversarial_training\.method"):
    adv.training.validate_config(config)


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
                         checkpoint=False, plot=False)
  assert summary["robust_attack"] == "pgd3"
  assert 0 <= summary["robust_accuracy"] <= summary["clean_accuracy"] <= 1
  assert summary["clean_accuracy"] == pytest.approx(
      summary["final_test_accuracy"], abs=1e-6)
  on_disk = json.load(open(os.path.join(tmp_path, "adv", "summary.json")))
  assert on_disk["robust_accuracy"] == summary["robust_accuracy"]
  # Without eval.attack_epsilon the summary gets no adversarial fields.
  plain = copy.deepcopy(config)
  plain.eval.attack_epsilon = None
  assert adv.summary_metrics(plain, None, None, None, None) == {}
