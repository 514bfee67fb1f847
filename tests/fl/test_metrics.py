"""Evaluation metrics and detection rates."""

import jax
import jax.numpy as jnp
import numpy as np

from robustfl_jax import fl


def test_classification_metrics_per_class():
  logits = jnp.eye(3)[jnp.array([0, 1, 1, 2, 0])] * 5.0
  labels = jnp.array([0, 1, 2, 2, 0])
  m = fl.classification_metrics(logits, labels, 4)
  np.testing.assert_allclose(m["accuracy"], 0.8)
  np.testing.assert_allclose(m["error_rate"], 0.2, atol=1e-7)
  np.testing.assert_allclose(m["per_class_accuracy"][:3], [1.0, 1.0, 0.5])
  assert np.isnan(m["per_class_accuracy"][3])  # class 3 absent


def test_eval_fn_batching_matches_one_pass():
  w = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
  apply = lambda variables, x, train=False: x @ variables["params"]
  x = jax.random.normal(jax.random.PRNGKey(1), (37, 5))
  y = jax.random.randint(jax.random.PRNGKey(2), (37,), 0, 4)
  whole = fl.classification_metrics(x @ w, y, 4)
  batched = jax.jit(fl.make_eval_fn(apply, x, y, 4, batch_size=8))(w)
  np.testing.assert_allclose(batched["accuracy"], whole["accuracy"])
  np.testing.assert_allclose(batched["loss"], whole["loss"], rtol=1e-5)


def test_targeted_and_backdoor_metrics():
  # A "model" that predicts class 3 whenever the last feature is 1.
  def apply(variables, x, train=False):
    del variables
    hit = x[:, -1:] > 0.5
    return jnp.where(hit, jax.nn.one_hot(3, 4) * 10, jax.nn.one_hot(0, 4) * 10)
  x = jnp.zeros((10, 6)).at[:4, -1].set(1.0)
  y = jnp.array([6 % 4] * 4 + [1] * 6)  # source class 2 for the first four
  m = fl.targeted_metrics(apply(None, x), y, source=2, target=3)
  np.testing.assert_allclose(m["targeted_flip_rate"], 1.0)
  assert float(m["targeted_confidence"]) > 0.99
  eval_fn = fl.make_eval_fn(apply, x, y, 4, backdoor=(3, 1, 1.0))
  out = eval_fn(None)
  # The trigger sets the last feature to 1: every non-target sample flips.
  np.testing.assert_allclose(out["backdoor_success"], 1.0)


def test_detection_rates_edge_cases():
  r = fl.detection_rates(jnp.array([True, False, True, False]),
                         jnp.array([True, True, False, False]))
  np.testing.assert_allclose([r["tpr"], r["fpr"]], [0.5, 0.5])
  none_byz = fl.detection_rates(jnp.array([False, True]), jnp.zeros(2, bool))
  assert np.isnan(none_byz["tpr"]) and float(none_byz["fpr"]) == 0.5
