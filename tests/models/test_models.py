"""Models: parameter counts against the Romoa appendix, shapes, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustfl_jax import models


def _count(name, shape, num_classes=10):
  model = models.get(name, num_classes, shape)
  params = jax.eval_shape(lambda k: models.init_params(model, k, shape),
                          jax.random.PRNGKey(0))
  return models.param_count(params)


def test_romoa_mnist_cnn_matches_fig9():
  # Fig. 9: 1,664 + 102,464 + 3,276,928 + 1,290.
  assert _count("romoa_mnist_cnn", (28, 28, 1)) == 3_382_346


def test_romoa_cifar_cnn_matches_fig10():
  # Fig. 10: the sum of its Param # column.
  assert _count("romoa_cifar_cnn", (32, 32, 3)) == 6_088_650


def test_mlp_and_resnet_counts():
  assert _count("mlp", (64,)) == 64 * 128 + 128 + 128 * 10 + 10
  assert _count("resnet8", (32, 32, 3)) == 78_042
  assert _count("resnet20", (32, 32, 3)) > _count("resnet8", (32, 32, 3))


@pytest.mark.parametrize("name,shape", [
    ("mlp", (8, 8, 1)), ("romoa_mnist_cnn", (8, 8, 1)),
    ("romoa_cifar_cnn", (8, 8, 1)), ("resnet8", (8, 8, 3))])
def test_forward_shapes_on_small_inputs(name, shape):
  model = models.get(name, 7, shape)
  params = models.init_params(model, jax.random.PRNGKey(0), shape)
  x = jnp.ones((3,) + shape)
  logits = jax.jit(model.apply, static_argnames="train")(
      {"params": params}, x, train=False)
  assert logits.shape == (3, 7) and bool(jnp.all(jnp.isfinite(logits)))


def test_dropout_only_in_training():
  shape = (8, 8, 1)
  model = models.get("romoa_mnist_cnn", 10, shape)
  params = models.init_params(model, jax.random.PRNGKey(0), shape)
  apply = jax.jit(model.apply, static_argnames="train")
  x = jax.random.uniform(jax.random.PRNGKey(1), (4,) + shape)
  eval_a = apply({"params": params}, x, train=False)
  eval_b = apply({"params": params}, x, train=False)
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = apply({"params": params}, x, train=True,
                  rngs={"dropout": jax.random.PRNGKey(2)})
  train_b = apply({"params": params}, x, train=True,
                  rngs={"dropout": jax.random.PRNGKey(3)})
  assert not np.allclose(train_a, train_b)


def test_errors():
  with pytest.raises(ValueError, match="unknown model"):
    models.get("vgg", 10, (32, 32, 3))
  with pytest.raises(ValueError, match="image inputs"):
    models.get("romoa_cifar_cnn", 10, (64,))
  with pytest.raises(ValueError, match="6n\\+2"):
    m = models.ResNet(depth=10)
    m.init(jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 3)))
