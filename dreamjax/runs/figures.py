"""Small PNG figures of generator runs: sample grids and loss curves."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dreamjax.fileio import atomic_path  # noqa: E402


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


def loss_curves(path: str, history, title: str) -> None:
  steps = [row["step"] for row in history]
  names = [k for k in history[0] if k not in ("step", "accuracy", "d_real", "d_fake")]
  fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.6), squeeze=False)
  for ax, name in zip(axes[0], names):
    ax.plot(steps, [row[name] for row in history])
    ax.set_xlabel("step")
    ax.set_title(name, fontsize=9)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=90)
  plt.close(fig)
