"""The flow-matching diffusion generator and its two study arms, at tiny sizes."""

import pathlib

import chex
import jax
import numpy as np
import pytest

from dreamjax import generators
from dreamjax.configs import generator as generator_config
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import read_jsonl
from dreamjax.generators import common, diffusion
from conftest import synthetic_images


def _cfg(**kw):
  cfg = generator_config.get_config("tiny")
  cfg.model = "diffusion"
  cfg.update(kw)
  return cfg


def _bars(n=64, size=16):
  """Two classes of the synthetic bar images, pixels in [0, 1]."""
  x, y = synthetic_images(n, num_classes=2, size=size)
  return x[..., None] / np.float32(255), y.astype(np.int32)


def _dark_and_bright(n=64, shape=(12, 12, 1)):
  """Two very different classes: dark images (label 0) and bright ones (label 1)."""
  rng = np.random.default_rng(0)
  y = (np.arange(n) % 2).astype(np.int32)
  x = np.where(y[:, None, None, None] == 1, 0.85, 0.15) + 0.05 * rng.standard_normal((n, *shape))
  return np.clip(x, 0, 1).astype(np.float32), y


def test_loss_decreases_on_a_tiny_set():
  x, y = _bars()
  params, history = generators.train_diffusion(_cfg(steps=100, log_every=20, conditional=True),
                                               x, y, jax.random.key(0))
  chex.assert_tree_all_finite(params)
  assert history[-1]["loss"] < 0.8 * history[0]["loss"]
  assert {"step", "loss"} <= set(history[0])


def test_guided_samples_follow_their_labels_in_the_data_range():
  x, y = _dark_and_bright()
  cfg = _cfg(steps=150, log_every=50, conditional=True, diffusion_guidance=2.0)
  params, _ = generators.train_diffusion(cfg, x, y, jax.random.key(0))
  labels = np.array([0] * 16 + [1] * 16)
  out = generators.sample_diffusion(cfg, params, jax.random.key(1), labels=labels)
  chex.assert_shape(out, (32, 12, 12, 1))
  assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
  dark, bright = out[:16].mean(), out[16:].mean()
  assert bright > dark + 0.3, (dark, bright)


@pytest.mark.parametrize("patch,shape", [(2, (27, 27, 3)), (1, (10, 12, 1))])
def test_any_size_and_channel_count(patch, shape):
  rng = np.random.default_rng(0)
  x = rng.random((20, *shape)).astype(np.float32)
  cfg = _cfg(steps=2, log_every=1, diffusion_patch=patch)
  params, _ = generators.train_diffusion(cfg, x, None, jax.random.key(0))
  out = generators.sample_diffusion(cfg, params, jax.random.key(1), num=5)
  chex.assert_shape(out, (5, *shape))
  assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_samples_are_deterministic_for_a_key():
  x, y = _bars(32)
  cfg = _cfg(steps=3, log_every=3, conditional=True)
  params, _ = generators.train_diffusion(cfg, x, y, jax.random.key(0))
  labels = np.array([0, 1, 1, 0, 1])
  a = generators.sample_diffusion(cfg, params, jax.random.key(7), labels=labels)
  b = generators.sample_diffusion(cfg, params, jax.random.key(7), labels=labels)
  np.testing.assert_array_equal(a, b)
  c = generators.sample_diffusion(cfg, params, jax.random.key(8), labels=labels)
  assert not np.allclose(a, c)
  # Another label, same key and noise: the label reaches the network.
  d = generators.sample_diffusion(cfg, params, jax.random.key(7), labels=1 - labels)
  assert not np.allclose(a, d)


def test_seeds_trained_together_equal_each_trained_alone():
  x0, y0 = _bars(32)
  x1, y1 = x0[::-1].copy(), y0[::-1].copy()
  cfg = _cfg(steps=6, log_every=3, conditional=True)
  keys = [jax.random.key(3), jax.random.key(4)]
  together = common.train_seeds(diffusion.prepare_training, "diffusion", cfg,
                                np.stack([x0, x1]), np.stack([y0, y1]), keys)
  for (params, history), x, y, key in zip(together, (x0, x1), (y0, y1), keys):
    alone, alone_history = generators.train_diffusion(cfg, x, y, key)
    chex.assert_trees_all_equal(params, alone)
    assert history == alone_history
  assert not np.array_equal(jax.tree.leaves(together[0][0])[0],
                            jax.tree.leaves(together[1][0])[0])


def test_weight_average_is_what_samples():
  x, _ = _bars(32)
  cfg = _cfg(steps=4, log_every=4, diffusion_ema_decay=0.5)
  state, step, finish = diffusion.prepare_training(cfg, x, None, jax.random.key(0))
  state, _ = common.run_steps(step, state, x, None, jax.random.key(1), steps=4, log_every=4,
                              desc="t", progress=lambda m: None)
  params = finish(state)
  chex.assert_trees_all_close(params["diffusion"], state["ema"])
  assert not np.allclose(jax.tree.leaves(state["ema"])[-1],
                         jax.tree.leaves(state["variables"])[-1])
  no_average = diffusion.prepare_training(_cfg(diffusion_ema_decay=0.0), x, None,
                                          jax.random.key(0))[0]
  assert "ema" not in no_average


def test_checkpoint_roundtrip_gives_identical_samples(tmp_path):
  x, y = _bars(32)
  cfg = _cfg(steps=2, log_every=2, conditional=True)
  params, _ = generators.train_diffusion(cfg, x, y, jax.random.key(0))
  generators.save(str(tmp_path / "d"), "diffusion", cfg, params)
  kind, cfg2, params2, _ = generators.load(str(tmp_path / "d"))
  assert kind == "diffusion"
  np.testing.assert_array_equal(
      generators.sample_diffusion(cfg, params, jax.random.key(5), num=6),
      generators.sample_diffusion(cfg2, params2, jax.random.key(5), num=6))


@pytest.mark.parametrize("bad,match", [
    ({"diffusion_widths": ()}, "diffusion_widths"),
    ({"diffusion_patch": 3}, "diffusion_patch=3"),
    ({"diffusion_sample_steps": 0}, "diffusion_sample_steps=0"),
    ({"diffusion_guidance": -1.0}, "diffusion_guidance=-1.0"),
    ({"diffusion_label_dropout": 1.0}, "diffusion_label_dropout=1.0"),
    ({"diffusion_ema_decay": 1.0}, "diffusion_ema_decay=1.0"),
    ({"diffusion_learning_rate": 0.0}, "diffusion_learning_rate=0.0"),
    ({"diffusion_batch_size": -2}, "diffusion_batch_size=-2"),
    ({"diffusion_label_dropout": 0.0}, "needs diffusion_label_dropout > 0"),
])
def test_bad_settings_refused_before_compute(bad, match, monkeypatch):
  x, y = _bars(20)
  monkeypatch.setattr(diffusion, "_compiled_step", lambda *a: pytest.fail("compiled"))
  with pytest.raises(ConfigError, match=match):
    generators.train_diffusion(_cfg(conditional=True, **bad), x, y, jax.random.key(0))


def test_unguided_conditional_model_needs_no_dropped_labels():
  x, y = _bars(20)
  cfg = _cfg(steps=1, log_every=1, conditional=True, diffusion_label_dropout=0.0,
             diffusion_guidance=1.0)
  params, _ = generators.train_diffusion(cfg, x, y, jax.random.key(0))
  chex.assert_shape(generators.sample_diffusion(cfg, params, jax.random.key(1), labels=[0, 1]),
                    (2, 16, 16, 1))


def test_train_generator_command_takes_the_diffusion_model(tmp_path, real_data_dir):
  from dreamjax.data import augfile  # pylint: disable=g-import-not-at-top
  from dreamjax.runs import generator  # pylint: disable=g-import-not-at-top
  cfg = _cfg(steps=3, log_every=3, source="labeled", conditional=True, fid_num=0)
  cfg.data_dir = real_data_dir
  res = generator.train_and_evaluate(cfg, str(tmp_path))
  assert res["model"] == "diffusion" and np.isfinite(res["final_losses"]["loss"])
  aug = augfile.load(str(tmp_path / "augmented.npz"), num_classes=10)
  assert np.bincount(aug.labels).tolist() == [10] * 10  # the labeled set's balance
  assert (tmp_path / "samples.png").exists()
  assert generators.load(str(tmp_path / "checkpoint"))[0] == "diffusion"

def test_both_arms_run_in_a_tiny_study(tiny_study):
  """The diffusion arms' cells of the every-arm tiny study (tests/conftest.py)."""
  cfg = study_configs.get_config("tiny")
  assert {"diffusion_small", "diffusion_pool"} <= set(cfg.arms)  # every arm, by default
  workdir = pathlib.Path(tiny_study)
  cells = {r["cell"]: r for r in read_jsonl(str(workdir / "results.jsonl"))}
  for arm in ("diffusion_small", "diffusion_pool"):
    cell = cells[f"N100/{arm}"]
    assert cell["status"] == "ok", cell.get("error")
    # The pool arm keeps at most 10 pseudo-labels per class (class-balanced): a tiny
    # baseline names few classes, so fewer than 100 may be kept.
    assert (cell["num_generated"] == 100 if arm == "diffusion_small"
            else 0 < cell["num_generated"] <= 100)
    assert cell["label_preservation"] is not None and cell["frechet"] is not None
    assert cell["cost"]["gen_image_steps"] == 30 * 16  # the tiny preset's steps × batch
  assert (workdir / "artefacts" / "diffusion_pool.msgpack").exists()  # trained once, saved
  assert (workdir / "figures" / "samples.png").stat().st_size > 0


def test_a_workdir_made_before_the_diffusion_arms_extends_to_them():
  """A study recorded before these arms existed takes a config that adds them, and its
  cells' checkpoints (the baselines the new cells restore) keep their fingerprint."""
  import json  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from dreamjax.study import records  # pylint: disable=g-import-not-at-top
  config = study_configs.get_config("tiny")
  mine = json.loads(config.to_json())
  recorded = json.loads(config.to_json())
  recorded["arms"] = [a for a in recorded["arms"] if not a.startswith("diffusion_")]
  for arm in ("diffusion_small", "diffusion_pool"):
    del recorded["arm_settings"][arm]
  theirs = records.upgrade_config(recorded, mine)
  # pylint: disable=protected-access
  diff = sorted(records._diff_keys(theirs, mine))
  assert diff == ["arms"] and records._extends(theirs, mine, diff)
  assert (records.cell_fingerprint(ml_collections.ConfigDict(recorded))
          == records.cell_fingerprint(config))
  # Once recorded, their settings count as any arm's: another step count is another config.
  config.arm_settings.diffusion_pool.steps = 31
  assert records._diff_keys(mine, json.loads(config.to_json())) == [
      "arm_settings.diffusion_pool.steps"]


def test_settings_of_arms_a_study_has_not_run_may_change_in_place():
  """A study that left the diffusion arms out takes their settings changed along with the
  arms added (no cell trained with them); the settings of an arm it ran, or of the stored
  twin a fresh-sample arm it ran samples, are refused."""
  import json  # pylint: disable=g-import-not-at-top
  from dreamjax.study import records  # pylint: disable=g-import-not-at-top
  # pylint: disable=protected-access
  config = study_configs.get_config("tiny")
  theirs = json.loads(config.to_json())
  theirs["arms"] = [a for a in theirs["arms"] if not a.startswith("diffusion_")]
  config.arm_settings.diffusion_pool.steps = 31
  mine = json.loads(config.to_json())
  diff = sorted(records._diff_keys(theirs, mine))
  assert diff == ["arm_settings.diffusion_pool.steps", "arms"]
  assert records._extends(theirs, mine, diff)
  ran_twin = {**theirs, "arms": theirs["arms"] + ["diffusion_pool_online"]}
  assert not records._extends(ran_twin, mine, diff)
  ran_it = {**theirs, "arms": theirs["arms"] + ["diffusion_pool"]}
  assert not records._extends(ran_it, mine, diff)

