"""FGSM, PGD, APGD and the seed's AutoAttack: constraints and known answers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, strategies as st

from robustfl_jax import adversarial as adv



def linear_logits(params, x):
  """A linear classifier ``x @ w + b`` on flat inputs."""
  return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]

_ATTACKS = {
    "fgsm": lambda f, p, x, y, k, **kw: adv.fgsm(f, p, x, y, **kw),
    "pgd": functools.partial(adv.pgd, num_steps=5),
    "pgd_targeted": lambda f, p, x, y, k, **kw: adv.pgd(
        f, p, x, y, k, num_steps=5, target=(y + 1) % 10, **kw),
    "apgd_ce": functools.partial(adv.apgd, num_steps=8),
    "apgd_dlr": functools.partial(adv.apgd, num_steps=8, loss="dlr"),
    "apgd_t": functools.partial(adv.apgd_targeted, num_steps=5, num_targets=2),
    "simple_autoattack": functools.partial(adv.simple_autoattack, num_steps=5),
}


def _norms(delta, norm):
  flat = np.asarray(delta).reshape(delta.shape[0], -1)
  if norm == "linf":
    return np.abs(flat).max(axis=1)
  return np.linalg.norm(flat, axis=1)


@pytest.mark.parametrize("name,norm", [
    ("fgsm", "l2"), ("pgd", "linf"), ("pgd", "l2"), ("pgd_targeted", "linf"),
    ("apgd_ce", "l2"), ("apgd_dlr", "linf"), ("apgd_t", "linf"),
    ("simple_autoattack", "l2")])
def test_inside_ball_and_range(name, norm, linear_model):
  params, x, y = linear_model
  for eps in (0.05, 0.3, 2.0):
    x_adv = _ATTACKS[name](linear_logits, params, x, y, jax.random.PRNGKey(3),
                           epsilon=eps, norm=norm)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert np.all(np.asarray(x_adv) >= 0.0) and np.all(np.asarray(x_adv) <= 1.0)
    assert np.all(_norms(x_adv - x, norm) <= eps * (1 + 1e-5) + 1e-6), name
    # A linear model's loss rises along the attack: the ball is used.
    assert float(np.max(_norms(x_adv - x, norm))) > 0.5 * min(eps, 0.3)


@example(eps=0.0, scale=0.0, norm="l2")
@given(eps=st.floats(0.0, 1.0), scale=st.floats(-3.0, 3.0),
       norm=st.sampled_from(["linf", "l2"]))
def test_pgd_ball_property(eps, scale, norm):
  """Any budget, any input offset: inside the ball and the [0, 1] box."""
  rng = np.random.default_rng(1)
  params = {"w": jnp.asarray(rng.normal(size=(64, 10)) * 10 ** scale,
                             jnp.float32), "b": jnp.zeros((10,))}
  x = jnp.asarray(rng.uniform(size=(8, 64)) ** 3, jnp.float32)
  y = jnp.arange(8) % 10
  x_adv = adv.pgd(linear_logits, params, x, y, jax.random.PRNGKey(0),
                  epsilon=eps, num_steps=3, norm=norm)
  assert np.all(np.asarray(x_adv) >= 0) and np.all(np.asarray(x_adv) <= 1)
  assert np.all(_norms(x_adv - x, norm) <= eps * (1 + 1e-5) + 1e-6)
  if eps == 0.0:
    np.testing.assert_array_equal(x_adv, x)


def test_one_compile_for_many_budgets(linear_model):
  params, x, y = linear_model
  fn = functools.partial(adv.pgd, num_steps=4, norm="linf")
  before = adv.pgd.jitted._cache_size()  # pylint: disable=protected-access
  for eps in (0.01, 0.1, 0.2):
    fn(linear_logits, params, x, y, jax.random.PRNGKey(0), epsilon=eps)
  assert adv.pgd.jitted._cache_size() - before <= 1  # pylint: disable=protected-access


def test_pgd_loss_not_below_fgsm(trained_mlp):
  logits_fn, params, x, y = trained_mlp
  for norm, eps in (("linf", 0.1), ("l2", 0.5)):  # pylint: disable=unused-variable
    x_fgsm = adv.fgsm(logits_fn, params, x, y, epsilon=eps, norm=norm)
    x_pgd = adv.pgd(logits_fn, params, x, y, jax.random.PRNGKey(0),
                    epsilon=eps, num_steps=10, norm=norm, unroll=1)
    loss_fgsm = adv.cross_entropy(logits_fn(params, x_fgsm), y)
    loss_pgd = adv.cross_entropy(logits_fn(params, x_pgd), y)
    assert float(jnp.mean(loss_pgd)) >= float(jnp.mean(loss_fgsm))
    # And PGD fools the model at least as often.
    wrong = lambda xa: int(jnp.sum(jnp.argmax(logits_fn(params, xa), -1) != y))
    assert wrong(x_pgd) >= wrong(x_fgsm)


def test_apgd_never_below_its_start(trained_mlp):
  """APGD returns its best point; started at x, its loss is >= the clean one."""
  logits_fn, params, x, y = trained_mlp
  for loss in ("ce", "dlr"):
    x_adv = adv.apgd(logits_fn, params, x, y, None, epsilon=0.1, num_steps=20,
                     loss=loss)
    before = adv.attack_loss(logits_fn(params, x), y, None, loss)
    after = adv.attack_loss(logits_fn(params, x_adv), y, None, loss)
    assert np.all(np.asarray(after) >= np.asarray(before) - 1e-6)
    assert float(jnp.mean(after)) > float(jnp.mean(before))


def test_apgd_checkpoint_schedule():
  """p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), p_1 = 0.22, N = 100."""
  windows = adv.apgd_checkpoints(100)
  assert np.flatnonzero(windows).tolist() == [21, 40, 56, 69, 79, 86, 92, 98]
  assert windows[21] == 22 and windows[98] == 6
  assert adv.apgd_checkpoints(1).tolist() == [1]


def test_targeted_two_class_linear_known_optimum():
  """Two classes: the targeted optimum is x + eps * dir(w_t - w_y)."""
  rng = np.random.default_rng(2)
  w = rng.normal(size=(16, 2)).astype(np.float32)
  params = {"w": jnp.asarray(w), "b": jnp.zeros((2,))}
  x = jnp.full((4, 16), 0.5, jnp.float32)
  y = jnp.zeros((4,), jnp.int32)
  target = jnp.ones((4,), jnp.int32)
  diff = w[:, 1] - w[:, 0]
  eps = 0.2
  x_adv = adv.pgd(linear_logits, params, x, y, jax.random.PRNGKey(0),
                  epsilon=eps, num_steps=20, target=target)
  np.testing.assert_allclose(x_adv, 0.5 + eps * np.sign(diff)[None].repeat(4, 0),
                             atol=1e-5)
  # Untargeted APGD on the true class 0 of two has the same optimum.
  x_apgd = adv.apgd(linear_logits, params, x, y, jax.random.PRNGKey(0),
                    epsilon=eps, num_steps=10)
  np.testing.assert_allclose(x_apgd, x_adv, atol=1e-5)
  x_l2 = adv.pgd(linear_logits, params, x, y, jax.random.PRNGKey(0),
                 epsilon=eps, num_steps=30, norm="l2", target=target,
                 rand_init=False)
  np.testing.assert_allclose(
      x_l2, 0.5 + eps * (diff / np.linalg.norm(diff))[None].repeat(4, 0),
      atol=1e-5)


def test_targeted_reaches_its_target_on_linear_model():
  """Ten classes with logits k (c u.x - c^2 s / 2): class c wins exactly when
  u . x is within s / 2 of c * s, so a budget eps can reach the target iff
  |u . x - t * s| < s / 2 + eps * ||u||_1 (L-inf, box inactive). The scale
  k = 20 makes the softmax sharp, so maximising p_t lands in t's window."""
  rng = np.random.default_rng(4)
  u = rng.normal(size=64).astype(np.float32)
  s = 0.5
  w = 20 * np.outer(u, np.arange(10)).astype(np.float32)
  b = -20 * (np.arange(10) ** 2) * s / 2
  params = {"w": jnp.asarray(w), "b": jnp.asarray(b, jnp.float32)}
  x = jnp.asarray(rng.uniform(0.3, 0.7, size=(64, 64)), jnp.float32)
  y = jnp.argmax(linear_logits(params, x), -1)
  target = jnp.where(y < 9, y + 1, y - 1)
  eps = 2 * s / float(np.abs(u).sum())  # moves u . x by up to 2 s
  projection = np.asarray(x @ u)
  reachable = np.abs(projection - np.asarray(target) * s) < s / 2 + 2 * s
  assert reachable.sum() >= 5
  x_adv = adv.pgd(linear_logits, params, x, y, jax.random.PRNGKey(0),
                  epsilon=eps, num_steps=60, step_size=eps / 20, target=target,
                  rand_init=False)
  pred = np.asarray(jnp.argmax(linear_logits(params, x_adv), -1))
  np.testing.assert_array_equal(pred[reachable], np.asarray(target)[reachable])
  # Out of reach, nothing can do it: the attack must not claim otherwise.
  unreachable = np.abs(projection - np.asarray(target) * s) > s / 2 + 2 * s
  assert not np.any(pred[unreachable] == np.asarray(target)[unreachable])


def test_simple_autoattack_is_per_example_worse_of_two(trained_mlp):
  logits_fn, params, x, y = trained_mlp
  key = jax.random.PRNGKey(5)
  eps = 0.1
  x_aa = adv.simple_autoattack(logits_fn, params, x, y, key, epsilon=eps,
                               num_steps=10)
  x_pgd = adv.pgd(logits_fn, params, x, y, key, epsilon=eps,
                  step_size=eps / 4, num_steps=10)
  x_fgsm = adv.fgsm(logits_fn, params, x, y, epsilon=eps)
  loss = lambda xa: np.asarray(adv.cross_entropy(logits_fn(params, xa), y))
  np.testing.assert_allclose(loss(x_aa), np.maximum(loss(x_pgd),
                                                    loss(x_fgsm)), rtol=1e-5)


def test_dlr_invariant_to_shift_and_scale():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(16, 10)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, 16))
  t = (y + 3) % 10
  for fn, args in ((adv.dlr_loss, (y,)), (adv.targeted_dlr_loss, (y, t))):
    np.testing.assert_allclose(fn(logits, *args), fn(3.0 * logits + 7.0, *args),
                               rtol=1e-4, atol=1e-5)
  # Correctly classified with a margin: DLR < 0; misclassified: > 0.
  right = jnp.asarray([[5.0, 1.0, 0.0, -1.0]])
  assert float(adv.dlr_loss(right, jnp.asarray([0]))[0]) < 0
  assert float(adv.dlr_loss(right, jnp.asarray([1]))[0]) > 0


def test_bad_arguments():
  params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros((3,))}
  x, y = jnp.zeros((2, 4)), jnp.zeros((2,), jnp.int32)
  with pytest.raises(ValueError, match="norm"):
    adv.pgd(linear_logits, params, x, y, jax.random.PRNGKey(0), epsilon=0.1,
            norm="l1")
  with pytest.raises(ValueError, match="num_steps"):
    adv.pgd(linear_logits, params, x, y, jax.random.PRNGKey(0), epsilon=0.1,
            num_steps=0)
  with pytest.raises(ValueError, match="epsilon"):
    adv.fgsm(linear_logits, params, x, y, epsilon=-0.1)
  with pytest.raises(ValueError, match="key"):
    adv.pgd(linear_logits, params, x, y, None, epsilon=0.1)
  with pytest.raises(ValueError, match="4 classes"):
    adv.apgd_targeted(linear_logits, params, x, y, None, epsilon=0.1)
