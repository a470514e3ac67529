"""Train the classifier on the label budget (optionally + an augmented file)."""

import os
import time
from typing import Any

import numpy as np
from absl import logging

import dreamjax
from dreamjax import data as data_lib
from dreamjax.methods import augment, pretrain
from dreamjax.plumbing import provenance
from dreamjax.training import evaluate, metrics, models, train
from dreamjax.runs import common
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import write_json


def training_set(splits: data_lib.Splits, augment_file: str = ""):
  """The labeled subset, plus the augmented file's images if one is given."""
  images, labels = splits.labeled_images, splits.labeled_labels
  if augment_file:
    extra = data_lib.augfile.load(augment_file, num_classes=splits.num_classes,
                                  image_shape=splits.image_shape)
    images = np.concatenate([images, extra.images])
    labels = np.concatenate([labels, extra.labels])
    logging.info("appended %d images from %s", len(extra), augment_file)
  return images, labels


def validate_config(config) -> None:
  if config.num_seeds < 1:
    raise ConfigError(f"num_seeds={config.num_seeds} must be >= 1.")
  if config.augment_file and not os.path.exists(config.augment_file):
    raise ConfigError(f"augment_file={config.augment_file!r} does not exist.")
  train.validate_train_config(config.train)
  if config.augment != "none":
    augment.validate_config(config)


@common.in_workdir
def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains ``config.num_seeds`` classifiers and writes ``workdir/results.json``."""
  validate_config(config)
  t0 = time.perf_counter()
  mesh, splits = common.start(config)
  images, labels = training_set(splits, config.augment_file)
  model = models.make_model(config.model, splits.num_classes)
  transform = None
  if config.augment != "none":
    transform = augment.batch_transform(config, model)
  init_fn = None
  if config.init_from:
    init_fn = pretrain.init_fn_from_checkpoint(config.init_from, model, splits.image_shape)
  seeds = [config.seed + i for i in range(config.num_seeds)]
  logging.info("training on %d images (%d labeled%s), %d seed(s), %d steps", len(labels),
               len(splits.labeled_labels),
               f" + {len(labels) - len(splits.labeled_labels)} augmented" if config.augment_file else "",
               len(seeds), config.train.steps)
  result = train.fit(model, config.train, images, labels, seeds=seeds, mesh=mesh,
                     image_shape=splits.image_shape, init_fn=init_fn, batch_transform=transform,
                     val=(splits.val_images, splits.val_labels) if len(splits.val_labels) else None,
                     checkpoint_dir=os.path.join(workdir, "checkpoint"),
                     metrics_dir=os.path.join(workdir, metrics.LOGDIR),
                     fingerprint=config.to_json(), desc="classifier")
  test_acc = evaluate.accuracy(model, result.state.variables, splits.test_images,
                               splits.test_labels, mesh=mesh)
  out = {
      "test_accuracy": float(np.mean(test_acc)),
      "test_accuracy_per_seed": test_acc.tolist(),
      "seeds": seeds,
      "num_train_images": int(len(labels)),
      "train_seconds": result.seconds,
      "total_seconds": time.perf_counter() - t0,
      "history": result.history,
      "config": config.to_dict(),
      "dreamjax_version": dreamjax.__version__,
      "provenance": provenance.record(splits),
  }
  write_json(os.path.join(workdir, "results.json"), out)
  logging.info("test accuracy %.4f (per seed %s) in %.1fs", out["test_accuracy"],
               [round(a, 4) for a in test_acc.tolist()], out["total_seconds"])
  return out
