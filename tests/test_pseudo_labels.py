"""Pseudo-labels of the pool arms: class-balanced, and measured (never trained) on the
pool's withheld labels."""

import dataclasses
import types

import jax
import numpy as np
import pytest

from conftest import synthetic_images
from dreamjax import data as data_lib
from dreamjax import generators
from dreamjax.plumbing import sharding
from dreamjax.training import models, train
from dreamjax.configs import study as study_configs
from dreamjax.study.run import cells, context, generate


def test_balanced_selection_keeps_the_most_confident_of_each_class():
  probs = np.asarray([
      [0.90, 0.05, 0.05],  # 0: class 0
      [0.95, 0.03, 0.02],  # 1: class 0, most confident
      [0.60, 0.20, 0.20],  # 2: class 0, third: over the quota
      [0.92, 0.04, 0.04],  # 3: class 0, second
      [0.10, 0.80, 0.10],  # 4: class 1
      [0.30, 0.40, 0.30],  # 5: class 1, below the threshold
      [0.10, 0.10, 0.80],  # 6: class 2
      [0.05, 0.05, 0.90],  # 7: class 2
  ])
  idx = generators.balanced_selection(probs, per_class=2, threshold=0.5)
  np.testing.assert_array_equal(idx, [1, 3, 4, 6, 7])
  # Without a quota every confident row stays; without a threshold the quota alone acts.
  np.testing.assert_array_equal(generators.balanced_selection(probs, per_class=8, threshold=0.5),
                                [0, 1, 2, 3, 4, 6, 7])
  np.testing.assert_array_equal(generators.balanced_selection(probs, per_class=1, threshold=0.0),
                                [1, 4, 7])
  assert len(generators.balanced_selection(probs, per_class=2, threshold=0.99)) == 0


def _fake_generator(monkeypatch, share_of_class0=0.7, classes=4):
  """A generator whose samples carry their class and confidence in two pixels: most of
  them of class 0, and a labeler that reads those pixels."""
  def sample(gcfg, params, key, num, mesh=None):
    k_class, k_conf = jax.random.split(key)
    rare = jax.random.randint(k_class, (num,), 1, classes)
    common = jax.random.uniform(k_class, (num,), minval=0.0, maxval=1.0) < share_of_class0
    label = np.where(np.asarray(common), 0, np.asarray(rare))
    confidence = np.asarray(jax.random.uniform(k_conf, (num,), minval=0.3, maxval=1.0))
    x = np.zeros((num, 2, 1, 1), np.float32)
    x[:, 0, 0, 0], x[:, 1, 0, 0] = label, confidence
    return x

  def probabilities(model, variables, x, mesh=None):
    label, confidence = x[:, 0, 0, 0].astype(int), x[:, 1, 0, 0]
    p = np.repeat(((1 - confidence) / (classes - 1))[:, None], classes, 1)
    p[np.arange(len(x)), label] = confidence
    return p

  def pseudo_label(model, variables, x, threshold, mesh=None):
    p = probabilities(model, variables, x)
    keep = p.max(-1) >= threshold
    return x[keep], p.argmax(-1)[keep], float(keep.mean())

  monkeypatch.setitem(generators.SAMPLE, "fake", sample)
  monkeypatch.setattr(generators, "probabilities", probabilities)
  monkeypatch.setattr(generators, "pseudo_label", pseudo_label)
  return types.SimpleNamespace(num_classes=classes, image_shape=(2, 1, 1), mesh=None)


def test_balanced_pool_samples_fill_every_class_over_rounds(monkeypatch):
  ctx = _fake_generator(monkeypatch)
  args = (ctx, "fake", None, None, None, None, 40)
  x, y, info = generate._balanced_samples(*args, 0.5, jax.random.key(0))
  counts = np.bincount(y, minlength=4)
  np.testing.assert_array_equal(counts, [10, 10, 10, 10])  # 40 / 4 classes each
  assert info["rounds"] > 1 and info["per_class_target"] == 10
  np.testing.assert_array_equal(x[:, 0, 0, 0].astype(int), y)  # each image keeps its label
  assert np.all(x[:, 1, 0, 0] >= 0.5)
  # Unbalanced (the setting's old behaviour): the first confident samples, mostly class 0.
  _, y_first, first = generate._first_samples(*args, 0.5, jax.random.key(0))
  assert len(y_first) == 40 and np.bincount(y_first, minlength=4)[0] > 20
  assert first["balanced"] is False and first["rounds"] < info["rounds"]


def _raw(pool_labels=None):
  """A small synthetic dataset; ``pool_labels`` replaces the labels of seed 0's pool."""
  x, y = synthetic_images(400, seed=3)
  xt, yt = synthetic_images(40, seed=4)
  raw = data_lib.RawDataset("synthetic", x[..., None], y.astype(np.int64), xt[..., None],
                            yt.astype(np.int64), 10, tuple(str(c) for c in range(10)))
  if pool_labels is None:
    return raw
  pool = data_lib.make_splits(raw, num_labeled=50, val_size=50, seed=0).pool_index
  labels = raw.train_labels.copy()
  labels[pool] = pool_labels
  return dataclasses.replace(raw, train_labels=labels)


def _context(raw, garbage_labels=False):
  """The budget-50 context of seed 0 with an untrained 'baseline' (its pseudo-labels
  need not be good to show where they come from)."""
  cfg = study_configs.get_config("tiny")
  s = data_lib.make_splits(raw, num_labeled=50, val_size=50, seed=0)
  if garbage_labels:  # labels an arm must not read either
    s = dataclasses.replace(s, val_labels=np.full_like(s.val_labels, 255),
                            test_labels=np.full_like(s.test_labels, 255))
  model = models.make_model(cfg.model, 10)
  variables = train.stack([models.init_variables(model, jax.random.key(7), (28, 28, 1))])
  baseline = types.SimpleNamespace(state=types.SimpleNamespace(variables=variables))
  return context.Context(config=cfg, workdir="", mesh=sharding.default(None), budget=50,
                         seeds=(0,), splits=(s,), model=model, oracle=None, baseline=baseline,
                         log=lambda m: None)


def test_self_training_reads_no_pool_label_and_its_accuracy_is_measured_after():
  raw = _raw()
  garbage = _raw(pool_labels=255)  # no class at all: a read would show
  ctx, bad_ctx = _context(raw), _context(garbage, garbage_labels=True)
  np.testing.assert_array_equal(ctx.splits[0].pool_index, bad_ctx.splits[0].pool_index)
  key = jax.random.key(0)
  g = generate.self_training(ctx, "self_training", 0, ctx.splits[0], key)
  bad = generate.self_training(bad_ctx, "self_training", 0, bad_ctx.splits[0], key)
  np.testing.assert_array_equal(g.images, bad.images)
  np.testing.assert_array_equal(g.labels, bad.labels)
  np.testing.assert_array_equal(g.source_index, bad.source_index)
  assert g.info == bad.info and sum(g.info["kept_per_class"]) == len(g.labels)
  assert np.all(np.bincount(g.labels, minlength=10) <= 20)  # max_images 200 / 10 classes
  # The withheld labels reach only the measurement, made after the set exists.
  (acc,) = cells.pseudo_label_accuracy({0: g}, raw.train_labels)
  truth = raw.train_labels[g.source_index]
  assert acc == pytest.approx(np.mean(g.labels == truth))
  assert cells.pseudo_label_accuracy({0: bad}, garbage.train_labels) == [0.0]
  no_real = dataclasses.replace(g, source_index=np.full_like(g.source_index, -1))
  assert cells.pseudo_label_accuracy({0: no_real}, raw.train_labels) == [None]


def test_fixmatch_gets_pool_images_and_nothing_else():
  """The unlabeled term is made of the pool's images only: a context whose pool (and
  validation and test) labels are garbage gives the same term."""
  raw = _raw()
  ctx, bad_ctx = _context(raw), _context(_raw(pool_labels=255), garbage_labels=True)
  u, bad = generate.fixmatch(ctx, "fixmatch"), generate.fixmatch(bad_ctx, "fixmatch")
  assert {f.name for f in dataclasses.fields(train.Unlabeled)} == {
      "images", "batch_size", "loss", "counts", "info"}
  np.testing.assert_array_equal(u.images[0], ctx.pool_images(0))
  np.testing.assert_array_equal(u.images, bad.images)
  np.testing.assert_array_equal(u.counts, bad.counts)
  assert u.loss is bad.loss and u.info == bad.info  # one loss object per setting
  assert u.batch_size == 3 * ctx.train_cfg.batch_size and u.images.dtype == np.float32
