import chex
import jax
import numpy as np
import pytest

from dreamjax.methods import pretrain
from dreamjax.training import models, train
from dreamjax.configs import classifier as classifier_config
from dreamjax.configs import generator as generator_config
from dreamjax.errors import ConfigError
from conftest import synthetic_images

SHAPE = (28, 28, 1)


def _pool(n=200):
  x, _ = synthetic_images(n)
  return x[..., None] / np.float32(255)


def _cfg(steps=30):
  cfg = generator_config.get_config("tiny")
  cfg.steps = steps
  return cfg


@pytest.mark.parametrize("use_bn", [False, True])
def test_autoencoder_learns_and_its_trunk_initialises_the_classifier(use_bn, tmp_path):
  cfg = _cfg()
  model_cfg = cfg.classifier.copy_and_resolve_references()
  model_cfg.use_bn = use_bn
  trunk, history = pretrain.train_autoencoder(cfg, _pool(), jax.random.key(0), model_cfg, 10,
                                              SHAPE, return_history=True)
  assert history[-1]["loss"] < 0.95 * history[0]["loss"]
  chex.assert_tree_all_finite(trunk)
  names = set(trunk["params"])
  assert names == {"Conv_0", "Conv_1"} | ({"BatchNorm_0", "BatchNorm_1"} if use_bn else set())
  # Save, then load through the path runs/classifier.py uses (--init_from).
  pretrain.save(str(tmp_path / "checkpoint"), "ae", trunk, model_cfg, SHAPE)
  model = models.make_model(model_cfg, 10)
  init = pretrain.init_fn_from_checkpoint(str(tmp_path), model, SHAPE)
  variables = jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(1), 2))
  for seed in range(2):
    loaded = pretrain.trunk_of(train.unstack(variables, seed))
    chex.assert_trees_all_equal(loaded, trunk)
  # Dense layers stay fresh (and differ per seed).
  assert not np.allclose(variables["params"]["Dense_0"]["kernel"][0],
                         variables["params"]["Dense_0"]["kernel"][1])


def test_rotation_pretext_learns_and_fine_tunes_with_fit():
  cfg = _cfg(steps=60)
  cfg.learning_rate = 3e-3
  trunk, history = pretrain.train_rotation(cfg, _pool(), jax.random.key(0), cfg.classifier, SHAPE,
                                           return_history=True)
  assert history[-1]["accuracy"] > 0.4  # chance is 0.25
  ccfg = classifier_config.get_config("tiny")
  ccfg.train.steps = 3
  ccfg.train.warmup_steps = 1
  model = models.make_model(cfg.classifier, 10)
  x, y = synthetic_images(50)
  result = train.fit(model, ccfg.train, x[..., None] / np.float32(255), y.astype(np.int32),
                     seeds=[0], init_fn=pretrain.init_fn(model, SHAPE, trunk))
  chex.assert_tree_all_finite(result.state.params)


def test_rotate_batch_matches_numpy():
  x = np.arange(2 * 3 * 3).reshape(2, 3, 3, 1).astype(np.float32)
  out = np.asarray(pretrain.rotate_batch(x, np.array([1, 3])))
  np.testing.assert_array_equal(out[0], np.rot90(x[0], 1))
  np.testing.assert_array_equal(out[1], np.rot90(x[1], 3))


def test_mismatched_trunk_and_bad_paths_refused(tmp_path):
  cfg = _cfg()
  small = models.make_model(cfg.classifier, 10)
  trunk = pretrain.trunk_of(models.init_variables(small, jax.random.key(0), SHAPE))
  pretrain.save(str(tmp_path / "ae"), "ae", trunk, cfg.classifier, SHAPE)
  wider_cfg = cfg.classifier.copy_and_resolve_references()
  wider_cfg.conv_features = (8, 8)
  wider = models.make_model(wider_cfg, 10)
  with pytest.raises(ConfigError, match="init_from"):
    pretrain.init_fn_from_checkpoint(str(tmp_path / "ae"), wider, SHAPE)
  with pytest.raises(ConfigError, match="init_from"):
    pretrain.init_fn(wider, SHAPE, trunk)
  with pytest.raises(ConfigError, match="holds no checkpoint"):
    pretrain.init_fn_from_checkpoint(str(tmp_path / "none"), small, SHAPE)
  with pytest.raises(ConfigError, match="square"):
    pretrain.train_rotation(cfg, np.zeros((4, 28, 20, 1), np.float32), jax.random.key(0),
                            cfg.classifier, (28, 20, 1))
