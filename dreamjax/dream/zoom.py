"""The long zoom: dream, zoom in a little, dream again; and image files for it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.dream import spec as spec_lib
from dreamjax.dream.engine import dream_batch
from dreamjax.errors import ConfigError
from dreamjax.fileio import atomic_path


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


def _to_uint8(images_NHWC: np.ndarray) -> np.ndarray:
  x = np.clip(np.asarray(images_NHWC) * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def save_strip(path: str, frames_NHWC: np.ndarray, upscale: int = 2) -> None:
  """Frames side by side, one pixel of white between them, as a PNG."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  x = _to_uint8(frames_NHWC)
  n, h, w, c = x.shape
  strip = np.full((h, n * (w + 1) - 1, c), 255, np.uint8)
  for i, frame in enumerate(x):
    strip[:, i * (w + 1):i * (w + 1) + w] = frame
  img = Image.fromarray(strip).resize((strip.shape[1] * upscale, h * upscale), Image.NEAREST)
  with atomic_path(path) as tmp:
    img.save(tmp, format="PNG")


def save_gif(path: str, frames_NHWC: np.ndarray, ms_per_frame: int = 200,
             upscale: int = 4) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  x = _to_uint8(frames_NHWC)
  imgs = [Image.fromarray(f).resize((f.shape[1] * upscale, f.shape[0] * upscale),
                                    Image.NEAREST) for f in x]
  with atomic_path(path) as tmp:
    imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:],
                 duration=ms_per_frame, loop=0)


def save_grid(path: str, columns: list[tuple[str, np.ndarray]]) -> None:
  """A PNG with one titled column per (title, images [K, H, W, C]); rows line up."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  k = len(columns[0][1])
  fig, axes = plt.subplots(k, len(columns), figsize=(1.1 * len(columns), 1.1 * k + 0.3),
                           squeeze=False)
  for j, (title, images) in enumerate(columns):
    for i in range(k):
      ax = axes[i, j]
      ax.imshow(_to_uint8(images[i:i + 1])[0], interpolation="nearest")
      ax.set_xticks([]), ax.set_yticks([])
      if i == 0:
        ax.set_title(title, fontsize=7)
  fig.tight_layout(pad=0.2)
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)
