"""Attack a trained classifier: robust accuracy, an offline adversarial set, C3.

One run trains ``num_seeds`` classifiers on the label budget (or resumes them
from ``workdir/checkpoint``), then writes to ``workdir``:

* ``adversarial.npz``: an augmented-dataset file with one adversarial copy of
  every labeled image, made by seed 0's model (the offline adversarial arm);
* ``results.json``: clean and PGD robust test accuracy per seed, the offline
  set's statistics, and the C3 gradient-alignment cosines.
"""

import json
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

import dreamjax
from dreamjax.methods import adversarial
from dreamjax.plumbing import provenance
from dreamjax.training import evaluate, metrics, models, train
from dreamjax.methods import alignment as alignment_lib
from dreamjax.training import seeds as seeds_lib
from dreamjax import data as data_lib
from dreamjax.errors import ConfigError
from dreamjax.runs import common
from dreamjax.plumbing.fileio import write_json


def validate_config(config) -> None:
  if config.num_seeds < 1:
    raise ConfigError(f"num_seeds={config.num_seeds} is invalid: must be >= 1.")
  train.validate_train_config(config.train)
  a, r, g = config.attack, config.robust, config.alignment
  adversarial.validate_attack(eps=a.eps, steps=a.steps, step_size=a.step_size or None,
                              norm=a.norm, restarts=a.restarts, method=a.method,
                              prefix="attack")
  adversarial.validate_attack(eps=r.eps, steps=r.steps, restarts=r.restarts, prefix="robust")
  if r.num_images == 0 or r.num_images < -1:
    raise ConfigError(f"robust.num_images={r.num_images} is invalid: must be >= 1, or -1 for"
                      " every test image.")
  if g.num_images < 0:
    raise ConfigError(f"alignment.num_images={g.num_images} is invalid: must be >= 0 (0: skip).")
  adversarial.validate_attack(eps=a.eps, steps=g.steps, prefix="alignment")
  names = models.layer_names(models.make_model(config.model, num_classes=2))
  if g.layer not in names:
    raise ConfigError(f"alignment.layer={g.layer!r} is invalid: must be one of {', '.join(names)}.")


def _classifier_fingerprint(config) -> str:
  """Only what defines the classifiers, so attack settings can change on a resume."""
  keys = ("dataset", "num_labeled", "val_size", "seed", "num_seeds", "model", "train")
  return json.dumps({k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k]
                     for k in keys}, sort_keys=True)


@common.in_workdir
def run(config, workdir: str) -> dict[str, Any]:
  validate_config(config)
  t0 = time.perf_counter()
  mesh, splits = common.start(config)
  model = models.make_model(config.model, splits.num_classes)
  seeds = [config.seed + i for i in range(config.num_seeds)]
  fit = train.fit(model, config.train, splits.labeled_images, splits.labeled_labels,
                  seeds=seeds, mesh=mesh, image_shape=splits.image_shape,
                  checkpoint_dir=os.path.join(workdir, "checkpoint"),
                  metrics_dir=os.path.join(workdir, metrics.LOGDIR),
                  fingerprint=_classifier_fingerprint(config), desc="attack: classifier")
  variables_K = fit.state.variables
  root = jax.random.key(config.seed)

  r = config.robust
  n = len(splits.test_labels) if r.num_images == -1 else min(r.num_images, len(splits.test_labels))
  test_x, test_y = splits.test_images[:n], splits.test_labels[:n]
  clean = evaluate.accuracy(model, variables_K, test_x, test_y, mesh=mesh)
  t_rob = time.perf_counter()
  robust = adversarial.robust_accuracy(model, variables_K, test_x, test_y,
                                       jax.random.fold_in(root, 1), eps=r.eps, steps=r.steps,
                                       restarts=r.restarts, mesh=mesh)
  robust_seconds = time.perf_counter() - t_rob
  logging.info("clean accuracy %s, PGD (eps=%g, %d steps) robust accuracy %s on %d test images",
               np.round(clean, 4).tolist(), r.eps, r.steps, np.round(robust, 4).tolist(), n)

  out: dict[str, Any] = {
      "seeds": seeds, "num_test_images": n,
      "clean_accuracy_per_seed": clean.tolist(), "robust_accuracy_per_seed": robust.tolist(),
      "clean_accuracy": float(clean.mean()), "robust_accuracy": float(robust.mean()),
      "robust_seconds": robust_seconds, "train_seconds": fit.seconds,
  }
  variables = seeds_lib.unstack(variables_K, 0)
  if config.offline:
    a = config.attack
    adv, info = adversarial.adversarial_dataset(
        model, variables, splits.labeled_images, splits.labeled_labels,
        jax.random.fold_in(root, 2), method=a.method, eps=a.eps, steps=a.steps,
        step_size=a.step_size or None, norm=a.norm, restarts=a.restarts, mesh=mesh)
    path = os.path.join(workdir, "adversarial.npz")
    data_lib.augfile.save(path, adv, splits.labeled_labels, splits.labeled_index,
                          {**info, "method": f"adversarial/{a.method}", "attack": a.to_dict(),
                           "seed": seeds[0], "dataset": splits.name})
    out["offline"] = {"path": path, **info}
    logging.info("wrote %d %s images to %s (success rate %.3f, %.1fs)", len(adv), a.method,
                 path, info["success_rate"], info["seconds"])
  g = config.alignment
  if g.num_images:
    m = min(g.num_images, len(splits.test_labels))
    alignment = alignment_lib.gradient_alignment(
        model, variables, splits.test_images[:m], splits.test_labels[:m], layer=g.layer,
        eps=config.attack.eps, steps=g.steps, mesh=mesh)
    out["alignment"] = {k: v for k, v in alignment.items() if k != "per_image"}
  out.update(total_seconds=time.perf_counter() - t0, config=config.to_dict(),
             dreamjax_version=dreamjax.__version__,
             provenance=provenance.record(splits))
  write_json(os.path.join(workdir, "results.json"), out)
  return out
