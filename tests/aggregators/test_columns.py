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
from robustfl_jax.aggregators import columns


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
  monkeypatch.setattr(columns, "HOST_GRAM_MIN_COORDS", 1)
  u = u.at[0].multiply(50.0)
  assert columns.gram_method(6, 40) == ("blas" if jax.default_backend() == "cpu"
                                        and jax.device_count() == 1 else "xla")
  picked = agg.krum(u, 1)
  monkeypatch.setattr(columns, "HOST_GRAM_MIN_COORDS", 2**40)
  assert columns.gram_method(6, 40) == "xla"
  np.testing.assert_array_equal(picked, agg.krum(u, 1))


def test_gram_method_by_shape_and_devices(monkeypatch):
  monkeypatch.setattr(columns.jax, "default_backend", lambda: "cpu")
  monkeypatch.setattr(columns.jax, "device_count", lambda: 1)
  assert columns.gram_method(64, 2**20) == "blas"
  assert columns.gram_method(64, 1000) == "xla"
  assert columns.gram_method(256, 2**20) == "xla"
  monkeypatch.setattr(columns.jax, "device_count", lambda: 4)
  assert columns.gram_method(64, 2**20) == "xla"
