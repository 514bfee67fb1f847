"""The loop-friendly convolution equals lax's, values and gradients."""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from robustfl_jax.models.conv import Conv, conv2d

_DN = ("NHWC", "HWIO", "NHWC")

CASES = [
    # (H, W, KH, KW, strides, padding)
    (8, 8, 5, 5, (1, 1), "SAME"),
    (8, 8, 5, 5, (1, 1), "VALID"),
    (9, 7, 3, 3, (2, 2), "SAME"),
    (10, 10, 3, 3, (2, 2), "VALID"),
    (7, 9, 1, 1, (2, 1), "SAME"),
    (11, 6, 3, 2, (3, 2), ((1, 0), (2, 1))),
    (6, 6, 3, 3, (2, 2), ((1, 1), (1, 1))),
]


@pytest.mark.parametrize("h,w,kh,kw,strides,padding", CASES)
def test_values_and_gradients_match_lax(h, w, kh, kw, strides, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, h, w, 4)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kh, kw, 4, 5)), jnp.float32)

  def ref(x, k):
    return lax.conv_general_dilated(x, k, strides, padding,
                                    dimension_numbers=_DN)

  def mine(x, k):
    return conv2d(x, k, strides, padding)

  y_ref = ref(x, k)
  np.testing.assert_allclose(mine(x, k), y_ref, rtol=1e-5, atol=1e-5)
  cotangent = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
  g_ref = jax.grad(lambda x, k: jnp.sum(ref(x, k) * cotangent), (0, 1))(x, k)
  g_mine = jax.grad(lambda x, k: jnp.sum(mine(x, k) * cotangent), (0, 1))(x, k)
  for a, b in zip(g_mine, g_ref):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_gradients_under_vmap_match_lax():
  """Per-client kernels (the vmapped local-training case)."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(4, 2, 6, 6, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(4, 3, 3, 3, 2)), jnp.float32)

  def loss(conv):
    return lambda k, x: jnp.sum(jnp.tanh(conv(x, k)))

  ref = jax.vmap(jax.grad(loss(lambda x, k: lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=_DN))))(k, x)
  mine = jax.vmap(jax.grad(loss(lambda x, k: conv2d(x, k))))(k, x)
  np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-4)


def test_module_is_a_drop_in_for_flax_conv():
  x = jnp.ones((2, 8, 8, 3))
  for kwargs in ({"strides": 1, "padding": "SAME"},
                 {"strides": 2, "padding": "VALID", "use_bias": False}):
    ours = Conv(6, (3, 3), **kwargs)
    flax_conv = nn.Conv(6, (3, 3), **kwargs)
    p_ours = ours.init(jax.random.PRNGKey(0), x)
    p_flax = flax_conv.init(jax.random.PRNGKey(0), x)
    assert (jax.tree.map(jnp.shape, p_ours) == jax.tree.map(jnp.shape, p_flax))
    # Same initialiser and key: identical parameters and outputs.
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_flax)):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ours.apply(p_ours, x), flax_conv.apply(p_flax, x),
                               rtol=1e-5, atol=1e-5)


def test_rejects_non_image_input():
  with pytest.raises(ValueError, match="NHWC"):
    Conv(4, (3, 3)).init(jax.random.PRNGKey(0), jnp.ones((8, 8, 3)))


def _steps_in_scan(conv, num_steps=8):
  xs = jax.random.normal(jax.random.PRNGKey(0), (num_steps, 32, 8, 8, 64))
  k0 = jax.random.normal(jax.random.PRNGKey(1), (5, 5, 64, 64)) * 0.01

  def loss(k, x):
    return jnp.sum(jnp.tanh(conv(jnp.tanh(conv(x, k)), k)))

  def run(k):
    body = lambda k, x: (k - 1e-3 * jax.grad(loss)(k, x), None)
    return lax.scan(body, k, xs)[0]

  f = jax.jit(run)
  f(k0).block_until_ready()
  start = time.perf_counter()
  f(k0).block_until_ready()
  return time.perf_counter() - start


@pytest.mark.benchmark
def test_faster_than_lax_gradient_inside_a_loop_on_cpu():
  """The XLA CPU trap this module avoids (run with ``-m benchmark``)."""
  if jax.default_backend() != "cpu":
    pytest.skip("the trap is XLA CPU's")
  slow = _steps_in_scan(lambda x, k: lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=_DN))
  fast = _steps_in_scan(lambda x, k: conv2d(x, k))
  print(f"8 steps in lax.scan: lax gradient {slow:.3f} s, conv2d {fast:.3f} s, "
        f"ratio {slow / fast:.1f}x")
  assert fast * 5 < slow
