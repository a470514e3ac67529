"""Dreaming a whole split, chunk by chunk, with bounded memory.

Every chunk has the same shape (the last is padded and its padding masked out
of the BatchNorm prior), so a split compiles one program however long it is.
Chunk ``c`` uses ``fold_in(key, c)``: a dream is a function of the key, the
image and ``chunk_size``.

Devices: the chunks run through :func:`dreamjax.plumbing.sharding.map_rows` on the
caller's mesh (default: every device): each chunk, zero-padded to a multiple
of the device count (the extra rows masked out like the last chunk's
padding), is split by rows, so each device dreams its own rows; only the
BatchNorm prior's batch statistics are reduced across devices. Dreams equal
one device's up to float rounding.
"""

import dataclasses
import time
from typing import Callable

import numpy as np
from absl import logging
from jax.sharding import Mesh

from dreamjax.plumbing import sharding
from dreamjax.dream import spec as spec_lib
from dreamjax.dream.engine import dream_batch
from dreamjax.errors import ConfigError


@dataclasses.dataclass
class DreamResult:
  images: np.ndarray          # float32, the input's shape, in [0, 1]
  l2: np.ndarray              # [N] L2 distance of each dream from its source
  linf: np.ndarray            # [N] L∞ distance
  objective_before: np.ndarray  # [N] objective of each source
  objective_gain: np.ndarray  # [N] objective of the dream minus that of its source
  seconds: float
  image_steps_per_s: float    # images × ascent steps (all octaves) per second

  def summary(self) -> dict[str, float]:
    return {"count": int(len(self.l2)), "seconds": self.seconds,
            "image_steps_per_s": self.image_steps_per_s,
            "mean_l2": float(np.mean(self.l2)) if len(self.l2) else 0.0,
            "mean_linf": float(np.mean(self.linf)) if len(self.linf) else 0.0,
            "mean_objective_gain": float(np.mean(self.objective_gain)) if len(self.l2) else 0.0}


def dream_dataset(model, variables, images, labels, cfg, key, *, chunk_size: int = 256,
                  progress: Callable[[str], None] | None = None,
                  mesh: Mesh | None = None) -> DreamResult:
  """Dreams ``images`` [N, H, W, C] in [0, 1] with the dream block ``cfg``.

  ``cfg`` is a dream config (validated here against ``model``) or a
  :class:`DreamSpec` (e.g. with a user's own objective). ``variables`` are one
  model's (not seed-stacked). ``labels`` [N] feed the 'logit' objective.
  """
  spec = cfg if isinstance(cfg, spec_lib.DreamSpec) else spec_lib.from_config(cfg, model)
  if chunk_size < 1:
    raise ConfigError(f"chunk_size={chunk_size} must be >= 1.")
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  n = len(images)
  if labels.shape != (n,):
    raise ConfigError(f"labels have shape {labels.shape}; expected ({n},), one per image.")
  log = progress or logging.info
  if n == 0:
    empty = np.zeros((0,), np.float32)
    return DreamResult(images, empty, empty, empty, empty, 0.0, 0.0)
  t0 = time.perf_counter()
  done = [0]

  def dream_chunk(variables, rows, key):
    x, y, valid = rows  # padding rows are zeros, so not valid
    r = dream_batch(model, spec, variables, x, y, valid, key)
    r = {k: r[k] for k in ("images", "l2", "linf", "objective_before", "objective_after")}
    done[0] = min(done[0] + x.shape[0], n)
    elapsed = time.perf_counter() - t0
    if done[0] == n or done[0] // x.shape[0] % 10 == 1:
      log(f"dream: {done[0]}/{n} images, {done[0] * spec.total_steps / max(elapsed, 1e-9):,.0f}"
          f" image·steps/s")
    return r

  r = sharding.map_rows(dream_chunk, variables, (images, labels, np.ones((n,), bool)),
                        mesh=sharding.default(mesh), chunk=min(chunk_size, max(n, 1)), key=key)
  seconds = time.perf_counter() - t0
  return DreamResult(images=r["images"], l2=r["l2"], linf=r["linf"],
                     objective_before=r["objective_before"],
                     objective_gain=r["objective_after"] - r["objective_before"],
                     seconds=seconds, image_steps_per_s=n * spec.total_steps / max(seconds, 1e-9))
