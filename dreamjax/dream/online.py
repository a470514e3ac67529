"""Deep Dream inside the train step: a subtle dream of part of every batch.

The online form of dream augmentation, as adversarial training is the online
form of adversarial examples: every time an image is drawn, part of the batch
is dreamed from the *current* classifier (its parameters and BatchNorm
statistics, held fixed for the dream), and the classifier trains on the
dreamed images with their source labels. No library offers it; the study's
``dream_online`` arm measures it. Given fixed ``variables`` (another network,
such as the study's deep dreamer), it dreams through that network instead,
the same at every step (``deep_dream_online``).
"""

import jax
import jax.numpy as jnp

from dreamjax.dream import spec as spec_lib
from dreamjax.dream.engine import dream_batch
from dreamjax.errors import ConfigError


def batch_transform(model, cfg, *, fraction: float, variables=None):
  """A :data:`dreamjax.training.train.BatchTransform` dreaming the first ``round(fraction·B)``
  images of each batch with the dream block ``cfg`` (or a :class:`DreamSpec`).

  ``model`` is the classifier in training, or with ``variables`` a fixed network
  of its own (e.g. the deep dreamer), whose weights the program holds as constants.
  """
  spec = cfg if isinstance(cfg, spec_lib.DreamSpec) else spec_lib.from_config(cfg, model)
  if not 0.0 <= fraction <= 1.0:
    raise ConfigError(f"online_fraction={fraction} is invalid: must be in [0, 1].")

  def transform(state, images, labels, key):
    n = int(round(fraction * images.shape[0]))  # static: shapes are known when traced
    if n == 0:
      return images, labels
    dreamer = jax.lax.stop_gradient(state.variables if variables is None else variables)
    dreamed = dream_batch(model, spec, dreamer, images[:n], labels[:n],
                          jnp.ones((n,), bool), key)["images"]
    return images.at[:n].set(jax.lax.stop_gradient(dreamed)), labels

  return transform
