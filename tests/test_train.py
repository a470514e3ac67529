import logging

import chex
import jax
import numpy as np
import pytest

from dreamjax.training import models, train
from dreamjax.configs import classifier
from dreamjax.errors import ConfigError, DivergenceError
from conftest import synthetic_images, on_mesh


def _setup(steps=40):
  cfg = classifier.get_config("tiny")
  cfg.train.steps = steps
  cfg.train.warmup_steps = min(5, steps - 1)
  cfg.train.eval_every = 0
  x, y = synthetic_images(200)
  return cfg, models.make_model(cfg.model, 10), x[..., None] / np.float32(255), y.astype(np.int32)


def test_loss_decreases_and_learns():
  cfg, model, x, y = _setup(steps=60)
  res = train.fit(model, cfg.train, x, y, seeds=[0], val=(x, y))
  losses = [np.mean(r["loss"]) for r in res.history]
  assert losses[-1] < 0.5 * losses[0]
  assert res.history[-1]["val_accuracy"][0] > 0.5
  chex.assert_tree_all_finite(res.state.params)


def test_same_seed_same_result_and_seeds_differ():
  cfg, model, x, y = _setup(steps=10)
  a = train.fit(model, cfg.train, x, y, seeds=[1, 2])
  b = train.fit(model, cfg.train, x, y, seeds=[1])
  chex.assert_trees_all_close(train.unstack(a.state.params, 0), train.unstack(b.state.params, 0),
                              rtol=1e-5, atol=1e-6)
  leaf = jax.tree.leaves(a.state.params)[0]
  assert not np.allclose(leaf[0], leaf[1])
  c = train.fit(model, cfg.train, x, y, seeds=[1])
  chex.assert_trees_all_equal(b.state.params, c.state.params)


def test_train_step_compiles_once():
  cfg, model, x, y = _setup()
  tx = train.make_optimizer(cfg.train)
  state = train.create_state(model, tx, models.init_variables(model, jax.random.key(0), (28, 28, 1)))
  step = jax.jit(chex.assert_max_traces(train.make_train_step(model, 16), n=1))
  state, x, y = on_mesh((state, x, y))
  for i in range(4):
    state, metrics = step(state, x, y, len(y), jax.random.key(i))
  chex.assert_shape(metrics["loss"], ())


def test_nan_loss_names_the_step():
  cfg, model, x, y = _setup()
  x = x.copy()
  x[:] = np.nan
  with pytest.raises(DivergenceError, match="at step 0"):
    train.fit(model, cfg.train, x, y, seeds=[0])


def test_per_seed_padded_sets():
  cfg, model, x, y = _setup(steps=5)
  images, labels, counts = train.pad_to_common([(x[:50], y[:50]), (x[:80], y[:80])])
  assert images.shape[:2] == (2, 80) and counts.tolist() == [50, 80]
  res = train.fit(model, cfg.train, images, labels, counts=counts, seeds=[0, 1])
  assert len(res.history[-1]["loss"]) == 2


def test_resume_equals_uninterrupted(tmp_path):
  cfg, model, x, y = _setup(steps=30)
  full = train.fit(model, cfg.train, x, y, seeds=[0])
  ckpt = str(tmp_path / "ckpt")
  cfg.train.steps = 30
  # Run to the first checkpoint (step 15), then "crash" by stopping early.
  partial_cfg = cfg.train.copy_and_resolve_references()
  partial_cfg.steps = 30
  class Stop(Exception):
    pass
  def stop_after_checkpoint(msg):
    if "step 20/30" in msg:
      raise Stop
  with pytest.raises(Stop):
    train.fit(model, partial_cfg, x, y, seeds=[0], checkpoint_dir=ckpt, progress=stop_after_checkpoint)
  resumed = train.fit(model, cfg.train, x, y, seeds=[0], checkpoint_dir=ckpt)
  assert resumed.steps_run == 20
  chex.assert_trees_all_close(resumed.state.params, full.state.params, rtol=1e-6, atol=1e-7)


def test_bad_train_config():
  cfg, model, x, y = _setup()
  cfg.train.steps = 0
  with pytest.raises(ConfigError, match="train.steps"):
    train.fit(model, cfg.train, x, y, seeds=[0])


def _warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_corrupted_checkpoint_is_redone_not_restored(tmp_path, caplog):
  cfg, model, x, y = _setup(steps=20)
  ckpt = str(tmp_path / "ckpt")
  first = train.fit(model, cfg.train, x, y, seeds=[0], checkpoint_dir=ckpt)
  # Damage every array file of the saved tree.
  import os
  damaged = 0
  for root, _, files in os.walk(ckpt):
    for f in files:
      if f != "dreamjax.json" and os.path.getsize(os.path.join(root, f)) > 0:
        with open(os.path.join(root, f), "wb") as fh:
          fh.write(b"\x00garbage")
        damaged += 1
  assert damaged
  caplog.set_level(logging.WARNING)
  again = train.fit(model, cfg.train, x, y, seeds=[0], checkpoint_dir=ckpt)
  assert any("trains again from step 0" in m for m in _warnings(caplog))
  assert again.steps_run == 20  # trained again from step 0
  chex.assert_trees_all_close(again.state.params, first.state.params, rtol=1e-6, atol=1e-7)


def test_flipped_byte_in_checkpoint_is_caught_and_retrained(tmp_path, caplog):
  """One flipped bit of array data in an Orbax checkpoint restores without any
  error of Orbax's own; the digest stored at save time catches it."""
  import os
  cfg, model, x, y = _setup(steps=20)
  ckpt = str(tmp_path / "ckpt")
  first = train.fit(model, cfg.train, x, y, seeds=[0], checkpoint_dir=ckpt)
  data = [os.path.join(root, f) for root, _, files in os.walk(ckpt) for f in files
          if os.sep + "d" + os.sep in os.path.join(root, f)]
  biggest = max(data, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.seek(os.path.getsize(biggest) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0x10]))
  caplog.set_level(logging.WARNING)
  again = train.fit(model, cfg.train, x, y, seeds=[0], checkpoint_dir=ckpt)
  assert any("is damaged" in m and "from step 0" in m for m in _warnings(caplog)), caplog.text
  assert again.steps_run == 20
  chex.assert_trees_all_close(again.state.params, first.state.params, rtol=1e-6, atol=1e-7)
