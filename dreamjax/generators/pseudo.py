"""Pseudo-labels for samples of an unconditional generator.

A classifier (trained on the label budget, never the oracle) labels each
sample with its arg-max class; samples it is less sure of than ``threshold``
are dropped, because a wrong label hurts more than a missing image.
"""

import functools
from typing import Sequence

import jax
import numpy as np

from dreamjax import sharding, train
from dreamjax.generators import common


@functools.partial(jax.jit, static_argnums=0)
def _probabilities(model, variables, images):
  return jax.nn.softmax(model.apply(variables, images, train=False), axis=-1)


def pseudo_label(model, variables, images, *, threshold: float, batch_size: int = 1000,
                 devices: Sequence[jax.Device] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, float]:
  """Returns ``(images_kept, labels, kept_fraction)``.

  ``model`` is a dreamjax CNN and ``variables`` ONE model's variables. A sample
  is kept when its top softmax probability is ``>= threshold`` (in [0, 1]).
  ``devices`` as in :func:`dreamjax.train.fit`: with several (default: every
  device of the job) the weights are replicated and each chunk, padded to a
  multiple of the device count, is split by rows over them.
  """
  common.check_range("pseudo_label_threshold", threshold, 0.0, 1.0)
  images = np.asarray(images, np.float32)
  if not len(images):
    return images, np.zeros((0,), np.int32), 0.0
  mesh = train.fit_mesh(devices)
  variables = sharding.put_weights(mesh, variables, devices)
  probs = []
  chunk = min(batch_size, len(images))
  for start in range(0, len(images), chunk):
    part = images[start:start + chunk]
    padded = sharding.put_rows(mesh, part, chunk)  # One shape: one compile.
    probs.append(sharding.to_host(_probabilities(model, variables, padded))[:len(part)])
  probs = np.concatenate(probs)
  keep = probs.max(-1) >= threshold
  return images[keep], probs.argmax(-1)[keep].astype(np.int32), float(keep.mean())
