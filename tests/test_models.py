import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamjax.training import models
from dreamjax.configs import common
from dreamjax.errors import ConfigError


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (15, 9, 2)])
@pytest.mark.parametrize("use_bn", [False, True])
def test_shapes_and_named_activations(shape, use_bn):
  cfg = common.model_config("tiny")
  cfg.use_bn = use_bn
  model = models.make_model(cfg, num_classes=7)
  variables = models.init_variables(model, jax.random.key(0), shape)
  assert set(variables) == ({"params", "batch_stats"} if use_bn else {"params"})
  x = jax.random.uniform(jax.random.key(1), (5, *shape))
  logits, acts, bn_inputs = models.apply_with_activations(model, variables, x)
  chex.assert_shape(logits, (5, 7))
  chex.assert_tree_all_finite(acts)
  assert tuple(acts) == models.layer_names(model) == ("conv0", "conv1", "dense0", "logits")
  chex.assert_shape(acts["conv0"], (5, *shape[:2], 4))
  np.testing.assert_allclose(acts["logits"], logits, rtol=1e-6)
  assert set(bn_inputs) == ({"bn0", "bn1"} if use_bn else set())


@pytest.mark.parametrize("hw", [(4, 4), (5, 7), (1, 1)])
def test_max_pool_matches_flax(hw):
  x = jax.random.normal(jax.random.key(0), (2, *hw, 3))
  want = nn.max_pool(x, (2, 2), (2, 2), padding="SAME")
  np.testing.assert_array_equal(models.max_pool_2x2(x), want)
  g_ours = jax.grad(lambda x: jnp.sum(models.max_pool_2x2(x) ** 2))(x)
  g_flax = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (2, 2), (2, 2), "SAME") ** 2))(x)
  np.testing.assert_allclose(g_ours, g_flax)


def test_bad_model_config():
  cfg = common.model_config("tiny")
  cfg.pool = (True,)
  with pytest.raises(ConfigError, match="model.pool"):
    models.make_model(cfg, 10)


def test_conv3x3_matches_flax_conv_in_values_and_gradients():
  x = jax.random.uniform(jax.random.key(0), (4, 9, 7, 3))
  ours, ref = models.Conv3x3(5), nn.Conv(5, (3, 3), padding="SAME")
  v_ours, v_ref = ours.init(jax.random.key(1), x), ref.init(jax.random.key(1), x)
  chex.assert_trees_all_equal(v_ours, v_ref)  # same names, shapes and initial values
  v = jax.tree.map(lambda p: p + 0.1, v_ref)  # a nonzero bias

  def loss(module, v, x):
    return jnp.sum(jnp.sin(module.apply(v, x)))

  chex.assert_trees_all_close(ours.apply(v, x), ref.apply(v, x), rtol=1e-6)
  g_ours = jax.grad(loss, argnums=(1, 2))(ours, v, x)
  g_ref = jax.grad(loss, argnums=(1, 2))(ref, v, x)
  chex.assert_trees_all_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)
  # The custom bias gradient also holds under vmap (seeds on accelerators).
  vs = jax.tree.map(lambda p: jnp.stack([p, 2 * p]), v)
  g_vmap = jax.vmap(jax.grad(lambda v: loss(ours, v, x)))(vs)
  chex.assert_trees_all_close(jax.tree.map(lambda p: p[1], g_vmap),
                              jax.grad(lambda v: loss(ref, v, x))(jax.tree.map(lambda p: 2 * p, v)),
                              rtol=1e-5, atol=1e-6)
