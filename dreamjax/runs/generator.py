"""Train a generator (vae | gan | diffusion) or a pretrained trunk (ae | pretext) and
write its checkpoint, figures, augmented-dataset file and results.json."""

import json
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

import dreamjax
from dreamjax import figures, generators
from dreamjax.methods import frechet, pretrain
from dreamjax.plumbing import provenance, sharding
from dreamjax.training import metrics, models, train
from dreamjax import data as data_lib
from dreamjax.training import seeds as seeds_lib
from dreamjax.configs.generator import MODELS, SOURCES
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import write_json
from dreamjax.runs import common as run_common


def validate_config(config) -> None:
  """Refuses bad settings before any data is read or any compute runs."""
  if config.model not in MODELS:
    raise ConfigError(f"model={config.model!r} is unknown; choose one of {', '.join(MODELS)}.")
  if config.source not in SOURCES:
    raise ConfigError(f"source={config.source!r} is unknown; choose one of {', '.join(SOURCES)}.")
  if config.conditional and config.model not in generators.TRAIN:
    raise ConfigError(f"conditional=True only applies to model=vae|gan|diffusion, not"
                      f" {config.model}.")
  if config.conditional and config.source != "labeled":
    raise ConfigError("conditional=True needs labels, but source=pool has none by design;"
                      " use source=labeled or conditional=False.")
  if config.model in ("ae", "pretext") and config.source != "pool":
    raise ConfigError(f"model={config.model} learns from the unlabeled pool; set source=pool.")
  if not 0.0 <= config.pseudo_label_threshold <= 1.0:
    raise ConfigError(f"pseudo_label_threshold={config.pseudo_label_threshold} must be in [0, 1].")
  if config.augment_per_image < 0:
    raise ConfigError(f"augment_per_image={config.augment_per_image} must be >= 0.")
  if config.fid_num != 0 and config.fid_num < 2:
    raise ConfigError(f"fid_num={config.fid_num} must be 0 (skip) or >= 2.")
  if config.reference_steps < 1:
    raise ConfigError(f"reference_steps={config.reference_steps} must be >= 1.")
  for name in ("labeler_workdir", "reference_workdir"):
    if config[name] and not os.path.exists(os.path.join(config[name], "results.json")):
      raise ConfigError(f"{name}={config[name]!r} is not a train_classifier.py workdir"
                        " (no results.json there).")
  train.validate_train_config(config.train)


def _classifier(config, workdir: str, images, labels, steps: int, num_classes: int, desc: str,
                mesh):
  """Loads the classifier from ``workdir`` if given, else trains one (seed 0 of config.seed)."""
  if workdir:
    return run_common.load_classifier(workdir, num_classes, images.shape[1:])
  model = models.make_model(config.classifier, num_classes)
  tcfg = config.train.copy_and_resolve_references()
  tcfg.steps = steps
  tcfg.warmup_steps = min(tcfg.warmup_steps, steps - 1)
  result = train.fit(model, tcfg, images, labels, seeds=[config.seed], mesh=mesh, desc=desc)
  return model, seeds_lib.unstack(result.state.variables, 0)


def _augmented_file(config, path, params, splits, key, mesh) -> dict[str, Any]:
  """Writes generated images with labels; returns what went into the metadata."""
  sample = generators.SAMPLE[config.model]
  count = config.augment_per_image * len(splits.labeled_labels)
  meta: dict[str, Any] = {"method": f"{config.model}_{config.source}", "seed": config.seed,
                          "conditional": bool(config.conditional), "config": config.to_dict()}
  if config.conditional:
    # Same class balance as the labeled set: M samples per labeled image's label.
    labels = np.tile(splits.labeled_labels, config.augment_per_image)
    images = sample(config, params, key, labels=labels, mesh=mesh)
    meta["label_source"] = "conditioning label"
  else:
    candidates = sample(config, params, key, num=count, mesh=mesh)
    labeler, variables = _classifier(config, config.labeler_workdir, splits.labeled_images,
                                     splits.labeled_labels, config.train.steps,
                                     splits.num_classes, "pseudo-labeler", mesh)
    images, labels, kept = generators.pseudo_label(labeler, variables, candidates,
                                                   threshold=config.pseudo_label_threshold,
                                                   mesh=mesh)
    meta.update(label_source="pseudo-label", pseudo_label_threshold=config.pseudo_label_threshold,
                kept_fraction=kept, num_candidates=count,
                labeler=config.labeler_workdir or "trained here on the label budget")
  data_lib.augfile.save(path, images, labels, np.full((len(labels),), -1, np.int64), meta)
  meta["num_images"] = int(len(labels))
  del meta["config"]
  return meta


@run_common.in_workdir
def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Runs ``config.model`` on ``config.source``; writes everything under ``workdir``."""
  validate_config(config)
  mesh = sharding.make_mesh()
  t0 = time.perf_counter()
  raw = data_lib.load_dataset(config.dataset, config.data_dir or None)
  splits = data_lib.make_splits(raw, num_labeled=config.num_labeled, val_size=config.val_size,
                                seed=config.seed)
  images = splits.labeled_images if config.source == "labeled" else splits.pool_images
  labels = splits.labeled_labels.astype(np.int32) if config.conditional else None
  if config.conditional and not config.num_classes:
    config = config.copy_and_resolve_references()
    config.num_classes = splits.num_classes
  k_train, k_grid, k_aug, k_fid = jax.random.split(jax.random.key(config.seed), 4)
  ckpt = os.path.join(workdir, "checkpoint")
  out: dict[str, Any] = {"model": config.model, "source": config.source,
                         "num_train_images": int(len(images))}
  if config.model in generators.TRAIN:
    params, history = generators.TRAIN[config.model](
        config, images, labels, k_train, mesh=mesh,
        metrics_dir=os.path.join(workdir, metrics.LOGDIR))
    out["train_seconds"] = time.perf_counter() - t0
    generators.save(ckpt, config.model, config, params)
    sample = generators.SAMPLE[config.model]
    if config.conditional:
      rows = np.repeat(np.arange(splits.num_classes), 10)
      grid = sample(config, params, k_grid, labels=rows, mesh=mesh)
      figures.image_grid(os.path.join(workdir, "samples.png"), grid, columns=10,
                         row_names=splits.class_names)
    else:
      figures.image_grid(os.path.join(workdir, "samples.png"),
                         sample(config, params, k_grid, num=100, mesh=mesh), columns=10)
    if config.augment_per_image:
      out["augmented"] = _augmented_file(config, os.path.join(workdir, "augmented.npz"), params,
                                         splits, k_aug, mesh)
    if config.fid_num:
      t_fid = time.perf_counter()
      reference, ref_vars = _classifier(
          config, config.reference_workdir, raw.train_images.astype(np.float32) / 255.0,
          raw.train_labels.astype(np.int32), config.reference_steps, splits.num_classes,
          "reference classifier", mesh)
      n = min(config.fid_num, len(splits.test_labels))
      test = splits.test_images[:n]
      real = (splits.pool_images if len(splits.pool_images) >= n else splits.labeled_images)[:n]
      fake = sample(config, params, k_fid, num=n, mesh=mesh) if not config.conditional else sample(
          config, params, k_fid, labels=np.asarray(splits.test_labels[:n]), mesh=mesh)
      out["frechet"] = {
          "samples_vs_test": frechet.fid(reference, ref_vars, fake, test, config.fid_layer,
                                         mesh=mesh),
          "real_train_vs_test": frechet.fid(reference, ref_vars, real, test, config.fid_layer,
                                            mesh=mesh),
          "num_images": n, "layer": config.fid_layer,
          "reference": config.reference_workdir or f"trained here ({config.reference_steps} steps,"
                                                    " every training label)",
          "seconds": time.perf_counter() - t_fid}
  else:
    trainer = pretrain.train_autoencoder if config.model == "ae" else pretrain.train_rotation
    extra = (splits.num_classes,) if config.model == "ae" else ()
    trunk, history = trainer(config, images, k_train, config.classifier, *extra,
                             splits.image_shape, return_history=True, mesh=mesh,
                             metrics_dir=os.path.join(workdir, metrics.LOGDIR))
    out["train_seconds"] = time.perf_counter() - t0
    pretrain.save(ckpt, config.model, trunk, config.classifier, splits.image_shape)
  figures.charts.loss_curves(os.path.join(workdir, "losses.png"), history,
                      title=f"{config.model} on the {config.source} set")
  out.update(history=history, final_losses={k: v for k, v in history[-1].items() if k != "step"},
             total_seconds=time.perf_counter() - t0, config=config.to_dict(),
             dreamjax_version=dreamjax.__version__,
             provenance=provenance.record(splits))
  write_json(os.path.join(workdir, "results.json"), out)
  logging.info("%s on %s: done in %.1fs; %s", config.model, config.source, out["total_seconds"],
               json.dumps(out.get("frechet", {}), default=str))
  return out
