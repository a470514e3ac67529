"""Evaluation of seed-stacked classifiers: logits and accuracy over a whole split.

Variables carry a leading seed axis ``K`` (as :func:`dreamjax.train.fit`
returns them); every chunk of images is run through all K models in one
program (:func:`dreamjax.seeds.map_seeds`) and split by rows over the mesh
(:func:`dreamjax.sharding.map_rows`).
"""

import functools

import jax
import numpy as np
from jax.sharding import Mesh

from dreamjax import seeds as seeds_lib
from dreamjax import sharding

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
