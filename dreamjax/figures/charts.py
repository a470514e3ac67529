"""Charts: the study's figures and generator loss curves, as PNG files.

Each function takes finished results (records of ``results.jsonl``, keyed by
arm) and a path, and returns False when there is nothing to draw. Arm order
and colours come from the caller (the study's arm registry).
"""

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dreamjax.figures.images import save_figure  # noqa: E402
from dreamjax import stats  # noqa: E402


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
  save_figure(fig, path, dpi=90)


def accuracy(cells, path, sort_key, color):
  arms = [a for a in sorted(cells, key=sort_key) if cells[a].get("status") == "ok"
          and cells[a].get("test_accuracy")]
  if not arms:
    return False
  ivs = [stats.t_interval(cells[a]["test_accuracy"]) for a in arms]
  fig, ax = plt.subplots(figsize=(7, 0.32 * len(arms) + 1.2))
  y = np.arange(len(arms))[::-1]
  means = [iv.mean * 100 for iv in ivs]
  err = [0 if not math.isfinite(iv.half_width) else iv.half_width * 100 for iv in ivs]
  ax.barh(y, means, xerr=err, color=[color(a) for a in arms], capsize=3)
  if "baseline" in cells and cells["baseline"].get("status") == "ok":
    ax.axvline(stats.t_interval(cells["baseline"]["test_accuracy"]).mean * 100, color="k", ls="--", lw=1)
  ax.set_yticks(y, arms)
  lo = min(m - e for m, e in zip(means, err))
  ax.set_xlim(max(0, lo - 3), min(100, max(m + e for m, e in zip(means, err)) + 2))
  ax.set_xlabel("test accuracy (%), mean ± 95% CI over seeds; dashed: baseline")
  save_figure(fig, path)
  return True


def sweep(cells, path):
  sweep = sorted((c["strength"], c) for a, c in cells.items()
                 if a.startswith("dream_sweep@") and c.get("status") == "ok")
  if not sweep:
    return False
  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  xs = [s for s, _ in sweep]
  ivs = [stats.t_interval(c["test_accuracy"]) for _, c in sweep]
  ax.errorbar(xs, [iv.mean * 100 for iv in ivs],
              yerr=[0 if not math.isfinite(iv.half_width) else iv.half_width * 100 for iv in ivs],
              marker="o", capsize=3, label="dream_sweep")
  lp = [c.get("label_preservation") for _, c in sweep]
  if "baseline" in cells and cells["baseline"].get("status") == "ok":
    ax.axhline(stats.t_interval(cells["baseline"]["test_accuracy"]).mean * 100, color="k", ls="--",
               lw=1, label="baseline")
  ax.set_xscale("log")
  ax.set_xlabel("dream strength")
  ax.set_ylabel("test accuracy (%)")
  if all(v is not None for v in lp):
    ax2 = ax.twinx()
    ax2.plot(xs, [v * 100 for v in lp], color="#c63", marker="s", ls=":", label="label preservation")
    ax2.set_ylabel("label preservation under oracle (%)", color="#c63")
  ax.legend(loc="lower left", fontsize=8)
  save_figure(fig, path)
  return True


def robust(cells, path, color):
  pts = [(a, stats.t_interval(c["test_accuracy"]).mean, stats.t_interval(c["robust_accuracy"]).mean)
         for a, c in cells.items() if c.get("status") == "ok" and c.get("robust_accuracy")]
  if not pts:
    return False
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for a, x, y in pts:
    ax.scatter(x * 100, y * 100, color=color(a))
    ax.annotate(a, (x * 100, y * 100), fontsize=7, xytext=(3, 2), textcoords="offset points")
  ax.set_xlabel("clean test accuracy (%)")
  ax.set_ylabel("PGD robust accuracy (%)")
  save_figure(fig, path)
  return True


def frechet(cells, path):
  base = cells.get("baseline")
  if not base or base.get("status") != "ok":
    return False
  pts = [(a, c["frechet"], stats.paired_difference(c["test_accuracy"], base["test_accuracy"]))
         for a, c in cells.items() if c.get("status") == "ok" and c.get("frechet") is not None
         and a != "baseline" and c.get("source") == "generated"]
  if not pts:
    return False
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for a, fd, d in pts:
    err = 0 if not math.isfinite(d.half_width) else d.half_width * 100
    ax.errorbar(fd, d.mean * 100, yerr=err, fmt="o", capsize=2)
    ax.annotate(a, (fd, d.mean * 100), fontsize=7, xytext=(3, 2), textcoords="offset points")
  if base.get("frechet") is not None:
    ax.axvline(base["frechet"], color="k", ls="--", lw=1)
  ax.axhline(0, color="k", lw=0.8)
  ax.set_xscale("symlog")
  ax.set_xlabel("Fréchet distance to real test images (oracle features); dashed: real labeled set")
  ax.set_ylabel("accuracy change vs baseline (pp)")
  save_figure(fig, path)
  return True


def curves(cells, path, sort_key):
  arms = [a for a in sorted(cells, key=sort_key) if cells[a].get("status") == "ok"
          and cells[a].get("history")]
  if not arms:
    return False
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for a in arms:
    h = [r for r in cells[a]["history"] if "val_accuracy" in r]
    ax.plot([r["step"] for r in h], [np.mean(r["val_accuracy"]) * 100 for r in h], lw=1,
            label=a, ls="-" if not a.startswith("dream_sweep") else ":")
  ax.set_xlabel("training step")
  ax.set_ylabel("validation accuracy (%), mean over seeds")
  ax.legend(fontsize=6, ncol=2)
  save_figure(fig, path)
  return True


def samples(workdir, cells, train_images, path, sort_key, per_arm=8):
  """Rows of (real source, generated) pairs, or generated only, per arm."""
  rows = []
  for a in sorted(cells, key=sort_key):
    f = os.path.join(workdir, cells[a]["cell"].replace("@", "_at_"), "generated_seed0.npz")
    if cells[a].get("status") != "ok" or not os.path.exists(f):
      continue
    with np.load(f, allow_pickle=False) as z:
      x, src = z["images"][:per_arm], z["source_index"][:per_arm]
    real = [train_images[s] if s >= 0 and train_images is not None else None for s in src]
    rows.append((a, x, real))
  if not rows:
    return False
  has_src = any(r is not None for _, _, real in rows for r in real)
  cols = per_arm * (2 if has_src else 1)
  fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 0.55, len(rows) * 0.62))
  axes = np.atleast_2d(axes)
  for i, (a, x, real) in enumerate(rows):
    for j in range(per_arm):
      panels = [(real[j] if j < len(real) else None), (x[j] if j < len(x) else None)] if has_src \
          else [(x[j] if j < len(x) else None)]
      for p, img in enumerate(panels):
        ax = axes[i, j * len(panels) + p]
        ax.axis("off")
        if img is not None:
          img = np.asarray(img, np.float32)
          img = img / 255.0 if img.max() > 1.0 else img
          ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    axes[i, 0].text(-0.3, 0.5, a, transform=axes[i, 0].transAxes, ha="right", va="center",
                    fontsize=7)
  title = "each pair: real source (left), generated (right)" if has_src else "generated samples"
  fig.suptitle(title, fontsize=8, y=0.995)
  save_figure(fig, path)
  return True
