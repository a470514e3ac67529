"""The diffusion generators' length chooser (study --choose_generator_steps): one staged run
per model is the short runs, its rule, resume, a changed config, no test data."""

import dataclasses
import json
import types

import jax
import numpy as np
import pytest

from dreamjax import data, generators
from dreamjax.plumbing import lock, sharding
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import read_jsonl
from dreamjax.study.run import artefacts, choose, context, generate

# Tiny lengths for the tiny preset: two doublings of each model, few samples.
LENGTHS = {"diffusion_small": (4, 8), "diffusion_pool": (4, 8)}
SAMPLES = 50


class _Killed(Exception):
  """A run stopped part-way (a kill, a lost machine)."""


def _equal_trees(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                    for x, y in zip(la, lb))


def _without_wall_clock(out):
  """The choice with its wall-clock fields left out (they differ between runs)."""
  out = json.loads(json.dumps(out))
  out.pop("seconds", None)
  for arm in out["arms"].values():
    for m in arm["by_length"].values():
      m.pop("seconds", None)
      m.pop("train_seconds", None)
  return out


def test_a_staged_run_is_the_short_run_bit_for_bit(tmp_path, real_data_dir, monkeypatch):
  """The state after k steps of a longer run, and after a resume from a checkpoint taken
  part-way, is the study's own k-step run of the same generator, to the bit: constant
  learning rate, the EMA's decay a function of the step, step s's key fold_in(root, s)."""
  monkeypatch.setattr(choose, "GENERATOR_CHECKPOINT_EVERY", 3)
  cfg = study_configs.get_config("tiny")
  raw = choose.without_test(data.load_dataset("fashion_mnist", real_data_dir))
  mesh = sharding.default(None)
  seeds = choose.generator_seeds(cfg)
  splits = [data.make_splits(raw, num_labeled=100, val_size=cfg.val_size, seed=s) for s in seeds]
  keys = [jax.random.split(artefacts.arm_key(s, "diffusion_small"))[0] for s in seeds]
  ctx = types.SimpleNamespace(log=lambda m: None, mesh=mesh)
  gcfg = artefacts.generator_config(cfg, "diffusion_small")
  assert gcfg.diffusion_ema_decay > 0  # the average is part of what must match

  def study_small(steps):
    g = gcfg.copy_and_resolve_references()
    g.steps = steps
    return [p for p, _ in generate.train_small(ctx, "diffusion", g, splits, keys)]

  def staged(path, images, labels, keys, conditional, log=lambda m: None):
    return choose._StagedRun(gcfg if conditional else pool_cfg, images, labels, keys,
                             conditional=conditional, mesh=mesh, path=str(path),
                             fingerprint="f", desc="staged", log=log)

  images = np.stack([s.labeled_images for s in splits])
  labels = np.stack([s.labeled_labels for s in splits])
  run = staged(tmp_path / "small", images, labels, keys, True)
  run.train_to(5)
  assert _equal_trees(run.params(), study_small(5))
  run.train_to(8)
  at_8 = run.params()
  assert _equal_trees(at_8, study_small(8))
  # Killed at its last step, before the save there: it resumes from the one at step 6.
  def killed_at_step_8(message):
    if "step 8/8" in message:
      raise _Killed

  with pytest.raises(_Killed):
    staged(tmp_path / "part", images, labels, keys, True, log=killed_at_step_8).train_to(8)
  resumed = staged(tmp_path / "part", images, labels, keys, True)
  assert resumed.at == 6
  resumed.train_to(8)
  assert _equal_trees(resumed.params(), at_8)

  pool_cfg = artefacts.generator_config(cfg, "diffusion_pool")
  pool = context.shared_pool(cfg, raw)
  key = artefacts.arm_key(seeds[0], "diffusion_pool_gen")

  def study_pool(steps):
    g = pool_cfg.copy_and_resolve_references()
    g.steps = steps
    return [generators.TRAIN["diffusion"](g, pool, None, key, mesh=mesh)[0]]

  run = staged(tmp_path / "pool", pool, None, [key], False)
  run.train_to(4)
  assert _equal_trees(run.params(), study_pool(4))
  run.train_to(8)
  assert _equal_trees(run.params(), study_pool(8))
  assert not _equal_trees(study_pool(7), study_pool(8))  # the comparison can tell steps apart


def test_the_rule_stops_where_doubling_improves_neither_measure():
  lengths = (10, 20, 40, 80)
  flat_kid = {n: [1.0, 1.0] for n in lengths}
  # Label share gains 5, 2, then 0.5 points; KID flat: stops at 40.
  share = {10: [0.50, 0.50], 20: [0.55, 0.55], 40: [0.57, 0.57], 80: [0.575, 0.575]}
  assert choose.generator_rule(lengths, share, flat_kid) == (40, False)
  # The same shares, KID still falling by 20% per doubling: still improving at 80.
  kid = {10: [1.0, 1.0], 20: [0.8, 0.8], 40: [0.64, 0.64], 80: [0.512, 0.5]}
  assert choose.generator_rule(lengths, share, kid) == (80, True)
  # Label share flat, KID falls 30% then 5%: stops at 20.
  flat_share = {n: [0.9, 0.9] for n in lengths}
  kid = {10: [1.0, 1.0], 20: [0.7, 0.7], 40: [0.665, 0.665], 80: [0.1, 0.1]}
  assert choose.generator_rule(lengths, flat_share, kid) == (20, False)
  # Neither moves at the first doubling: the shortest; the means decide, not one seed.
  share = {10: [0.5, 0.7], 20: [0.7, 0.505], 40: [0.9, 0.9], 80: [0.9, 0.9]}
  assert choose.generator_rule(lengths, share, flat_kid) == (10, False)
  # KID at or below zero cannot improve further.
  kid = {10: [0.0, 0.0], 20: [-0.5, -0.5], 40: [-1.0, -1.0], 80: [-1.0, -1.0]}
  assert choose.generator_rule(lengths, flat_share, kid) == (10, False)
  # A worse KID with better labels still improves; a worse label share with a better KID too.
  assert choose.generator_rule((10, 20), {10: [0.5], 20: [0.6]}, {10: [1.0], 20: [2.0]}) == (
      20, True)
  assert choose.generator_rule((10, 20), {10: [0.6], 20: [0.5]}, {10: [1.0], 20: [0.5]}) == (
      20, True)


def _counting_stages(monkeypatch):
  """(desc, from step, to step) of every stage choose trains from now on (for real)."""
  trained, train_to = [], choose._StagedRun.train_to

  def counting(self, steps):
    trained.append((self.desc, self.at, steps))
    return train_to(self, steps)

  monkeypatch.setattr(choose._StagedRun, "train_to", counting)
  return trained


def test_an_interrupted_generator_chooser_resumes_with_what_it_measured(tmp_path, monkeypatch):
  cfg = study_configs.get_config("tiny")
  kwargs = dict(lengths=LENGTHS, num_samples=SAMPLES)
  trained = _counting_stages(monkeypatch)
  choose.choose_generator_steps(cfg, str(tmp_path / "whole"), log=lambda m: None, **kwargs)
  assert len(trained) == 4

  def killed_at_the_pool_s_first_length(message):
    if message.startswith("diffusion_pool: 4 steps"):
      raise _Killed

  workdir = tmp_path / "resumed"
  with pytest.raises(_Killed):
    choose.choose_generator_steps(cfg, str(workdir), log=killed_at_the_pool_s_first_length,
                                  **kwargs)
  assert not (workdir / "generator_steps_choice.json").exists()
  assert len(read_jsonl(str(workdir / "generator_steps_measurements.jsonl"))) == 3
  trained.clear()
  logged = []
  summary = choose.choose_generator_steps(cfg, str(workdir), log=logged.append, **kwargs)
  # The small models are not trained again; the pool model goes on from its checkpoint.
  assert trained == [("choose diffusion_pool", 4, 8)]
  assert any("3 measurement(s) already made" in m for m in logged)
  assert any("resuming from its checkpoint at step 4" in m for m in logged)
  assert sum("(measured before, reused)" in m for m in logged) == 3
  whole = json.loads((tmp_path / "whole" / "generator_steps_choice.json").read_text())
  resumed = json.loads((workdir / "generator_steps_choice.json").read_text())
  assert _without_wall_clock(resumed) == _without_wall_clock(whole)
  trained.clear()  # a finished chooser run again trains nothing and writes the same choice
  assert choose.choose_generator_steps(cfg, str(workdir), log=lambda m: None,
                                       **kwargs) == summary
  assert trained == []
  assert json.loads((workdir / "generator_steps_choice.json").read_text()) == resumed


def test_the_generator_chooser_reads_no_test_image_or_label(tmp_path, real_data_dir):
  cfg = study_configs.get_config("tiny")
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  kwargs = dict(lengths=LENGTHS, num_samples=SAMPLES, log=lambda m: None)
  real = choose.choose_generator_steps_in(cfg, raw, str(tmp_path / "real"), **kwargs)
  rng = np.random.default_rng(0)
  scrambled = dataclasses.replace(raw, test_labels=rng.permutation(raw.test_labels),
                                  test_images=raw.test_images[::-1].copy())
  again = choose.choose_generator_steps_in(cfg, scrambled, str(tmp_path / "scrambled"),
                                           **kwargs)
  assert _without_wall_clock(again) == _without_wall_clock(real)
  assert set(real["arms"]) == set(LENGTHS)
  for arm, c in real["arms"].items():
    assert c["steps"] in LENGTHS[arm] and set(c["by_length"]) == {str(n) for n in LENGTHS[arm]}
    for m in c["by_length"].values():
      models = len(choose.generator_seeds(cfg)) if arm == "diffusion_small" else 1
      assert len(m["label_share"]) == len(m["kid"]) == len(m["frechet_100"]) == models
  assert real["val_images"] == cfg.val_size


def test_a_generator_chooser_with_another_config_refuses_the_workdir(tmp_path, monkeypatch):
  cfg = study_configs.get_config("tiny")
  kwargs = dict(lengths={"diffusion_pool": (4, 8)}, num_samples=SAMPLES, log=lambda m: None)
  choose.choose_generator_steps(cfg, str(tmp_path / "done"), **kwargs)
  trained = _counting_stages(monkeypatch)
  changes = (("generator_overrides", {"diffusion_learning_rate": 2e-3},
              "generators.diffusion_pool"), ("pseudo_label_threshold", 0.5,
                                             "pseudo_label_threshold"),
             ("num_seeds", 3, "seeds"), ("val_size", 100, "val_size"))
  for field, value, named in changes:
    other = study_configs.get_config("tiny")
    if isinstance(value, dict):
      other.generator_overrides.update(value)
    else:
      setattr(other, field, value)
    with pytest.raises(ConfigError, match=f"differs in: {named}.*fresh --workdir"):
      choose.choose_generator_steps(other, str(tmp_path / "done"), **kwargs)
  with pytest.raises(ConfigError, match="differs in: lengths"):
    choose.choose_generator_steps(cfg, str(tmp_path / "done"),
                                  **{**kwargs, "lengths": {"diffusion_pool": (4, 16)}})
  assert trained == []
  # The arm's own length is what the chooser sets: changing it changes no measurement.
  same = study_configs.get_config("tiny")
  same.arm_settings.diffusion_pool.steps = 99
  choose.choose_generator_steps(same, str(tmp_path / "done"), **kwargs)
  assert trained == []

  # Killed part-way through its first length, before any measurement: the checkpoint
  # alone says what made it, and another config is refused rather than resumed.
  monkeypatch.setattr(choose, "GENERATOR_CHECKPOINT_EVERY", 2)

  def killed_at_step_4(message):
    if message.startswith("choose diffusion_pool: step 4/"):
      raise _Killed

  with pytest.raises(_Killed):
    choose.choose_generator_steps(cfg, str(tmp_path / "part"), **{**kwargs,
                                                                   "log": killed_at_step_4})
  assert not (tmp_path / "part" / "generator_steps_measurements.jsonl").exists()
  other = study_configs.get_config("tiny")
  other.generator_overrides.diffusion_learning_rate = 2e-3
  with pytest.raises(ConfigError, match="another config.*fresh --workdir"):
    choose.choose_generator_steps(other, str(tmp_path / "part"), **kwargs)
  trained.clear()
  logged = []
  choose.choose_generator_steps(cfg, str(tmp_path / "part"), **{**kwargs, "log": logged.append})
  assert any("resuming from its checkpoint at step 2" in m for m in logged)


def test_a_generator_chooser_refuses_a_busy_or_unwritable_workdir_before_training(
    tmp_path, monkeypatch):
  cfg = study_configs.get_config("tiny")
  trained = _counting_stages(monkeypatch)
  with lock.workdir_lock(str(tmp_path)):
    with pytest.raises(ConfigError, match="is in use"):
      choose.choose_generator_steps(cfg, str(tmp_path), lengths=LENGTHS, log=lambda m: None)
  (tmp_path / "file").write_text("")
  with pytest.raises(ConfigError, match="is a file, not a folder"):
    choose.choose_generator_steps(cfg, str(tmp_path / "file"), lengths=LENGTHS,
                                  log=lambda m: None)
  assert trained == []
