"""Pictures of images: sample grids, source/dream columns, zoom strips and GIFs.

Every file is written atomically (:func:`dreamjax.plumbing.fileio.atomic_path`).
"""

from PIL import Image
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dreamjax.plumbing.fileio import atomic_path  # noqa: E402


def save_figure(fig, path: str, dpi: int = 110) -> None:
  """Writes a matplotlib figure as PNG, atomically, and closes it."""
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
  plt.close(fig)


def to_uint8(images_NHWC) -> np.ndarray:
  """[0, 1] float images as RGB uint8 (grey images repeated over 3 channels)."""
  x = np.clip(np.asarray(images_NHWC, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def image_grid(path: str, images_NHWC, columns: int, row_names=None) -> None:
  """One tile per image, ``columns`` per row; ``row_names`` label the rows."""
  images = np.clip(np.asarray(images_NHWC, np.float32), 0.0, 1.0)
  rows = -(-len(images) // columns)
  n, h, w, c = images.shape
  canvas = np.ones((rows * (h + 1), columns * (w + 1), c), np.float32)
  for i, img in enumerate(images):
    r, col = divmod(i, columns)
    canvas[r * (h + 1):r * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = img
  fig, ax = plt.subplots(figsize=(columns * 0.45 + (1.4 if row_names else 0), rows * 0.45))
  ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
  ax.set_xticks([])
  if row_names:
    ax.set_yticks([r * (h + 1) + h / 2 for r in range(rows)], list(row_names)[:rows], fontsize=7)
  else:
    ax.set_yticks([])
  fig.tight_layout(pad=0.2)
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)


def save_strip(path: str, frames_NHWC: np.ndarray, upscale: int = 2) -> None:
  """Frames side by side, one pixel of white between them, as a PNG."""
  x = to_uint8(frames_NHWC)
  n, h, w, c = x.shape
  strip = np.full((h, n * (w + 1) - 1, c), 255, np.uint8)
  for i, frame in enumerate(x):
    strip[:, i * (w + 1):i * (w + 1) + w] = frame
  img = Image.fromarray(strip).resize((strip.shape[1] * upscale, h * upscale), Image.NEAREST)
  with atomic_path(path) as tmp:
    img.save(tmp, format="PNG")


def save_gif(path: str, frames_NHWC: np.ndarray, ms_per_frame: int = 200,
             upscale: int = 4) -> None:
  x = to_uint8(frames_NHWC)
  imgs = [Image.fromarray(f).resize((f.shape[1] * upscale, f.shape[0] * upscale),
                                    Image.NEAREST) for f in x]
  with atomic_path(path) as tmp:
    imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:],
                 duration=ms_per_frame, loop=0)


def save_grid(path: str, columns: list[tuple[str, np.ndarray]]) -> None:
  """A PNG with one titled column per (title, images [K, H, W, C]); rows line up."""
  k = len(columns[0][1])
  fig, axes = plt.subplots(k, len(columns), figsize=(1.1 * len(columns), 1.1 * k + 0.3),
                           squeeze=False)
  for j, (title, images) in enumerate(columns):
    for i in range(k):
      ax = axes[i, j]
      ax.imshow(to_uint8(images[i:i + 1])[0], interpolation="nearest")
      ax.set_xticks([]), ax.set_yticks([])
      if i == 0:
        ax.set_title(title, fontsize=7)
  fig.tight_layout(pad=0.2)
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)
