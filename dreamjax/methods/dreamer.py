"""The deep dreamer: a network deeper than the classifier, trained on more (other) data.

Deep Dream as it was shown to the world ascends the activations of Inception,
trained on ImageNet: a network far larger than any classifier a dream could
augment, trained on far more images. The study's small dreams go through each
seed's own two-layer classifier instead. The ``deep_dream_*`` arms go through
this one: a :class:`dreamjax.training.models.CNN` of at least four conv layers
(``pool_dreamer.model``), pretrained once per study on the unlabeled pool by
the rotation pretext or contrastively (:mod:`dreamjax.methods.pretrain`), never
reading a label, or a user's own network (``pool_dreamer.checkpoint``).

Its layers carry the classifier's names (``conv0`` .. ``conv3``, ``dense0``,
``logits``), so every dream objective, prior and preset applies to it.

  variables, history = dreamer.pretrain(cfg, pool_images, key, image_shape)
  dreamer.save(path, variables, cfg.model, image_shape)   # a user's dreamer, too
  model, variables, meta = dreamer.load(path, image_shape)
"""

import os
from typing import Any

import jax
import ml_collections
import numpy as np

from dreamjax.plumbing import checkpoint
from dreamjax.training import models
from dreamjax.methods import pretrain as pretrain_lib
from dreamjax.configs import dreamer as dreamer_configs
from dreamjax.errors import CheckpointError, ConfigError

KIND = "pool_dreamer"


def validate(cfg) -> None:
  """Refuses a bad ``pool_dreamer`` block with the field and what it must be."""
  checks = [
      ("objective", cfg.objective, cfg.objective in dreamer_configs.OBJECTIVES,
       f"one of {', '.join(dreamer_configs.OBJECTIVES)}"),
      ("steps", cfg.steps, int(cfg.steps) == cfg.steps and cfg.steps >= 1, "a whole number >= 1"),
      ("batch_size", cfg.batch_size, cfg.batch_size >= 2, ">= 2"),
      ("learning_rate", cfg.learning_rate, cfg.learning_rate > 0, "> 0"),
      ("log_every", cfg.log_every, cfg.log_every >= 1, ">= 1"),
      ("projection_dim", cfg.projection_dim, cfg.projection_dim >= 1, ">= 1"),
      ("temperature", cfg.temperature, cfg.temperature > 0, "> 0"),
  ]
  for name, value, ok, valid in checks:
    if not ok:
      raise ConfigError(f"pool_dreamer.{name}={value!r} is invalid: must be {valid}.")
  models.check_config(cfg.model, "pool_dreamer.model")


def outputs(cfg) -> int:
  """Width of the pretrained network's last layer: 4 rotations, or the projection."""
  return 4 if cfg.objective == "rotation" else int(cfg.projection_dim)


def pretrain(cfg, pool_images, key: jax.Array, image_shape, *, progress=None, mesh=None
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """(variables, history): a CNN of ``cfg.model`` trained on ``pool_images`` by ``cfg.objective``.

  Takes images alone: there is no way to hand it a label.
  """
  validate(cfg)
  train_fn = (pretrain_lib.train_contrastive if cfg.objective == "contrastive"
              else lambda *a, **k: pretrain_lib.train_rotation(*a, **k, whole=True))
  variables, history = train_fn(cfg, pool_images, key, cfg.model, tuple(image_shape),
                                progress=progress, return_history=True, mesh=mesh)
  return jax.device_get(variables), history


def model_of(cfg):
  """The pretrained dreamer's :class:`dreamjax.training.models.CNN` (its config and head)."""
  return models.make_model(cfg.model, outputs(cfg))


def save(path: str, variables, model_cfg, image_shape, meta: dict | None = None) -> None:
  """Writes a dreamer ({params, batch_stats}) that ``pool_dreamer.checkpoint`` can name."""
  cfg = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
  checkpoint.save_tree(path, {k: v for k, v in variables.items()
                              if k in ("params", "batch_stats")},
                       {"kind": KIND, "model": cfg, "image_shape": list(image_shape),
                        **(meta or {})})


def load(path: str, image_shape) -> tuple[models.CNN, dict[str, Any], dict[str, Any]]:
  """(model, variables, metadata) of a user's dreamer, checked against the data.

  Raises ConfigError (or CheckpointError for a damaged file) when the file is
  missing, was made for other images, or holds arrays its model config does
  not describe.
  """
  field = f"pool_dreamer.checkpoint={path!r}"
  if not os.path.isfile(path):
    raise ConfigError(f"{field}: no such file; name a file written by"
                      " dreamjax.methods.dreamer.save, or set it to '' to pretrain one on the"
                      " pool.")
  try:
    tree, meta = checkpoint.load_tree(path)
  except CheckpointError as e:
    raise CheckpointError(f"{field}: {e.fault}",
                          "Save it again with dreamjax.methods.dreamer.save.") from None
  if not isinstance(meta.get("model"), dict) or "image_shape" not in meta:
    raise ConfigError(f"{field} has no model config or image shape in its metadata; save it"
                      " with dreamjax.methods.dreamer.save(path, variables, model_config,"
                      " image_shape).")
  theirs, ours = tuple(int(d) for d in meta["image_shape"]), tuple(int(d) for d in image_shape)
  if theirs != ours:
    raise ConfigError(f"{field} was made for {theirs[0]}×{theirs[1]} images with {theirs[2]}"
                      f" channel(s); this data's are {ours[0]}×{ours[1]} with {ours[2]}. Use a"
                      " dreamer trained on images of this shape.")
  head = np.shape((tree.get("params") or {}).get("Head", {}).get("kernel"))
  try:
    model = models.make_model(ml_collections.ConfigDict(meta["model"]),
                              int(head[-1]) if head else 1)
  except (ConfigError, AttributeError, KeyError, TypeError, ValueError) as e:
    raise ConfigError(f"{field}: its model config {meta['model']} is not a dreamjax CNN's"
                      f" ({e}).") from None
  want = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), ours))
  want = jax.tree.map(lambda x: tuple(x.shape), want)
  got = jax.tree.map(lambda x: tuple(np.shape(x)), {k: v for k, v in tree.items()
                                                    if k in ("params", "batch_stats")})
  if want != got:
    raise ConfigError(f"{field}: its arrays do not fit the model config in its metadata"
                      f" ({meta['model']}); save the variables of that model with it.")
  variables = jax.tree.map(lambda x: np.asarray(x, np.float32), tree)
  return model, {k: variables[k] for k in want}, meta


def image_steps(cfg) -> int:
  """Images through a training step of the pretraining (two views each, contrastively)."""
  return int(cfg.steps) * int(cfg.batch_size) * (2 if cfg.objective == "contrastive" else 1)


def check_study(cfg) -> None:
  """Refuses, before any compute, a bad ``pool_dreamer`` block ``cfg`` of a study that
  dreams through it: its fields, and a user's checkpoint that is not there
  (:func:`check_fits` checks it against the data, once that is loaded).

  A cell's error is recorded and the study goes on, so what the user can fix here
  is refused here, in one line, not once per cell.
  """
  validate(cfg)
  if cfg.checkpoint and not os.path.isfile(cfg.checkpoint):
    load(cfg.checkpoint, ())  # says what is missing and what to do


def check_fits(cfg, image_shape) -> None:
  """Refuses a user's dreamer (``cfg.checkpoint``) made for other images than the data's,
  or holding arrays its model config does not describe (:func:`load`)."""
  if cfg.checkpoint:
    load(cfg.checkpoint, image_shape)
