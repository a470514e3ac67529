"""Image priors that keep a dream near natural images (DeepInversion, Yin et al. 2020).

All are penalties (lower is better). ``valid`` marks the real rows of a padded
batch: only they enter the BatchNorm batch statistics.
"""

import jax
import jax.numpy as jnp


def total_variation(images_NHWC: jax.Array) -> jax.Array:
  """Per image: mean squared difference of vertical and horizontal neighbours, [N]."""
  dy = jnp.square(images_NHWC[:, 1:] - images_NHWC[:, :-1]).mean(axis=(1, 2, 3))
  dx = jnp.square(images_NHWC[:, :, 1:] - images_NHWC[:, :, :-1]).mean(axis=(1, 2, 3))
  return dy + dx


def image_l2(images_NHWC: jax.Array) -> jax.Array:
  """Per image: mean squared pixel, [N]."""
  return jnp.square(images_NHWC).mean(axis=(1, 2, 3))


def bn_statistic_distance(bn_inputs: dict[str, jax.Array], batch_stats,
                          valid: jax.Array | None = None) -> jax.Array:
  """Σ over BatchNorm layers of ‖μ_batch − μ_running‖₂ + ‖σ²_batch − σ²_running‖₂.

  ``bn_inputs[f"bn{i}"]`` is the input of ``BatchNorm_{i}`` ([N, H, W, C]);
  the batch statistics are taken over the valid images and all positions,
  as BatchNorm itself does in training. A scalar: the prior couples a batch.
  """
  total = jnp.zeros((), jnp.float32)
  for name, x in sorted(bn_inputs.items()):
    stats = batch_stats[f"BatchNorm_{name[2:]}"]
    x = x.astype(jnp.float32)
    w = jnp.ones(x.shape[0], jnp.float32) if valid is None else valid.astype(jnp.float32)
    w = jnp.broadcast_to(w[:, None, None, None], x.shape[:-1] + (1,))
    count = jnp.maximum(w.sum(), 1.0)
    axes = tuple(range(x.ndim - 1))
    mean = (x * w).sum(axes) / count
    var = (jnp.square(x - mean) * w).sum(axes) / count
    total = total + jnp.linalg.norm(mean - stats["mean"]) + jnp.linalg.norm(var - stats["var"])
  return total
