"""Strategic adversaries: the distance bound holds; validation evasion is accepted."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import aggregators as agg
from robustfl_jax import attacks
from robustfl_jax import defenses
from robustfl_jax.models import MLP

N, F, D = 10, 3, 6


def _example(seed=0):
  rng = np.random.default_rng(seed)
  updates = jnp.asarray(0.5 + rng.normal(size=(N, D)), jnp.float32)
  mask = jnp.zeros(N, bool).at[jnp.arange(F)].set(True)
  return updates, mask


def _honest(updates, mask):
  h = np.asarray(updates, np.float64)[~np.asarray(mask)]
  mean = h.mean(0)
  return mean, np.sqrt(((h - mean) ** 2).sum(1)).max()


RULES = {"mean": {}, "median": {}, "trimmed_mean": {"num_trim": F},
         "krum": {"num_byzantine": F}, "geometric_median": {"max_iter": 10},
         "centered_clipping": {"radius": 1.0, "num_iters": 2}}


@pytest.mark.parametrize("rule,budget", [(r, 0.5 if r == "mean" else 1.0)
                                         for r in sorted(RULES)])
def test_byzantine_rows_stay_inside_the_honest_ball(rule, budget):
  updates, mask = _example(1)
  attack = attacks.distance_bounded(rule, rule_hparams=RULES[rule], budget=budget,
                                    num_steps=4)
  out = np.asarray(attack(jax.random.PRNGKey(0), updates, mask))
  mean, radius = _honest(updates, mask)
  dist = np.sqrt(((out[:F] - mean) ** 2).sum(1))
  assert np.all(dist <= budget * radius * (1 + 1e-5) + 1e-6)
  np.testing.assert_array_equal(out[F:], np.asarray(updates)[F:])
  # It does damage: the rule's output moves farther from the honest mean
  # than when the Byzantine clients send the honest mean.
  rule_fn = agg.differentiable_rule(rule, **RULES[rule])
  benign = np.asarray(updates).copy()
  benign[:F] = mean
  dev = lambda u: np.linalg.norm(np.asarray(rule_fn(jnp.asarray(u, jnp.float32))) - mean)
  assert dev(out) > dev(benign)
  if rule == "mean":
    # The optimum in closed form: all Byzantine rows on the sphere, aligned,
    # move the mean by f/n * budget * R.
    assert dev(out) == pytest.approx(F / N * budget * radius, rel=2e-3)


@pytest.mark.parametrize("n", [9, 10])
def test_differentiable_median_and_trimmed_mean_match_the_library(n):
  updates = np.random.default_rng(n).normal(size=(n, D)).astype(np.float32)
  updates[1] = updates[4]           # ties: equal rows
  updates[2, ::2] = updates[0, ::2]  # and equal entries in some columns
  updates = jnp.asarray(updates)
  np.testing.assert_array_equal(agg.differentiable_rule("median")(updates),
                                agg.coordinate_median(updates))
  np.testing.assert_allclose(agg.differentiable_rule("trimmed_mean", num_trim=2)(updates),
                             agg.trimmed_mean(updates, num_trim=2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule,lo,hi", [("median", None, None), ("trimmed_mean", 2, 8)])
def test_differentiable_order_statistics_gradient_is_the_rank_indicator(rule, lo, hi):
  n = 10
  updates = np.random.default_rng(1).normal(size=(n, D)).astype(np.float32)
  updates[3] = updates[7]  # a tie: exactly one of the two rows carries it
  fn = agg.differentiable_rule(rule, num_trim=2)
  grad = np.asarray(jax.grad(lambda u: jnp.sum(fn(u)))(jnp.asarray(updates)))
  # The stable sort's ranks give the expected weights, column by column.
  ranks = np.argsort(np.argsort(updates, axis=0, kind="stable"), axis=0, kind="stable")
  if rule == "median":
    want = 0.5 * (ranks == (n - 1) // 2) + 0.5 * (ranks == n // 2)
  else:
    want = ((ranks >= lo) & (ranks < hi)) / (hi - lo)
  np.testing.assert_allclose(grad, want, atol=1e-7)
  np.testing.assert_allclose(grad.sum(0), 1.0, rtol=1e-6)


def test_differentiable_geometric_median_matches_the_library():
  updates, _ = _example(3)
  x = np.asarray(updates, np.float64)
  z = x.mean(0)
  for _ in range(2000):  # Weiszfeld in float64: the reference optimum
    w = 1 / np.maximum(1e-5, np.linalg.norm(x - z, axis=1))
    z = (w / w.sum()) @ x
  ours = agg.differentiable_rule("geometric_median", max_iter=200)(updates)
  np.testing.assert_allclose(ours, z, atol=1e-5)
  # The library stops when the float32 objective stops changing; near the
  # optimum the objective is flat (a step of 3e-4 changes it by under one
  # ulp), so its point is resolved to about sqrt(eps) of the scale.
  np.testing.assert_allclose(agg.geometric_median(updates, ftol=1e-10, max_iter=500,
                                                  init="mean"), z, atol=1e-3)
  with pytest.raises(ValueError, match="no differentiable form of rule"):
    agg.differentiable_rule("fltrust")


def _model_and_data():
  model = MLP(hidden=(6,), num_classes=3)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))["params"]
  rng = np.random.default_rng(0)
  x = rng.normal(size=(12, 4)).astype(np.float32)
  y = (np.arange(12) % 3).astype(np.int32)
  flat, _ = jax.flatten_util.ravel_pytree(params)
  updates = jnp.asarray(0.1 * rng.normal(size=(N, flat.shape[0])), jnp.float32)
  return model, params, x, y, flat, updates


class _DistanceProbe:
  """A hand-made probe: score = -|u - c|, accepted when the score >= -limit."""

  def __init__(self, center, limit):
    self.center, self.limit = center, limit

  def reference(self, w, key):
    del w, key
    return None

  def score(self, ref, w, updates):
    del ref, w
    return -jnp.linalg.norm(updates - self.center, axis=1)

  def accept(self, ref, scores, valid):
    del ref
    return valid & (scores >= -self.limit)


def test_validation_evading_sends_the_largest_accepted_candidate():
  model, params, x, y, flat, updates = _model_and_data()
  # One honest client far away: the "no lower than the worst honest score"
  # floor is then loose and the probe's own limit decides.
  updates = updates.at[N - 1].add(1e3)
  mask = jnp.zeros(N, bool).at[:F].set(True)
  mean, _ = _honest(updates, mask)
  center = jnp.asarray(mean, jnp.float32)
  common = dict(apply_fn=model.apply, params_template=params, x_attack=x, y_attack=y,
                target_class=0, flip_to=1, poison_steps=3, num_candidates=5,
                max_scale=2.0)
  key = jax.random.PRNGKey(0)

  def sent(limit, offset=0.0):
    probe = _DistanceProbe(center + offset, limit)
    attack = attacks.validation_evading(probe=probe, **common)
    return np.asarray(jax.jit(attack)(key, updates, mask, global_params=flat), np.float64)

  # Accept everything: the largest scale (2.0); nothing: the honest mean.
  far = sent(1e9)
  full = np.linalg.norm(far[0] - mean)
  assert full > 0
  np.testing.assert_allclose(sent(1.0, offset=1e4)[:F],
                             np.broadcast_to(mean, (F, mean.size)), rtol=1e-5, atol=1e-4)
  # A limit of 0.6 * full admits the scales 0, 0.5, 1.0 of 2.0: it sends 1.0.
  mid = sent(0.6 * full)
  np.testing.assert_allclose(np.linalg.norm(mid[:F] - mean, axis=1), full / 2, rtol=1e-4)
  np.testing.assert_allclose(mid[0] - mean, (far[0] - mean) / 2, rtol=1e-3, atol=1e-5)
  np.testing.assert_array_equal(mid[F:], np.asarray(updates, np.float64)[F:])


def test_validation_evading_without_probe_stays_in_the_distance_ball():
  model, params, x, y, flat, updates = _model_and_data()
  mask = jnp.zeros(N, bool).at[:F].set(True)
  attack = attacks.validation_evading(apply_fn=model.apply, params_template=params,
                                      x_attack=x, y_attack=y, target_class=2, flip_to=0,
                                      poison_steps=3)
  out = np.asarray(attack(jax.random.PRNGKey(1), updates, mask, global_params=flat))
  mean, radius = _honest(updates, mask)
  assert np.all(np.linalg.norm(out[:F] - mean, axis=1) <= radius * (1 + 1e-5))
  with pytest.raises(ValueError, match="flip_to"):
    attacks.validation_evading(apply_fn=model.apply, params_template=params, x_attack=x,
                               y_attack=y, target_class=1, flip_to=1)


def test_validation_evading_against_fltrust_keeps_trust_above_the_worst_honest():
  import optax  # pylint: disable=import-outside-toplevel
  model, params, x, y, flat, updates = _model_and_data()
  probe = defenses.fltrust_probe(model.apply, params, x, y, optimizer=optax.sgd(0.5),
                                 batch_size=12)
  mask = jnp.zeros(N, bool).at[:F].set(True)
  attack = attacks.validation_evading(apply_fn=model.apply, params_template=params,
                                      x_attack=x, y_attack=y, target_class=0, flip_to=1,
                                      probe=probe, poison_steps=3)

  @jax.jit
  def run(key, updates, flat):
    g0 = probe.reference(flat, key)
    honest_like = updates.at[F:].set(g0 + 0.5 * updates[F:])
    return defenses.trust_scores(attack(key, honest_like, mask, global_params=flat), g0)

  trust = run(jax.random.PRNGKey(4), updates, flat)
  assert float(jnp.min(trust[:F])) >= float(jnp.min(trust[F:])) - 1e-6
  assert float(jnp.min(trust[:F])) > 0


def test_targeted_distance_bounded_lowers_the_poison_loss_inside_the_ball():
  model, params, x, y, flat, updates = _model_and_data()
  mask = jnp.zeros(N, bool).at[:F].set(True)
  objective = attacks.poison_objective(model.apply, params, x, y,
                                         target_class=0, flip_to=1)
  key = jax.random.PRNGKey(0)
  targeted = attacks.distance_bounded("mean", budget=1.0, num_steps=10,
                                      objective=objective)
  plain = attacks.distance_bounded("mean", budget=1.0, num_steps=10)
  out_t = np.asarray(jax.jit(targeted)(key, updates, mask, global_params=flat))
  out_d = np.asarray(plain(key, updates, mask))
  mean, radius = _honest(updates, mask)
  assert np.all(np.linalg.norm(out_t[:F] - mean, axis=1)
                <= radius * (1 + 1e-5) + 1e-6)
  np.testing.assert_array_equal(out_t[F:], np.asarray(updates)[F:])
  value = lambda u: float(objective(jnp.asarray(u).mean(0), None,
                                    global_params=flat))
  benign = np.asarray(updates).copy()
  benign[:F] = mean
  # The targeted rows raise the objective (lower the source -> target poison
  # loss) beyond both the honest mean and the distance-maximising rows.
  assert value(out_t) > value(benign) + 1e-4
  assert value(out_t) > value(out_d)
  with pytest.raises(ValueError, match="target != source"):
    attacks.poison_objective(model.apply, params, x, y, 1, 1)
  with pytest.raises(ValueError, match="objective="):
    attacks.get("distance_bounded", rule_name="mean", objective="loss")
