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

from dreamjax.figures.images import save_figure, save_grid  # noqa: E402
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


def forest(cells_by_budget, path, sort_key, color):
  """Each arm's accuracy change vs its budget's baseline with the paired 95% CI (a forest
  plot): one panel per label budget (``{budget: {arm: record}}``), arms on shared rows."""
  panels = {}
  for budget, cells in sorted(cells_by_budget.items()):
    base = cells.get("baseline")
    if not base or base.get("status") != "ok":
      continue
    arms = [a for a in cells if a != "baseline" and cells[a].get("status") == "ok"
            and cells[a].get("test_accuracy")]
    if arms:
      panels[budget] = (base, {a: stats.paired_difference(cells[a]["test_accuracy"],
                                                          base["test_accuracy"]) for a in arms})
  if not panels:
    return False
  rows = sorted({a for _, ivs in panels.values() for a in ivs}, key=sort_key)
  y = dict(zip(rows, np.arange(len(rows))[::-1]))
  fig, axes = plt.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False,
                           figsize=(6.5 if len(panels) == 1 else 3.3 * len(panels) + 1.2,
                                    0.3 * len(rows) + 1.3))
  for ax, (budget, (base, ivs)) in zip(axes[0], panels.items()):
    for a, iv in ivs.items():
      lo, hi = (iv.lo, iv.hi) if math.isfinite(iv.hi) else (iv.mean, iv.mean)
      ax.plot([lo * 100, hi * 100], [y[a], y[a]], color=color(a), lw=2)
      ax.plot(iv.mean * 100, y[a], "o", color=color(a))
    ax.axvline(0, color="k", lw=0.8)
    base_mean = float(np.mean(base["test_accuracy"])) * 100
    if len(panels) == 1:
      ax.set_xlabel(f"test accuracy − baseline (pp), paired by seed, 95% CI;"
                    f" baseline {base_mean:.1f}%")
    else:
      ax.set_title(f"N = {budget} (baseline {base_mean:.1f}%)", fontsize=9)
      ax.set_xlabel("test accuracy − baseline (pp)", fontsize=8)
  axes[0][0].set_yticks(list(y.values()), list(y), fontsize=8)
  axes[0][0].set_ylim(-0.6, len(rows) - 0.4)
  if len(panels) > 1:
    fig.suptitle("paired by seed, 95% CI", fontsize=9)
  save_figure(fig, path)
  return True


def paired_forest(labels, series, path, xlabel):
  """Several runs' intervals per row: ``series`` maps a run's name to one interval dict
  (``mean``, ``lo``, ``hi`` as fractions) per label, drawn as offset lines per row."""
  fig, ax = plt.subplots(figsize=(6.5, 0.38 * len(labels) + 1.5))
  y = np.arange(len(labels))[::-1].astype(float)
  step = 0.5 / max(len(series), 1)
  for i, (name, ivs) in enumerate(series.items()):
    yi = y + 0.25 - step / 2 - i * step
    for yy, iv in zip(yi, ivs):
      lo, hi = (iv["lo"], iv["hi"]) if math.isfinite(iv["hi"]) else (iv["mean"], iv["mean"])
      ax.plot([lo * 100, hi * 100], [yy, yy], color=f"C{i}", lw=2)
    ax.plot([iv["mean"] * 100 for iv in ivs], yi, "o", color=f"C{i}", label=name)
  ax.axvline(0, color="k", lw=0.8)
  ax.set_ylim(-0.6, len(labels) - 0.4)
  ax.set_yticks(y, labels, fontsize=8)
  ax.set_xlabel(xlabel, fontsize=8)
  ax.legend(fontsize=8)
  save_figure(fig, path)


EXCHANGE_MARKERS = ("s", "^", "D", "v", "P", "X", "<", ">")


def exchange(data, path, color):
  """Accuracy against training images: the baseline at more real labels, each arm at M copies."""
  if not data or len(data.get("budgets", [])) < 2:
    return False
  fig, ax = plt.subplots(figsize=(6, 4))
  n0 = data["budgets"][0]
  xs = data["budgets"]
  ax.errorbar(xs, [np.mean(v) * 100 for v in data["baseline"]],
              yerr=[_half(v) for v in data["baseline"]], color="k", marker="o", capsize=3,
              label="baseline, more real labels")
  # Arms of one group share a colour; each has its own marker, and the points of
  # one M sit side by side (a small shift in x) so their intervals do not hide each other.
  arms = list(data["arms"].items())
  for i, (arm, by_m) in enumerate(arms):
    ms = sorted(by_m)
    shift = 1 + 0.025 * (i - (len(arms) - 1) / 2)
    marker = EXCHANGE_MARKERS[i % len(EXCHANGE_MARKERS)]
    ax.errorbar([n0 * (1 + m) * shift for m in ms], [np.mean(by_m[m]) * 100 for m in ms],
                yerr=[_half(by_m[m]) for m in ms], marker=marker, capsize=2, ls="--",
                color=color(arm), label=f"{arm}, N + M·N stored images")
  ax.set_xscale("log")
  ax.set_xlabel("training images (real labels, or real + generated)")
  ax.set_ylabel("test accuracy (%), mean ± 95% CI")
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  save_figure(fig, path)
  return True


def _half(values) -> float:
  iv = stats.t_interval(values)
  return 0.0 if not math.isfinite(iv.half_width) else iv.half_width * 100


def robustness(cells, path, sort_key, color):
  """PGD robust accuracy against ε for every arm it was measured for."""
  arms = [a for a in sorted(cells, key=sort_key) if cells[a].get("status") == "ok"
          and isinstance(cells[a].get("robust_accuracy"), dict)]
  if not arms:
    return False
  fig, ax = plt.subplots(figsize=(6, 4))
  for a in arms:
    by_eps = cells[a]["robust_accuracy"]
    eps = sorted(by_eps, key=float)
    ax.errorbar([float(e) for e in eps], [np.mean(by_eps[e]) * 100 for e in eps],
                yerr=[_half(by_eps[e]) for e in eps], marker="o", capsize=2, color=color(a),
                ls="-" if a in ("baseline", "pgd_train") else "--", label=a)
  ax.axhspan(20, 60, color="#eeeeee", zorder=0)
  ax.set_ylim(0, 100)
  ax.set_xscale("log")
  ax.set_xlabel("L∞ PGD radius ε (pixels in [0, 1]); grey: the 20–60% band C2 is read in")
  ax.set_ylabel("robust test accuracy (%)")
  ax.legend(fontsize=7)
  save_figure(fig, path)
  return True


def generator_losses(quality, path):
  """Each generator's training losses, one panel per generator."""
  quality = [q for q in quality if q.get("history")]
  if not quality:
    return False
  fig, axes = plt.subplots(1, len(quality), figsize=(3.4 * len(quality), 2.8), squeeze=False)
  for ax, q in zip(axes[0], quality):
    h = q["history"]
    for name in [k for k in h[0] if k not in ("step", "d_real", "d_fake")]:
      ax.plot([r["step"] for r in h], [r[name] for r in h], label=name)
    gate = "passes its gate" if q["passes"] else "under-trained"
    ax.set_title(f"{q['arm']} ({gate})", fontsize=8)
    ax.set_xlabel("step", fontsize=8)
    ax.legend(fontsize=6)
  fig.tight_layout()
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


def dreamers(stored, cells, train_images, path, arms, per_arm=8):
  """The same source images dreamed by each of ``arms`` (one column each, seed 0's
  stored sets, first copy), beside their real sources: the deep dreamer's dreams next
  to the small classifier's. ``stored`` maps an arm to the file of its seed-0 set.
  False unless two of the arms have sets to show."""
  sets = []
  for a in arms:
    f = stored.get(a)
    if cells.get(a, {}).get("status") != "ok" or not f or not os.path.exists(f):
      continue
    with np.load(f, allow_pickle=False) as z:
      sets.append((a, z["images"], z["source_index"]))
  if len(sets) < 2:
    return False
  sources = [int(i) for i in dict.fromkeys(sets[0][2].tolist()) if i >= 0]
  sources = [i for i in sources if all(i in set(src.tolist()) for _, _, src in sets)][:per_arm]
  if not sources:
    return False
  columns = []
  if train_images is not None:
    real = np.asarray(train_images[sources], np.float32)
    columns.append(("source", real / 255.0 if real.max() > 1.0 else real))
  for a, images, src in sets:
    first = {}
    for row, i in enumerate(src.tolist()):
      first.setdefault(int(i), row)  # copy 0 of each source (sets are copy-major)
    columns.append((a, images[[first[i] for i in sources]]))
  save_grid(path, columns)
  return True


def samples(stored, cells, train_images, path, sort_key, per_arm=8):
  """Rows of (real source, generated) pairs, or generated only, per arm; ``stored`` maps
  an arm to the file of its seed-0 set."""
  rows = []
  for a in sorted(cells, key=sort_key):
    f = stored.get(a)
    if cells[a].get("status") != "ok" or not f or not os.path.exists(f):
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
