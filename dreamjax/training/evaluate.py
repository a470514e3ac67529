"""Evaluation of seed-stacked classifiers: logits and accuracy over a whole split.

Variables carry a leading seed axis ``K`` (as :func:`dreamjax.training.train.fit`
returns them); every chunk of images is run through all K models in one
program (:func:`dreamjax.training.seeds.map_seeds`) and split by rows over the mesh
(:func:`dreamjax.plumbing.sharding.map_rows`).
"""

import functools

import jax
import numpy as np
from jax.sharding import Mesh

from dreamjax.training import seeds as seeds_lib
from dreamjax.plumbing import sharding

CHUNK = 500  # images per jitted call; one shape, so one compilation per model


@functools.lru_cache(maxsize=32)
def _logits_fn(model):
  @jax.jit
  def chunk(variables_K, x):
    return seeds_lib.map_seeds(lambda v: model.apply(v, x, train=False))(variables_K)
  return chunk


def logits(model, variables_K, images, *, mesh: Mesh | None = None,
           batch_size: int = CHUNK) -> np.ndarray:
  """Logits ``[K, N, classes]`` of each of the K models (``mesh``: default every device)."""
  return sharding.map_rows(_logits_fn(model), variables_K, np.asarray(images, np.float32),
                           mesh=sharding.default(mesh), chunk=batch_size,
                           row_axis=1)


def accuracy(model, variables_K, images, labels, *, mesh: Mesh | None = None,
             batch_size: int = CHUNK) -> np.ndarray:
  """Accuracy of each of the K models, shape ``[K]``."""
  predicted = logits(model, variables_K, images, mesh=mesh, batch_size=batch_size).argmax(-1)
  return np.mean(predicted == np.asarray(labels)[None], axis=1)


def accuracy_one(model, variables, images, labels, *, mesh: Mesh | None = None) -> float:
  """Accuracy of ONE model's (not seed-stacked) variables."""
  stacked = jax.tree.map(lambda v: v[None], variables)
  return float(accuracy(model, stacked, images, labels, mesh=mesh)[0])


def shifted(images_NHWC, dy: int, dx: int) -> np.ndarray:
  """``images`` moved ``dy`` pixels down and ``dx`` right (negative: up, left), the
  uncovered border black, as the classical transform's shift
  (dreamjax.methods.augment) fills it."""
  x = np.asarray(images_NHWC)
  out = np.zeros_like(x)
  h, w = x.shape[1:3]
  if abs(dy) >= h or abs(dx) >= w:
    return out
  src = x[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
  out[:, max(dy, 0):h - max(-dy, 0), max(dx, 0):w - max(-dx, 0)] = src
  return out


# The four directions an image is moved in, as (name, rows down, columns right) per pixel.
DIRECTIONS = (("down", 1, 0), ("up", -1, 0), ("right", 0, 1), ("left", 0, -1))


def shift_invariance(model, variables, images, labels, pixels, *,
                     mesh: Mesh | None = None) -> list[dict]:
  """How ONE model's labels hold when the images move a few pixels.

  For each distance ``d`` of ``pixels``: its accuracy on ``images`` moved ``d``
  pixels in each of :data:`DIRECTIONS` (black borders, no wrap-around) and its
  agreement (the share of moved images given the label it gives the unmoved
  image), each direction's and their means. Deterministic: nothing is drawn.
  """
  stacked = jax.tree.map(lambda v: v[None], variables)
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels)

  def predict(x):
    return logits(model, stacked, x, mesh=mesh)[0].argmax(-1)

  plain = predict(images)
  out = []
  for d in pixels:
    acc, agree = {}, {}
    for name, dy, dx in DIRECTIONS:
      moved = predict(shifted(images, dy * int(d), dx * int(d)))
      acc[name] = float(np.mean(moved == labels))
      agree[name] = float(np.mean(moved == plain))
    out.append({"pixels": int(d), "accuracy": float(np.mean(list(acc.values()))),
                "agreement": float(np.mean(list(agree.values()))),
                "accuracy_by_direction": acc, "agreement_by_direction": agree})
  return out
