"""The deep dreamer: pretrained on pool images alone, saved and loaded, a user's refused
in one line when it does not fit."""

import dataclasses
import inspect
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from conftest import REPO, synthetic_images
from dreamjax import dream
from dreamjax.methods import dreamer, pretrain
from dreamjax.plumbing import sharding
from dreamjax.training import models, train
from dreamjax.configs import dreamer as dreamer_configs
from dreamjax.configs import study as study_configs
from dreamjax.errors import CheckpointError, ConfigError
from dreamjax.study.run import artefacts, context, generate, runner

SHAPE = (28, 28, 1)


def _pool(n=200, seed=0):
  x, _ = synthetic_images(n, seed=seed)
  return x[..., None] / np.float32(255)


def _cfg(objective="rotation", steps=20):
  cfg = dreamer_configs.get_config("tiny")
  cfg.objective, cfg.steps = objective, steps
  return cfg


def test_the_default_dreamer_is_deeper_and_wider_than_the_classifier():
  deep = dreamer_configs.get_config().model
  small = study_configs.get_config("quick").model
  assert len(deep.conv_features) >= 4 and max(deep.conv_features) >= 128
  assert len(deep.conv_features) > len(small.conv_features)
  assert max(deep.conv_features) > max(small.conv_features)
  assert study_configs.get_config("quick").pool_dreamer == dreamer_configs.get_config()


@pytest.mark.parametrize("objective", ["rotation", "contrastive"])
def test_pretraining_takes_images_alone_and_learns(objective, monkeypatch):
  """No argument of the pretraining can carry a label; the rotation pretext hands
  train.fit a constant in their place, the contrastive step none at all."""
  for fn in (dreamer.pretrain, pretrain.train_contrastive, pretrain.train_rotation):
    assert not [p for p in inspect.signature(fn).parameters if "label" in p], fn
  handed = []
  fit, run_steps = train.fit, pretrain.common.run_steps
  monkeypatch.setattr(train, "fit", lambda *a, **k: handed.append(a[3]) or fit(*a, **k))
  monkeypatch.setattr(pretrain.common, "run_steps",
                      lambda *a, **k: handed.append(a[3]) or run_steps(*a, **k))
  cfg = _cfg(objective, steps=40)
  variables, history = dreamer.pretrain(cfg, _pool(), jax.random.key(0), SHAPE)
  (labels,) = handed
  assert labels is None if objective == "contrastive" else not np.any(labels)
  chex.assert_tree_all_finite(variables)
  assert set(variables) == {"params", "batch_stats"}  # the whole network, BatchNorm too
  assert {"Conv_3", "Dense_0", "Head"} <= set(variables["params"])
  if objective == "rotation":
    assert history[-1]["accuracy"] > 0.4  # chance is 0.25
  else:
    assert history[-1]["loss"] < history[0]["loss"]
  # Its layers carry the classifier's names: a dream objective reads the deepest conv.
  model = dreamer.model_of(cfg)
  c = dream.spec.DreamSpec(dream.LayerL2("conv3"), steps=2, step_size=0.05)
  x = _pool(8)
  out = dream.dream_dataset(model, variables, x, np.zeros(8, np.int32), c, jax.random.key(1))
  assert np.mean(out.objective_gain) > 0 and not np.allclose(out.images, x)


def _ctx(cfg, splits, pool, workdir):
  return context.Context(config=cfg, workdir=str(workdir), mesh=sharding.default(None),
                         budget=100, seeds=(0,), splits=(splits,), model=None, oracle=None,
                         log=lambda m: None, shared_pool=pool)


def test_the_study_dreamer_is_the_same_whatever_the_labels_say(tmp_path, real_data_dir):
  """The study's dreamer reads the shared pool's images and nothing else: every label of
  the context replaced by garbage, the weights are the same to the bit."""
  from dreamjax import data  # pylint: disable=g-import-not-at-top
  cfg = study_configs.get_config("tiny")
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  s = data.make_splits(raw, num_labeled=100, val_size=cfg.val_size, seed=0)
  pool = context.shared_pool(cfg, raw)
  rng = np.random.default_rng(0)
  garbage = dataclasses.replace(
      s, labeled_labels=rng.integers(-9, 99, s.labeled_labels.shape).astype(np.int32),
      val_labels=np.full_like(s.val_labels, -1), test_labels=np.full_like(s.test_labels, 7))
  made = [artefacts.pool_dreamer(_ctx(cfg, split, pool, tmp_path / name))
          for name, split in (("real", s), ("garbage", garbage))]
  chex.assert_trees_all_equal(made[0][1], made[1][1])
  assert made[0][3] == int(cfg.pool_dreamer.steps) * int(cfg.pool_dreamer.batch_size)
  assert os.path.exists(tmp_path / "real" / "artefacts" / "pool_dreamer.msgpack")


def _saved(tmp_path, cfg=None, shape=SHAPE, name="mine.msgpack"):
  cfg = cfg or _cfg()
  model = dreamer.model_of(cfg)
  variables = models.init_variables(model, jax.random.key(3), shape)
  path = str(tmp_path / name)
  dreamer.save(path, variables, cfg.model, shape)
  return path, variables


def test_a_users_dreamer_loads_with_its_own_config(tmp_path):
  cfg = _cfg()
  cfg.model.conv_features = (8, 8, 16, 16, 32)  # not the study's: its own metadata says
  cfg.model.pool = (True, False, True, False, False)
  path, variables = _saved(tmp_path, cfg)
  model, loaded, meta = dreamer.load(path, SHAPE)
  assert tuple(model.conv_features) == (8, 8, 16, 16, 32) and meta["kind"] == "pool_dreamer"
  chex.assert_trees_all_equal(loaded, variables)


def test_a_bad_users_dreamer_is_refused_naming_the_field(tmp_path):
  with pytest.raises(ConfigError, match="pool_dreamer.checkpoint=.*no such file"):
    dreamer.load(str(tmp_path / "absent.msgpack"), SHAPE)
  path, _ = _saved(tmp_path, shape=(32, 32, 3), name="colour.msgpack")
  with pytest.raises(ConfigError, match=r"made for 32×32 images with 3 channel\(s\); this"
                                        r" data's are 28×28 with 1"):
    dreamer.load(path, SHAPE)
  # Arrays of one model saved under another model's config.
  cfg = _cfg()
  variables = models.init_variables(dreamer.model_of(cfg), jax.random.key(0), SHAPE)
  other = cfg.model.copy_and_resolve_references()
  other.conv_features = (8, 8, 8, 8)
  dreamer.save(str(tmp_path / "mixed.msgpack"), variables, other, SHAPE)
  with pytest.raises(ConfigError, match="do not fit the model config in its metadata"):
    dreamer.load(str(tmp_path / "mixed.msgpack"), SHAPE)
  from dreamjax.plumbing import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoint.save_tree(str(tmp_path / "bare.msgpack"), variables)
  with pytest.raises(ConfigError, match="no model config or image shape"):
    dreamer.load(str(tmp_path / "bare.msgpack"), SHAPE)
  with open(tmp_path / "junk.msgpack", "wb") as f:
    f.write(b"not a snapshot")
  with pytest.raises(CheckpointError, match="pool_dreamer.checkpoint"):
    dreamer.load(str(tmp_path / "junk.msgpack"), SHAPE)


def test_a_study_refuses_a_users_dreamer_before_any_compute(tmp_path, real_data_dir):
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "deep_dream_subtle")
  cfg.pool_dreamer.checkpoint = str(tmp_path / "absent.msgpack")
  with pytest.raises(ConfigError, match="no such file"):
    runner.validate_config(cfg)
  cfg.pool_dreamer.checkpoint, _ = _saved(tmp_path, shape=(32, 32, 1))
  runner.validate_config(cfg)  # the data's shape is not known yet
  with pytest.raises(ConfigError, match="made for 32×32"):
    runner.run_study(cfg, str(tmp_path / "study"), log=lambda m: None)
  assert not os.path.exists(tmp_path / "study")  # refused before the workdir was made
  cfg.arms = ("baseline", "classical")  # no arm dreams through it: not read
  runner.validate_config(cfg)
  cfg.arms = ("baseline", "deep_dream_online")
  cfg.pool_dreamer.checkpoint = ""
  cfg.pool_dreamer.objective = "jigsaw"
  with pytest.raises(ConfigError, match="pool_dreamer.objective='jigsaw'"):
    runner.validate_config(cfg)


def test_the_command_says_what_is_wrong_with_a_users_dreamer_in_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "experiments", "study.py"), "--config",
       "dreamjax/configs/study.py:tiny", f"--workdir={tmp_path / 'w'}",
       f"--config.pool_dreamer.checkpoint={tmp_path / 'absent.msgpack'}"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith("dreamjax error:")]
  assert len(errors) == 1 and "pool_dreamer.checkpoint" in errors[0] and "no such file" in errors[0]
  assert "Traceback" not in out.stderr


def test_the_deep_arms_dream_through_the_pool_dreamer_not_the_baseline(tmp_path):
  """generate.dreamer gives the pool dreamer to the deep arms (whatever the seed) and
  the seed's baseline to the others."""
  path, variables = _saved(tmp_path)
  cfg = study_configs.get_config("tiny")
  cfg.pool_dreamer.checkpoint = path
  ctx = _ctx(cfg, _fake_splits(), None, tmp_path)
  for seed in (0, None):
    model, loaded, info = generate.dreamer(ctx, "deep_dream_sweep@0.2", seed)
    chex.assert_trees_all_equal(loaded, variables)
    assert len(model.conv_features) == 4 and info["dreamer_pretrain_image_steps"] == 0
  with pytest.raises(RuntimeError, match="baseline is not trained"):
    generate.dreamer(ctx, "dream_subtle", 0)
  sweep = generate.dream_config(cfg, "deep_dream_sweep@0.2")
  assert tuple(sweep.layers) == ("conv3",) and abs(sweep.steps * sweep.step_size - 0.2) < 1e-9
  assert tuple(generate.dream_config(cfg, "dream_sweep@0.2").layers) == ("conv1",)


def _fake_splits():
  from dreamjax import data  # pylint: disable=g-import-not-at-top
  z = np.zeros((0,), np.int64)
  return data.Splits("fake", 0, 10, tuple(map(str, range(10))), np.zeros((0, *SHAPE)), z, z,
                     np.zeros((0, *SHAPE)), z, np.zeros((0, *SHAPE)), z,
                     np.zeros((0, *SHAPE)), z)
