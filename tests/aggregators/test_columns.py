"""Column plans: the chunked passes equal the whole-matrix ones.

Also the Gram's BLAS path on one CPU device. Every shardable rule run in chunks (resharded over 4 devices) is compared
with the whole-matrix rule in tests/fl/test_param_sharding.py; here the
helpers themselves, on one device (``place`` None).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import aggregators as agg
from robustfl_jax.aggregators import base, columns


def test_chunking_uses_a_divisor_of_d_and_validates():
  x = jnp.arange(14.0).reshape(2, 7)  # 7 is prime: one chunk
  with columns.column_plan(4):
    assert not columns.is_chunked(x)
    assert columns.is_chunked(jnp.zeros((2, 8)))
    np.testing.assert_array_equal(columns.gram(x), x @ x.T)
  assert columns.current_plan().num_chunks == 1
  with pytest.raises(ValueError, match="num_chunks"):
    with columns.column_plan(0):
      pass


def test_chunked_row_norms_and_sums():
  x = jnp.asarray(np.random.RandomState(1).randn(5, 64).astype(np.float32))
  center = jnp.linspace(-1.0, 1.0, 64)
  with columns.column_plan(4):
    norms = columns.row_norms(lambda u, c: u - c, x, center)
    gram = columns.gram(x)
    mapped = columns.map_columns(lambda u, c: jnp.max(u, axis=0) + c, x,
                                 center)
  np.testing.assert_allclose(norms, jnp.linalg.norm(x - center, axis=1),
                             rtol=1e-6)
  np.testing.assert_allclose(gram, x @ x.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(mapped, jnp.max(x, axis=0) + center)


@pytest.mark.parametrize("chunks", [1, 4])
def test_row_norms_plain_pass_and_scaled_fallback(chunks):
  """One plain pass when the squares are safe; the scaled form (same values
  to float rounding) when a row overflows, underflows or is non-finite."""
  rng = np.random.RandomState(2)
  x = rng.randn(4, 64)
  reference = np.linalg.norm(x, axis=1)
  cases = {"plain": (x, reference)}
  for name, scale in (("overflow", 1e30), ("underflow", 1e-25)):
    y = x.copy()
    y[1] *= scale
    cases[name] = (y, reference * np.where(np.arange(4) == 1, scale, 1.0))
  y = x.copy()
  y[2, 5] = np.inf
  cases["inf"] = (y, np.where(np.arange(4) == 2, np.nan, reference))
  y = x.copy()
  y[3] = 0.0
  cases["zero row"] = (y, np.where(np.arange(4) == 3, 0.0, reference))
  for name, (values, expected) in cases.items():
    v = jnp.asarray(values, jnp.float32)
    with columns.column_plan(chunks):
      norms = columns.row_norms(lambda u: u, v)
    assert np.isfinite(np.asarray(norms)).tolist() == np.isfinite(expected).tolist(), name
    ok = np.isfinite(expected)
    np.testing.assert_allclose(np.asarray(norms)[ok], expected[ok], rtol=1e-5,
                               err_msg=name)
    exact = base.plain_norms_exact(
        jnp.sum(v * v, axis=1),
        lambda rows, v=v: jnp.any(jnp.where(rows[:, None], v != 0, False)))
    assert bool(exact) == (name in ("plain", "zero row")), name
  # The chosen branch keeps gradients and vmap.
  v = jnp.asarray(x, jnp.float32)
  np.testing.assert_allclose(jax.grad(lambda z: base.row_norms(z).sum())(v),
                             x / reference[:, None], rtol=1e-5)
  batch = jnp.stack([v, v * 1e30])
  np.testing.assert_allclose(jax.vmap(base.row_norms)(batch) / jnp.asarray([[1.0], [1e30]]),
                             np.stack([reference] * 2), rtol=1e-5)


def test_blas_gram_equals_xla_with_grad_and_vmap(monkeypatch):
  u = jnp.asarray(np.random.default_rng(0).standard_normal((6, 40)), jnp.float32)
  xla = jnp.matmul(u, u.T, precision=jax.lax.Precision.HIGHEST)
  np.testing.assert_allclose(columns._callback_gram(u), xla, rtol=1e-5, atol=1e-5)
  batch = jnp.stack([u, 2 * u])
  np.testing.assert_allclose(jax.vmap(columns._callback_gram)(batch),
                             jnp.stack([xla, 4 * xla]), rtol=1e-5, atol=1e-4)
  grad = jax.grad(lambda v: jnp.sum(columns._callback_gram(v) ** 2))(u)
  grad_xla = jax.grad(lambda v: jnp.sum(jnp.matmul(v, v.T) ** 2))(u)
  np.testing.assert_allclose(grad, grad_xla, rtol=1e-4, atol=1e-3)
  # Krum picks the same row through either path.
  monkeypatch.setattr(columns, "HOST_GRAM_MIN_PRODUCTS", 1)
  u = u.at[0].multiply(50.0)
  assert columns.gram_method(6, 40) == ("blas" if jax.default_backend() == "cpu"
                                        and jax.device_count() == 1 else "xla")
  picked = agg.krum(u, 1)
  monkeypatch.setattr(columns, "HOST_GRAM_MIN_PRODUCTS", 2**60)
  assert columns.gram_method(6, 40) == "xla"
  np.testing.assert_array_equal(picked, agg.krum(u, 1))


def test_gram_method_by_shape_and_devices(monkeypatch):
  monkeypatch.setattr(columns.jax, "default_backend", lambda: "cpu")
  monkeypatch.setattr(columns.jax, "device_count", lambda: 1)
  assert columns.gram_method(64, 2**20) == "blas"
  assert columns.gram_method(64, 1000) == "xla"
  assert columns.gram_method(16, 100_000) == "xla"  # below the host round trip
  assert columns.gram_method(32, 100_000) == "blas"
  assert columns.gram_method(256, 2**20) == "xla"
  monkeypatch.setattr(columns.jax, "device_count", lambda: 4)
  assert columns.gram_method(64, 2**20) == "xla"
