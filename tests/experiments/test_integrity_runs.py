"""Whole runs for the integrity issue: a far finite scaling attack against
the Weiszfeld rules, and an undefined training loss reported as undefined."""

import json
import os

import pytest

from robustfl_jax.experiments import load_config, train

ATTACK = {"num_rounds": 10, "eval_every": 10, "attack.factor": 1e6}


@pytest.fixture(scope="module")
def median_accuracy(tmp_path_factory):
  config = load_config("digits_attack.py", ATTACK)  # coordinate median
  return train(config, str(tmp_path_factory.mktemp("median")),
               log=lambda _: None, checkpoint=False, plot=False
               ).summary["final_test_accuracy"]


@pytest.mark.parametrize("rule", ["rfa", "geometric_median"])
def test_weiszfeld_rules_hold_a_scaling_by_a_million(tmp_path, rule,
                                                     median_accuracy):
  config = load_config("digits_attack.py", {**ATTACK, "aggregator.name": rule})
  accuracy = train(config, str(tmp_path / rule), log=lambda _: None,
                   checkpoint=False, plot=False).summary["final_test_accuracy"]
  assert accuracy >= median_accuracy - 0.03, (accuracy, median_accuracy)


def test_train_loss_is_null_when_no_client_is_honest(tmp_path):
  config = load_config("digits_fedavg.py", {
      "num_rounds": 2, "eval_every": 1, "num_clients": 4,
      "model.hidden": (8,), "attack.name": "sign_flip",
      "attack.num_byzantine": 4})
  lines = []
  result = train(config, str(tmp_path / "run"), log=lines.append, plot=False)
  assert all(row["train_loss"] is None for row in result.history)
  rows = [json.loads(l) for l in open(os.path.join(tmp_path, "run",
                                                   "metrics.jsonl"))]
  assert rows[-1]["train_loss"] is None
  assert any("train_loss n/a" in line for line in lines)
