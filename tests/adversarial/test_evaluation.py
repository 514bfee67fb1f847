"""robust_accuracy's cascade and the PGD eval."""

import functools

import jax
import numpy as np
import pytest

from robustfl_jax import adversarial as adv


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
