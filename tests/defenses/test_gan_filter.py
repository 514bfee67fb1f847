"""The GAN validation filter: threshold rules, scores, kept rows, config checks."""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import defenses
from robustfl_jax.experiments import config as config_lib
from robustfl_jax.experiments import builders as experiment
from robustfl_jax.models import MLP
from robustfl_jax.models.gan import ConditionalGenerator


def _rule(rule, scores, valid=None, **kw):
  scores = jnp.asarray(scores, jnp.float32)
  valid = jnp.ones(scores.shape, bool) if valid is None else jnp.asarray(valid)
  fn = jax.jit(functools.partial(defenses.accept_by_rule, rule=rule, **kw))
  return np.asarray(fn(scores, valid))


def test_fixed_and_global_rules():
  s = [0.9, 0.5, 0.49, 0.1]
  assert _rule("fixed", s, threshold=0.5).tolist() == [True, True, False, False]
  kept = _rule("global", s, margin=0.05, global_score=0.55)
  assert kept.tolist() == [True, True, False, False]


def test_median_rule_ignores_invalid_rows():
  s = [0.9, 0.8, 0.7, 0.2, 0.0]
  valid = [True, True, True, True, False]
  # median of the 4 valid scores = 0.75; margin 0.1 keeps >= 0.65.
  assert _rule("median", s, valid, margin=0.1).tolist() == [True, True, True, False, False]


def test_two_cluster_rule_keeps_the_upper_cluster_or_everyone():
  s = [0.9, 0.88, 0.2, 0.91, 0.25]
  assert _rule("two_cluster", s, margin=0.1).tolist() == [True, True, False, True, False]
  assert _rule("two_cluster", [0.5] * 5, margin=0.1).all()
  # Two groups closer than the margin are one cluster.
  assert _rule("two_cluster", [0.9, 0.88, 0.86, 0.84], margin=0.1).all()


def _setup():
  model = MLP(hidden=(6,), num_classes=3)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))["params"]
  gen = ConditionalGenerator(output_shape=(4,), num_classes=3, hidden=(8,))
  gparams = gen.init(jax.random.PRNGKey(1), jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32))["params"]
  gan = defenses.GANResult(gen, gparams, None, jnp.zeros((0, 2)), 2, 3)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  return model, params, gan, flat, unravel


def _constant_class_update(params, cls):
  """An update that makes the model predict ``cls`` everywhere."""
  zeros = jax.tree.map(jnp.zeros_like, params)
  zeros["Dense_1"]["bias"] = zeros["Dense_1"]["bias"].at[cls].set(1e3)
  return jax.flatten_util.ravel_pytree(zeros)[0]


def test_scores_are_the_accuracies_on_the_synthetic_set():
  model, params, gan, flat, unravel = _setup()
  probe = defenses.gan_filter_probe(model.apply, params, gan, per_class=5, rule="fixed")
  rng = np.random.default_rng(0)
  updates = jnp.asarray(rng.normal(size=(3, flat.shape[0])), jnp.float32)

  @jax.jit
  def run(flat, updates, key):
    ref = probe.reference(flat, key)
    return ref, probe.score(ref, flat, updates)

  (x, y, global_score), scores = run(flat, updates, jax.random.PRNGKey(2))
  assert x.shape == (15, 4) and np.bincount(np.asarray(y)).tolist() == [5, 5, 5]
  x, y = np.asarray(x, np.float64), np.asarray(y)

  def accuracy(p):  # the MLP in numpy
    h = np.maximum(x @ np.asarray(p["Dense_0"]["kernel"]) + np.asarray(p["Dense_0"]["bias"]), 0)
    logits = h @ np.asarray(p["Dense_1"]["kernel"]) + np.asarray(p["Dense_1"]["bias"])
    return float(np.mean(np.argmax(logits, -1) == y))

  for i in range(3):
    assert float(scores[i]) == pytest.approx(accuracy(unravel(flat + updates[i])))
  assert float(global_score) == pytest.approx(accuracy(params))


@pytest.mark.parametrize("threshold,kept", [(0.3, [True, True, False]),
                                            (0.34, [False, False, False])])
def test_filter_keeps_rows_above_the_threshold_and_never_nan(threshold, kept):
  model, params, gan, flat, _ = _setup()
  agg = defenses.gan_filter(model.apply, params, gan, per_class=4, rule="fixed",
                            threshold=threshold)
  u0, u1 = _constant_class_update(params, 0), _constant_class_update(params, 1)
  updates = jnp.stack([u0, u1, jnp.full_like(u0, jnp.nan)])
  out, _, info = jax.jit(agg.update)(updates, agg.init(flat), key=jax.random.PRNGKey(0),
                                     global_params=flat)
  # A constant prediction is right on exactly one class in three.
  np.testing.assert_allclose(info["scores"], [1 / 3, 1 / 3, 0.0], atol=1e-6)
  assert np.asarray(info["selected"]).tolist() == kept
  assert np.all(np.isfinite(out))
  expected = (u0 + u1) / 2 if kept[0] else jnp.zeros_like(u0)
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  assert int(info["num_nonfinite"]) == 1


def test_bad_settings_name_the_setting():
  model, params, gan, _, _ = _setup()
  with pytest.raises(ValueError, match="threshold_rule='mode'"):
    defenses.gan_filter(model.apply, params, gan, rule="mode")
  with pytest.raises(ValueError, match="threshold=1.5"):
    defenses.gan_filter(model.apply, params, gan, rule="fixed", threshold=1.5)
  with pytest.raises(ValueError, match="validation_per_class"):
    defenses.gan_filter(model.apply, params, gan, per_class=0)


def test_experiment_config_accepts_the_defences_and_checks_their_fields():
  config = config_lib.default_config()
  for name in ("fltrust", "gan_filter"):
    config.aggregator.name = name
    experiment.validate_config(config)
  config.aggregator.shared_fraction = 0.0
  with pytest.raises(ValueError, match="aggregator.shared_fraction"):
    experiment.validate_config(config)
  config.aggregator.name = "fltrust"
  config.aggregator.root_size = 0
  with pytest.raises(ValueError, match="aggregator.root_size"):
    experiment.validate_config(config)


def test_warmup_only_records_then_the_rule_applies():
  model, params, gan, flat, _ = _setup()
  agg = defenses.gan_filter(model.apply, params, gan, per_class=4, rule="fixed",
                            threshold=0.34, warmup_rounds=2)
  u0, u1 = _constant_class_update(params, 0), _constant_class_update(params, 1)
  updates = jnp.stack([u0, u1])
  step = jax.jit(functools.partial(agg.update, key=jax.random.PRNGKey(0),
                                   global_params=flat))
  for r, kept in [(0, [True, True]), (1, [True, True]), (2, [False, False])]:
    out, _, info = step(updates, agg.init(flat), round=jnp.int32(r))
    assert np.asarray(info["selected"]).tolist() == kept
    assert np.asarray(info["would_keep"]).tolist() == [False, False]
  np.testing.assert_allclose(
      step(updates, agg.init(flat), round=jnp.int32(1))[0], (u0 + u1) / 2,
      rtol=1e-6)
  with pytest.raises(ValueError, match="warmup_rounds=-1"):
    defenses.gan_filter(model.apply, params, gan, warmup_rounds=-1)


def test_recording_filter_records_gaps_and_keeps_every_valid_row():
  model, params, gan, flat, _ = _setup()
  probe = defenses.gan_filter_probe(model.apply, params, gan, per_class=4)
  agg = defenses.recording_filter(probe, num_rounds=3, num_clients=2)
  u0 = _constant_class_update(params, 0)
  updates = jnp.stack([u0, jnp.full_like(u0, jnp.nan)])
  state = agg.init(flat)
  out, state, info = jax.jit(agg.update)(updates, state, key=jax.random.PRNGKey(0),
                                         global_params=flat, round=jnp.int32(1))
  gaps = np.asarray(state.gaps)
  assert np.all(np.isnan(gaps[[0, 2]])) and np.isnan(gaps[1, 1])
  assert gaps[1, 0] == pytest.approx(float(info["scores"][0]) * 0
                                     + float(_global_score(probe, flat))
                                     - float(info["scores"][0]))
  np.testing.assert_allclose(out, u0, rtol=1e-6)


def _global_score(probe, flat):
  return probe.reference(flat, jax.random.PRNGKey(0))[2]


def test_calibrate_margin_bounds_the_honest_false_positives():
  rng = np.random.default_rng(0)
  gaps = rng.uniform(0, 1, size=(30, 10))
  gaps[:5] = 5.0                  # warm-up rounds: ignored
  honest = np.arange(10) >= 2
  gaps[:, :2] = 9.0               # Byzantine columns: ignored
  m = defenses.calibrate_margin(gaps, honest, warmup_rounds=5,
                                max_false_positives=0.05)
  after = gaps[5:, honest]
  assert np.mean(after > m) <= 0.05
  # The smallest such margin: any smaller recorded value excludes more.
  smaller = after[after < m].max()
  assert np.mean(after > smaller) > 0.05
  assert defenses.calibrate_margin(-np.ones((3, 2)), [True, True]) == 0.0
  with pytest.raises(ValueError, match="no honest gap"):
    defenses.calibrate_margin(gaps, honest, warmup_rounds=30)
  with pytest.raises(ValueError, match="max_false_positives"):
    defenses.calibrate_margin(gaps, honest, max_false_positives=1.0)


def test_robust_z_is_the_median_and_lower_quartile_of_the_valid_rows():
  s = np.array([0.9, 0.8, 0.85, 0.1, 0.0, 0.82], np.float32)
  valid = np.array([True, True, True, True, False, True])
  z = np.asarray(defenses.robust_z(jnp.asarray(s), jnp.asarray(valid), 0.005))
  v = s[valid]
  med = np.median(v)
  scale = (med - np.quantile(v, 0.25)) / 0.6744897501960817
  np.testing.assert_allclose(z[valid], (med - v) / scale, rtol=1e-5)
  # Ties: the scale is floored at the resolution, equal scores are kept.
  tied = jnp.asarray([0.5, 0.5, 0.5, 0.5, 0.49])
  np.testing.assert_allclose(defenses.robust_z(tied, jnp.ones(5, bool), 0.005),
                             [0, 0, 0, 0, 2.0], atol=1e-4)
  assert _rule("robust", tied, margin=1.0, resolution=0.005).tolist() == [
      True, True, True, True, False]


def _robust_kept(scores, k):
  scores = jnp.asarray(scores, jnp.float32)
  accept = jax.jit(jax.vmap(lambda s: defenses.accept_by_rule(
      s, jnp.ones(s.shape[0], bool), "robust", margin=k, resolution=0.005)))
  return np.asarray(accept(scores))


@pytest.mark.parametrize("honest_dist", ["normal", "student_t3"])
def test_robust_rule_with_cantellis_k_keeps_the_honest_cluster(honest_dist):
  """200 rounds of 16 honest scores (normal, or heavy-tailed Student t with 3
  degrees of freedom): Cantelli's k excludes at most 5% of them; the
  normal-theory k = 1.645 excludes more than 5% (the quartiles of 16 scores
  are noisy, and t3 has heavy tails)."""
  rng = np.random.default_rng(0)
  noise = (rng.standard_normal((200, 16)) if honest_dist == "normal"
           else rng.standard_t(3, (200, 16)))
  honest = 0.8 + 0.02 * noise
  k = defenses.cantelli_k(0.05)
  assert k == pytest.approx(4.3589, abs=1e-4)
  assert np.mean(~_robust_kept(honest, k)) <= 0.05
  assert np.mean(~_robust_kept(honest, 1.645)) > 0.05


def test_robust_rule_excludes_planted_outliers():
  """16 honest normal scores and 4 planted low ones per round: every planted
  row is excluded, at most 5% of the honest ones."""
  rng = np.random.default_rng(0)
  honest = 0.8 + 0.02 * rng.standard_normal((200, 16))
  outliers = rng.uniform(0.1, 0.4, (200, 4))
  kept = _robust_kept(np.concatenate([outliers, honest], 1),
                      defenses.cantelli_k(0.05))
  assert not kept[:, :4].any()
  assert np.mean(~kept[:, 4:]) <= 0.05


def test_calibrate_robust_k_takes_the_larger_of_the_fit_and_cantelli():
  rng = np.random.default_rng(1)
  gaps = 0.1 + 0.02 * rng.standard_normal((40, 20))
  gaps[:5] = 3.0                                 # warm-up: ignored
  honest = np.ones(20, bool)
  fit = defenses.calibrate_robust_k(gaps, honest, warmup_rounds=5,
                                    max_false_positives=0.05,
                                    resolution=0.005)
  assert fit["bound_k"] == pytest.approx(defenses.cantelli_k(0.05))
  assert fit["validation_k"] < fit["bound_k"] == fit["k"]   # normal: bound
  # Every round, 2 of 20 honest clients far below: the fit exceeds the bound
  # and keeps all but <= 5% of the decisions.
  gaps[5:, :2] = 0.9
  fit = defenses.calibrate_robust_k(gaps, honest, warmup_rounds=5,
                                    resolution=0.005)
  assert fit["k"] == fit["validation_k"] > fit["bound_k"]
  kept = np.stack([np.asarray(defenses.accept_by_rule(
      jnp.asarray(-g, jnp.float32), jnp.ones(20, bool), "robust",
      margin=fit["k"], resolution=0.005)) for g in gaps[5:]])
  assert np.mean(~kept) <= 0.05
  with pytest.raises(ValueError, match="max_false_positives"):
    defenses.cantelli_k(0.0)
