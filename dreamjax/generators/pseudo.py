"""Pseudo-labels for samples of an unconditional generator.

A classifier (trained on the label budget, never the oracle) labels each
sample with its arg-max class; samples it is less sure of than ``threshold``
are dropped, because a wrong label hurts more than a missing image.
"""

import functools

import jax
import numpy as np
from jax.sharding import Mesh

from dreamjax.plumbing import sharding
from dreamjax.generators import common


@functools.partial(jax.jit, static_argnums=0)
def _probabilities(model, variables, images):
  return jax.nn.softmax(model.apply(variables, images, train=False), axis=-1)


def pseudo_label(model, variables, images, *, threshold: float, batch_size: int = 1000,
                 mesh: Mesh | None = None) -> tuple[np.ndarray, np.ndarray, float]:
  """Returns ``(images_kept, labels, kept_fraction)``.

  ``model`` is a dreamjax CNN and ``variables`` ONE model's variables. A sample
  is kept when its top softmax probability is ``>= threshold`` (in [0, 1]).
  Chunks of images are split by rows over ``mesh`` (default: every device).
  """
  common.check_range("pseudo_label_threshold", threshold, 0.0, 1.0)
  images = np.asarray(images, np.float32)
  if not len(images):
    return images, np.zeros((0,), np.int32), 0.0
  probs = probabilities(model, variables, images, batch_size=batch_size, mesh=mesh)
  keep = probs.max(-1) >= threshold
  return images[keep], probs.argmax(-1)[keep].astype(np.int32), float(keep.mean())


def balanced_selection(probs: np.ndarray, *, per_class: int, threshold: float) -> np.ndarray:
  """Rows to keep of class probabilities ``probs [N, classes]``, class-balanced.

  Each row's pseudo-label is its arg-max class and its confidence its top
  probability. Of the rows whose confidence reaches ``threshold``, the
  ``per_class`` most confident of each pseudo-label are kept (ties: the earlier
  row), so a class the labeler finds easy cannot crowd out the others; a class
  with fewer such rows keeps them all. Returns their positions, sorted.
  """
  probs = np.asarray(probs)
  confidence, label = probs.max(-1), probs.argmax(-1)
  chosen = [np.zeros((0,), np.int64)]
  for c in range(probs.shape[-1]):
    of_class = np.flatnonzero((label == c) & (confidence >= threshold))
    chosen.append(of_class[np.argsort(-confidence[of_class], kind="stable")][:int(per_class)])
  return np.sort(np.concatenate(chosen))


def probabilities(model, variables, images, *, batch_size: int = 1000,
                  mesh: Mesh | None = None) -> np.ndarray:
  """Softmax class probabilities ``[N, classes]`` of ONE model, chunked over ``mesh``."""
  return sharding.map_rows(functools.partial(_probabilities, model), variables,
                           np.asarray(images, np.float32), mesh=sharding.default(mesh),
                           chunk=batch_size)
