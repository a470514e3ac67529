"""The long zoom: dream, zoom in a little, dream again (pictures: :mod:`dreamjax.figures`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.dream import spec as spec_lib
from dreamjax.dream.engine import dream_batch
from dreamjax.errors import ConfigError


@functools.partial(jax.jit, static_argnames=("scale",))
def zoom_in(images_NHWC: jax.Array, scale: float) -> jax.Array:
  """The centre 1/scale of each image, resized back to the full size."""
  n, h, w, c = images_NHWC.shape
  ch, cw = max(1, round(h / scale)), max(1, round(w / scale))
  top, left = (h - ch) // 2, (w - cw) // 2
  crop = images_NHWC[:, top:top + ch, left:left + cw]
  return jnp.clip(jax.image.resize(crop, (n, h, w, c), "linear"), 0.0, 1.0)


def dream_zoom(model, variables, image_HWC, label: int, cfg, key, *, frames: int,
               zoom_scale: float = 1.1) -> np.ndarray:
  """``frames`` dreams [F, H, W, C]: each is the previous one zoomed in and dreamed."""
  spec = cfg if isinstance(cfg, spec_lib.DreamSpec) else spec_lib.from_config(cfg, model)
  if frames < 1:
    raise ConfigError(f"zoom_frames={frames} must be >= 1.")
  if not zoom_scale > 1:
    raise ConfigError(f"zoom_scale={zoom_scale} must be > 1.")
  x = jnp.asarray(image_HWC, jnp.float32)[None]
  y, valid = jnp.asarray([label], jnp.int32), jnp.ones((1,), bool)
  out = []
  for f in range(frames):
    x = dream_batch(model, spec, variables, x, y, valid, jax.random.fold_in(key, f))["images"]
    out.append(np.asarray(x[0]))
    x = zoom_in(x, float(zoom_scale))
  return np.stack(out)
