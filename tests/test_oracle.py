"""The measuring instrument: the oracle's training and length choice, its shift invariance,
and Fréchet distances measured on the same number of images in every set."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import REPO
from dreamjax import data
from dreamjax.methods import augment, frechet
from dreamjax.plumbing import sharding
from dreamjax.training import evaluate, models
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import read_jsonl
from dreamjax.study import records
from dreamjax.study.report import report_text
from dreamjax.study.run import cells, choose, context, runner
from dreamjax.study.run.generate import Generated

# What docs/protocol.md's procedure chose for the oracle of the quick and conclusions presets.
CHOSEN_STEPS = 4000


@pytest.mark.parametrize("preset", ["quick", "conclusions", "n100"])
def test_the_presets_train_the_chosen_oracle_and_match_frechet_sizes(preset):
  cfg = study_configs.get_config(preset)
  o = cfg.oracle
  assert o.train.steps == CHOSEN_STEPS and o.train.batch_size == 128
  assert o.augment == "classical" and o.augment_fraction == 0.5
  assert tuple(o.model.conv_features) == (32, 64) and tuple(o.model.dense_features) == (128,)
  assert tuple(o.shift_pixels) == (1, 2)
  assert cfg.eval.frechet_num_images == 100 <= min(cfg.budgets)
  assert cfg.eval.frechet_draws == 10
  runner.validate_config(cfg)
  protocol = open(os.path.join(REPO, "docs", "protocol.md")).read()
  assert f"{CHOSEN_STEPS:,} steps" in protocol and "--choose_oracle_length" in protocol


@pytest.mark.parametrize("field,value,match", [
    ("oracle.augment", "mixup", "oracle.augment"),
    ("oracle.augment_fraction", 1.5, "oracle.augment_fraction"),
    ("oracle.shift_pixels", (0, 2), "oracle.shift_pixels"),
    ("eval.frechet_num_images", 101, r"eval.frechet_num_images.*\[2, 100\]"),
    ("eval.frechet_num_images", 1, "eval.frechet_num_images"),
    ("eval.frechet_draws", 0, "eval.frechet_draws"),
])
def test_bad_instrument_config_fails_before_compute(field, value, match):
  cfg = study_configs.get_config("tiny")
  block, name = field.split(".")
  cfg[block][name] = value
  with pytest.raises(ConfigError, match=match):
    runner.validate_config(cfg)


def _spy_fit(monkeypatch):
  calls = []
  fit = context.train.fit

  def spy(model, tcfg, images, labels, **kw):
    calls.append({"images": images, "labels": labels, **kw})
    return fit(model, tcfg, images, labels, **kw)

  monkeypatch.setattr(context.train, "fit", spy)
  return calls


def test_the_oracle_trains_on_train_labels_with_classical_augmentation_and_measures_shifts(
    tmp_path, real_data_dir, monkeypatch):
  cfg = study_configs.get_config("tiny")
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  calls = _spy_fit(monkeypatch)
  o = context.oracle(cfg, raw, str(tmp_path), sharding.default(None), lambda m: None)
  (call,) = calls
  # Every training label but the validation split's; the test split is only evaluated.
  s = data.make_splits(raw, num_labeled=-1, val_size=cfg.val_size, seed=0)
  np.testing.assert_array_equal(call["labels"], raw.train_labels[s.labeled_index])
  assert len(set(s.labeled_index)) == len(raw.train_labels) - cfg.val_size
  # The classical transform, online, on half of every batch.
  transform = call["batch_transform"]
  assert transform is not None
  x = s.val_images[:8]
  out, _ = transform(None, jnp.asarray(x), jnp.zeros(8, jnp.int32), jax.random.key(0))
  out = np.asarray(out)
  assert not np.array_equal(out[:4], x[:4]) and np.array_equal(out[4:], x[4:])
  # The shift measurements, recomputed here from the oracle's own predictions.
  rec = o.record
  assert [r["pixels"] for r in rec["shift_invariance"]] == [1, 2]
  stacked = jax.tree.map(lambda v: v[None], o.variables)
  plain = evaluate.logits(o.model, stacked, s.test_images)[0].argmax(-1)
  left2 = evaluate.logits(o.model, stacked, evaluate.shifted(s.test_images, 0, -2))[0].argmax(-1)
  two = rec["shift_invariance"][1]
  assert two["accuracy_by_direction"]["left"] == pytest.approx(np.mean(left2 == s.test_labels))
  assert two["agreement_by_direction"]["left"] == pytest.approx(np.mean(left2 == plain))
  assert two["accuracy"] == pytest.approx(np.mean(list(two["accuracy_by_direction"].values())))
  assert len(rec["val_accuracy"]) == 1 and 0 <= rec["val_accuracy"][0] <= 1
  # Recorded once: a second call resumes the checkpoint and reads the record.
  again = context.oracle(cfg, raw, str(tmp_path), sharding.default(None), lambda m: None)
  assert again.record == rec
  assert len([r for r in read_jsonl(str(tmp_path / "results.jsonl"))
              if r["cell"] == "oracle"]) == 1


def test_an_oracle_without_augmentation_trains_without_a_transform(
    tmp_path, real_data_dir, monkeypatch):
  cfg = study_configs.get_config("tiny")
  cfg.oracle.augment = "none"
  cfg.oracle.shift_pixels = ()
  cfg.oracle.train.steps = 10
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  calls = _spy_fit(monkeypatch)
  o = context.oracle(cfg, raw, str(tmp_path), sharding.default(None), lambda m: None)
  assert calls[0]["batch_transform"] is None
  assert "shift_invariance" not in o.record and "val_accuracy" not in o.record


def test_shifted_moves_images_with_black_borders():
  x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
  np.testing.assert_array_equal(evaluate.shifted(x, 0, 0), x)
  down = evaluate.shifted(x, 1, 0)[0, ..., 0]
  np.testing.assert_array_equal(down[1:], x[0, :3, :, 0])
  assert not down[0].any()
  left = evaluate.shifted(x, 0, -2)[0, ..., 0]
  np.testing.assert_array_equal(left[:, :2], x[0, :, 2:, 0])
  assert not left[:, 2:].any()
  assert not evaluate.shifted(x, 4, 0).any()


def test_the_oracle_length_chooser_reads_no_test_label_and_stops_at_the_target(
    monkeypatch):
  seen = []

  class FakeRes:
    def __init__(self, steps):
      self.state = dataclasses.make_dataclass("S", ["variables"])(steps)
      self.seconds = 1.0

  curve = {10: 0.80, 20: 0.90, 40: 0.93, 80: 0.95}

  def fake_fit(model, tcfg, images, labels, **kw):
    seen.append((tcfg.steps, kw["batch_transform"] is not None))
    return FakeRes(tcfg.steps)

  monkeypatch.setattr(choose.train, "fit", fake_fit)
  monkeypatch.setattr(choose.evaluate, "accuracy",
                      lambda model, steps, *a, **k: np.full(1, curve[steps]))
  cfg = study_configs.get_config("tiny")
  raw = data.RawDataset("fake", np.zeros((400, 28, 28, 1), np.uint8), np.arange(400) % 10,
                        np.zeros((10, 28, 28, 1), np.uint8), np.arange(10) % 10, 10,
                        tuple(str(c) for c in range(10)))
  out = choose.choose_oracle_length(cfg, raw, lengths=(10, 20, 40, 80), target=0.925,
                                    val_size=100, log=lambda m: None)
  assert out["steps"] == 40 and out["reached"]
  assert seen == [(10, True), (20, True), (40, True)]  # stops at the first that reaches it
  out = choose.choose_oracle_length(cfg, raw, lengths=(10, 20), target=0.925, val_size=100,
                                    log=lambda m: None)
  assert out["steps"] == 20 and not out["reached"]


def test_the_oracle_length_chooser_on_real_data_reads_no_test_label(real_data_dir):
  cfg = study_configs.get_config("tiny")
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  kwargs = dict(lengths=(10, 20), target=0.99, val_size=500, log=lambda m: None)
  real = choose.choose_oracle_length(cfg, raw, **kwargs)
  rng = np.random.default_rng(0)
  scrambled = dataclasses.replace(raw, test_labels=rng.permutation(raw.test_labels),
                                  test_images=raw.test_images[::-1].copy())
  again = choose.choose_oracle_length(cfg, scrambled, **kwargs)
  assert again["val_accuracy"] == real["val_accuracy"] and again["steps"] == real["steps"]
  assert set(real["val_accuracy"]) == {"10", "20"} and not real["reached"]


def test_an_interrupted_oracle_length_chooser_resumes_and_another_config_is_refused(
    tmp_path, monkeypatch):
  cfg = study_configs.get_config("tiny")
  kwargs = dict(lengths=(10, 20), target=0.99, val_size=500)  # never reached: both train
  trained, fit = [], choose.train.fit
  def counting_fit(*args, **kw):
    trained.append(kw["desc"])
    return fit(*args, **kw)
  monkeypatch.setattr(choose.train, "fit", counting_fit)
  choose.choose_oracle(cfg, str(tmp_path / "whole"), log=lambda m: None, **kwargs)

  class Killed(Exception):
    pass
  def killed_after_one(message):
    if message.startswith("oracle: 10 steps"):
      raise Killed
  workdir = tmp_path / "resumed"
  with pytest.raises(Killed):
    choose.choose_oracle(cfg, str(workdir), log=killed_after_one, **kwargs)
  trained.clear()
  logged = []
  choose.choose_oracle(cfg, str(workdir), log=logged.append, **kwargs)
  assert trained == ["choose oracle@20"]
  assert any("1 measurement(s) already made" in m for m in logged)
  wall_clock = ("seconds", "train_seconds")
  whole, resumed = (json.loads((w / "oracle_length_choice.json").read_text())
                    for w in (tmp_path / "whole", workdir))
  assert ({k: v for k, v in resumed.items() if k not in wall_clock}
          == {k: v for k, v in whole.items() if k not in wall_clock})
  assert set(resumed["train_seconds"]) == {"10", "20"}
  trained.clear()
  other = study_configs.get_config("tiny")
  other.oracle.train.batch_size = 32
  for config, changed, match in ((other, {}, "oracle.train.batch_size"),
                                 (cfg, {"target": 0.95}, "target"),
                                 (cfg, {"val_size": 400}, "val_size")):
    with pytest.raises(ConfigError, match=f"differs in: {match}.*fresh --workdir"):
      choose.choose_oracle(config, str(workdir), log=lambda m: None, **{**kwargs, **changed})
  assert trained == []


# --- Fréchet at matched set sizes ---------------------------------------------------

def _tiny_oracle(test_images):
  model = models.CNN(num_classes=10, conv_features=(4, 8), pool=(True, True),
                     dense_features=(16,))
  variables = models.init_variables(model, jax.random.key(0), (28, 28, 1))
  feats = frechet.features(model, variables, test_images)
  return context.Oracle(model, variables, feats, {})


def test_every_frechet_of_a_cell_is_measured_on_the_same_number_of_images(
    real_data_dir, monkeypatch):
  """The real labeled set (100 images) and a generated set of 300 are both measured on
  ``eval.frechet_num_images`` of their images: the rules read sets of any size alike."""
  cfg = study_configs.get_config("tiny")
  n, max_draws = cfg.eval.frechet_num_images, cfg.eval.frechet_draws
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  s = data.make_splits(raw, num_labeled=100, val_size=cfg.val_size, seed=0)
  o = _tiny_oracle(s.test_images[:cfg.eval.frechet_num_test])
  ctx = context.Context(config=cfg, workdir="", mesh=sharding.default(None), budget=100,
                        seeds=(0,), splits=(s,), model=None, oracle=o, log=lambda m: None)
  sizes = []
  distance = frechet.frechet_distance
  monkeypatch.setattr(frechet, "frechet_distance",
                      lambda a, b: sizes.append(len(a)) or distance(a, b))
  real = cells._quality(ctx, {})  # pylint: disable=protected-access
  assert sizes == [n] * min(max_draws, 100 // n)
  sizes.clear()
  big = np.concatenate([s.labeled_images] * 3)
  gen = {0: Generated(big, np.concatenate([s.labeled_labels] * 3), np.full(300, -1), 0.0)}
  made = cells._quality(ctx, gen)  # pylint: disable=protected-access
  assert sizes == [n] * max_draws
  feats = frechet.features(o.model, o.variables, big)
  assert made["frechet"] == pytest.approx(frechet.matched_frechet(
      feats, o.test_features, n, max_draws))
  assert real["frechet_num_images"] == made["frechet_num_images"] == n
  # A set smaller than n has no distance at that size (KID still reads it).
  short = {0: Generated(s.labeled_images[:n - 1], s.labeled_labels[:n - 1],
                        np.full(n - 1, -1), 0.0)}
  out = cells._quality(ctx, short)  # pylint: disable=protected-access
  assert out["frechet"] is None and out["frechet_per_seed"] == [None] and out["kid"] is not None


def test_a_config_recorded_before_the_instrument_fields_reads_as_it_computed():
  """Published workdirs: an oracle without augmentation or shift measurements, Fréchet on
  whole sets; their checkpoints' fingerprints and their report text stay as they were."""
  with open(os.path.join(REPO, "docs", "results", "conclusions_1200", "study_config.json")) as f:
    recorded = json.load(f)["config"]
  assert "augment" not in recorded["oracle"] and "frechet_num_images" not in recorded["eval"]
  up = records.upgrade_config(recorded)
  assert up["oracle"]["augment"] == "none" and up["oracle"]["shift_pixels"] == []
  assert up["eval"]["frechet_num_images"] == 0
  today = study_configs.get_config("conclusions")
  assert up["oracle"]["augment_fraction"] == today.oracle.augment_fraction
  assert up["eval"]["frechet_draws"] == today.eval.frechet_draws
  assert records.upgrade_config(recorded, json.loads(today.to_json()))["oracle"] == up["oracle"]
  # The oracle's checkpoint fingerprint is the one it was made with: its block as recorded.
  old = ml_collections.ConfigDict({"oracle": recorded["oracle"], "dataset": recorded["dataset"]})
  new = ml_collections.ConfigDict(up)
  assert context.oracle_fingerprint(new) == old.oracle.to_json() + recorded["dataset"]
  new.oracle.shift_pixels = (1, 2)  # measured after training: the same checkpoint
  assert context.oracle_fingerprint(new) == old.oracle.to_json() + recorded["dataset"]
  new.oracle.augment = "classical"
  assert context.oracle_fingerprint(new) != old.oracle.to_json() + recorded["dataset"]
  # No cell trains on the instrument's fields.
  cfg = ml_collections.ConfigDict(up)
  before = records.cell_fingerprint(cfg)
  cfg.eval.frechet_num_images, cfg.oracle.augment = 100, "classical"
  assert records.cell_fingerprint(cfg) == before
  # Their Fréchet values were of whole sets, and their report says so, with no new section.
  legacy = ml_collections.ConfigDict(up)
  assert report_text._frechet_text(legacy).startswith("it grows as a set shrinks")  # pylint: disable=protected-access
  oracle_record = {"cell": "oracle", "status": "ok", "test_accuracy": [0.9]}
  assert report_text._instrument(legacy, oracle_record) == []  # pylint: disable=protected-access
  # The whole-set distance is what a matched size of 0 computes.
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(50, 4)), rng.normal(size=(80, 4))
  assert frechet.matched_frechet(a, b, 0) == frechet.frechet_distance(a, b)


def test_the_instrument_section_prints_the_shift_measurements():
  cfg = study_configs.get_config("quick")
  rows = [{"pixels": d, "accuracy": 0.9 - d / 100, "agreement": 0.97 - d / 100,
           "accuracy_by_direction": {"down": 0.9, "up": 0.89, "right": 0.88, "left": 0.87},
           "agreement_by_direction": {}} for d in (1, 2)]
  oracle_record = {"cell": "oracle", "status": "ok", "test_accuracy": [0.925],
                   "val_accuracy": [0.93], "shift_invariance": rows}
  md = "\n".join(report_text._instrument(cfg, oracle_record))  # pylint: disable=protected-access
  assert "## The instrument" in md and "92.50%" in md and "validation 93.00%" in md
  assert "| 1 | 89.00 | 87.00 (left) | 96.00 |" in md
  assert "| 2 | 88.00 | 87.00 (left) | 95.00 |" in md
  assert "on 100 of its images" in md and f"{CHOSEN_STEPS} steps" in md


def test_an_oracle_is_kept_for_the_next_study_and_restored_to_the_same_bits(
    tmp_path, real_data_dir, monkeypatch):
  monkeypatch.setenv("DREAMJAX_CACHE_DIR", str(tmp_path / "cache"))
  cfg = study_configs.get_config("tiny")
  cfg.generator_cache = True
  cfg.oracle.train.steps = 20
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  mesh = sharding.default(None)
  first = context.oracle(cfg, raw, str(tmp_path / "a"), mesh, lambda m: None, cache=True)
  kept = context.oracle_cache_path(cfg, raw)
  assert kept.startswith(str(tmp_path / "cache")) and os.path.isdir(kept)
  # A study of fresh seeds reads no seed in its oracle: it restores that one, trains none.
  fresh = study_configs.get_config("tiny")
  fresh.generator_cache, fresh.oracle.train.steps, fresh.first_seed = True, 20, 5
  assert context.oracle_cache_path(fresh, raw) == kept
  calls, logs = _spy_fit(monkeypatch), []
  again = context.oracle(fresh, raw, str(tmp_path / "b"), mesh, logs.append, cache=True)
  assert any("restored from the model cache" in m for m in logs)
  assert any("resumed from step 20" in m for m in logs) and len(calls) == 1
  jax.tree.map(np.testing.assert_array_equal, again.variables, first.variables)
  np.testing.assert_array_equal(again.test_features, first.test_features)
  assert again.record["history"] == first.record["history"]
  assert again.record["test_accuracy"] == first.record["test_accuracy"]
  assert again.record["timing"]["train_seconds"] >= first.record["timing"]["train_seconds"]
  # Without ``cache`` (a recheck) and with another config, nothing is read from it.
  logs.clear()
  context.oracle(cfg, raw, str(tmp_path / "c"), mesh, logs.append)
  longer = study_configs.get_config("tiny")
  longer.generator_cache, longer.oracle.train.steps = True, 30
  assert context.oracle_cache_path(longer, raw) != kept
  assert not any("model cache" in m for m in logs)
  # A cached folder that is no finished oracle of the config is removed, and one trained.
  os.remove(os.path.join(kept, "dreamjax.json"))
  logs.clear()
  context.oracle(cfg, raw, str(tmp_path / "d"), mesh, logs.append, cache=True)
  assert any("not a finished oracle" in m for m in logs)
  assert os.path.isdir(kept) and os.listdir(kept)  # kept anew
  off = study_configs.get_config("tiny")
  assert context.oracle_cache_path(off, raw) is None  # the tiny preset keeps no models
