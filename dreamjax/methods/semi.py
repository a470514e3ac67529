"""FixMatch's unlabeled loss term (Sohn et al. 2020), for :func:`dreamjax.training.train.fit`.

Each unlabeled image of a step is augmented twice. Its weak copy, through the
model being trained, gives a pseudo-label (the arg-max class) and a
confidence (the top softmax probability); its strong copy is trained towards
that pseudo-label where the confidence reaches ``threshold``. The term is
``lambda_u · mean(mask · CE(strong, pseudo-label))``, the mean taken over the
whole unlabeled batch (masked images count as zeros), as the paper does. The
pseudo-labels carry no gradient. Images only: nothing here can read a label.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from dreamjax.training import train
from dreamjax.methods.augment import ImageFn


@functools.lru_cache(maxsize=32)
def fixmatch_loss(weak: ImageFn, strong: ImageFn, threshold: float,
                  lambda_u: float) -> train.UnlabeledLoss:
  """The :data:`dreamjax.training.train.UnlabeledLoss` of FixMatch.

  One object per setting, so every fit with the same settings reuses one
  compiled step. The weak and the strong copies go through the model in two
  passes, each normalised by its own batch statistics (the paper passes the
  labeled batch and both copies as one batch).

  Metrics: ``unlabeled_loss`` (the term), ``mask_rate`` (share of the batch
  above the threshold).
  """
  threshold, lambda_u = float(threshold), float(lambda_u)

  def loss(forward, params, images, key):
    k_weak, k_strong = jax.random.split(key)
    probs = jax.nn.softmax(jax.lax.stop_gradient(forward(params, weak(k_weak, images))), -1)
    pseudo = jnp.argmax(probs, -1)
    mask = (jnp.max(probs, -1) >= threshold).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        forward(params, strong(k_strong, images)), pseudo)
    term = lambda_u * jnp.mean(mask * ce)
    return term, {"unlabeled_loss": term, "mask_rate": jnp.mean(mask)}

  return loss
