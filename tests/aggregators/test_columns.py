"""Column plans: the chunked passes equal the whole-matrix ones.

Every shardable rule run in chunks (resharded over 4 devices) is compared
with the whole-matrix rule in tests/fl/test_param_sharding.py; here the
helpers themselves, on one device (``place`` None).
"""

import jax.numpy as jnp
import numpy as np
import pytest

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
