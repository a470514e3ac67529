"""Dream a split with a classifier; write the augmented set, figures and results."""

import json
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

import dreamjax
from dreamjax import figures
from dreamjax.plumbing import checkpoint, provenance
from dreamjax.training import evaluate, metrics, models, train
from dreamjax import data as data_lib
from dreamjax import dream
from dreamjax.training import seeds as seeds_lib
from dreamjax.configs import dream as dream_configs
from dreamjax.errors import ConfigError
from dreamjax.runs import common
from dreamjax.plumbing.fileio import write_json

SPLITS = ("labeled", "val", "test")


def validate_config(config) -> None:
  """The experiment's own fields; the dream block is checked against the model later."""
  if config.split not in SPLITS:
    raise ConfigError(f"split={config.split!r} is unknown; choose one of {', '.join(SPLITS)}.")
  checks = [
      ("max_images", config.max_images, config.max_images == -1 or config.max_images >= 1,
       ">= 1, or -1 for the whole split"),
      ("chunk_size", config.chunk_size, config.chunk_size >= 1, ">= 1"),
      ("grid_images", config.grid_images, config.grid_images >= 0, ">= 0 (0: no grid)"),
      ("zoom_frames", config.zoom_frames, config.zoom_frames >= 0, ">= 0 (0: no zoom)"),
      ("zoom_scale", config.zoom_scale, config.zoom_scale > 1, "> 1"),
  ]
  for name, value, ok, valid in checks:
    if not ok:
      raise ConfigError(f"{name}={value} is invalid: must be {valid}.")
  for name in config.grid_presets:
    if name not in dream_configs.PRESETS:
      raise ConfigError(f"grid_presets has {name!r}; choose from"
                        f" {', '.join(dream_configs.PRESETS)}.")
  if config.classifier_dir and not checkpoint.exists(
      os.path.join(config.classifier_dir, "checkpoint")):
    raise ConfigError(f"classifier_dir={config.classifier_dir!r} holds no classifier checkpoint;"
                      " pass the --workdir of experiments/train_classifier.py, or '' to train"
                      " one here.")
  train.validate_train_config(config.train)


def _split(splits: data_lib.Splits, name: str):
  if name == "labeled":
    return splits.labeled_images, splits.labeled_labels, splits.labeled_index
  images, labels = (splits.val_images, splits.val_labels) if name == "val" else (
      splits.test_images, splits.test_labels)
  return images, labels, np.full((len(labels),), -1, np.int64)  # not labeled-split rows


@common.in_workdir
def dream_split(config, workdir: str) -> dict[str, Any]:
  """Dreams ``config.split``; writes augmented.npz, grid.png, zoom.png and results.json."""
  validate_config(config)
  t0 = time.perf_counter()
  mesh, splits = common.start(config)
  if config.classifier_dir:
    model, variables = common.load_classifier(config.classifier_dir, splits.num_classes,
                                             splits.image_shape)
  else:
    model = models.make_model(config.model, splits.num_classes)
  # Every dream setting is refused here, before the classifier trains or anything dreams.
  dream.validate(config.dream, model)
  grid_cfgs = [(name, dream_configs.get_preset(name)) for name in config.grid_presets]
  for _, c in grid_cfgs:
    dream.validate(c, model)
  if not config.classifier_dir:
    fit = train.fit(model, config.train, splits.labeled_images, splits.labeled_labels,
                    seeds=[config.seed], mesh=mesh, image_shape=splits.image_shape,
                    checkpoint_dir=os.path.join(workdir, "classifier"),
                    metrics_dir=os.path.join(workdir, metrics.LOGDIR),
                    fingerprint=json.dumps([config.model.to_dict(), config.num_labeled,
                                            config.val_size, config.dataset]),
                    desc="classifier")
    variables = seeds_lib.unstack(fit.state.variables, 0)

  images, labels, source_index = _split(splits, config.split)
  if config.max_images > 0:
    images, labels, source_index = (a[:config.max_images] for a in (images, labels, source_index))
  key = jax.random.fold_in(jax.random.key(config.seed), 2)
  logging.info("dreaming %d %s images (preset %s, strength %.3g)", len(labels), config.split,
               config.preset, dream_configs.strength(config.dream))
  result = dream.dream_dataset(model, variables, images, labels, config.dream, key,
                               chunk_size=config.chunk_size, mesh=mesh)

  metadata = {"method": "deep_dream", "preset": config.preset, "dream": config.dream.to_dict(),
              "strength": dream_configs.strength(config.dream), "split": config.split,
              "dataset": splits.name, "seed": config.seed,
              "classifier": config.classifier_dir or os.path.join(workdir, "classifier"),
              "chunk_size": config.chunk_size}
  data_lib.augfile.save(os.path.join(workdir, "augmented.npz"), result.images, labels,
                        source_index, metadata)

  agreement = evaluate.accuracy_one(model, variables, result.images, labels, mesh=mesh)
  source_accuracy = evaluate.accuracy_one(model, variables, images, labels, mesh=mesh)

  k = min(config.grid_images, len(labels))
  if k:
    dreams = [(dream_configs.strength(config.dream), config.preset, result.images[:k])]
    for i, (name, c) in enumerate(grid_cfgs):
      extra = dream.dream_dataset(model, variables, images[:k], labels[:k], c,
                                  jax.random.fold_in(key, 1000 + i), progress=lambda _: None,
                                  mesh=mesh)
      dreams.append((dream_configs.strength(c), name, extra.images))
    dreams.sort(key=lambda d: d[0])  # columns from subtle to extreme
    columns = [("source", images[:k])] + [(f"{name} ({s:.2g})", x) for s, name, x in dreams]
    figures.save_grid(os.path.join(workdir, "grid.png"), columns)
  if config.zoom_frames and len(labels):
    frames = dream.dream_zoom(model, variables, images[0], int(labels[0]), config.dream,
                              jax.random.fold_in(key, 2000), frames=config.zoom_frames,
                              zoom_scale=config.zoom_scale)
    figures.save_strip(os.path.join(workdir, "zoom.png"), frames)
    if config.zoom_gif:
      figures.save_gif(os.path.join(workdir, "zoom.gif"), frames)

  out = {
      **result.summary(),
      "strength": dream_configs.strength(config.dream),
      "classifier_accuracy_on_sources": source_accuracy,
      "classifier_accuracy_on_dreams": agreement,  # label kept, by the dreaming classifier
      "total_seconds": time.perf_counter() - t0,
      "config": config.to_dict(),
      "dreamjax_version": dreamjax.__version__,
      "provenance": provenance.record(splits),
  }
  write_json(os.path.join(workdir, "results.json"), out)
  logging.info("dreamed %d images in %.1fs (%.0f image·steps/s): mean L2 %.3f, L∞ %.3f,"
               " objective gain %.4g", out["count"], out["seconds"], out["image_steps_per_s"],
               out["mean_l2"], out["mean_linf"], out["mean_objective_gain"])
  return out
