"""Dreaming a whole split, chunk by chunk, with bounded memory.

Every chunk has the same shape (the last is padded and its padding masked out
of the BatchNorm prior), so a split compiles one program however long it is.
Chunk ``c`` uses ``fold_in(key, c)``: a dream is a function of the key, the
image and ``chunk_size``.

Devices: with several devices (``devices`` as in :func:`dreamjax.train.fit`;
in a multi-host job the dreams are gathered to every process) the weights are replicated on a ``("data",)``
mesh and each chunk, zero-padded to a multiple of the device count (the extra
rows masked out like the last chunk's padding), is split by rows over it
(:func:`dreamjax.sharding.put_rows`). The jitted pieces of
:func:`dreamjax.dream.engine.dream_batch` follow those shardings, so each
device dreams its own rows; only the BatchNorm prior's batch statistics are
reduced across devices. Dreams equal one device's up to float rounding. With
one device nothing is sharded.
"""

import dataclasses
import time
from typing import Callable, Sequence

import jax
import numpy as np
from absl import logging

from dreamjax import sharding, train
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
                  devices: Sequence[jax.Device] | None = None) -> DreamResult:
  """Dreams ``images`` [N, H, W, C] in [0, 1] with the dream block ``cfg``.

  ``cfg`` is a dream config (validated here against ``model``) or a
  :class:`DreamSpec` (e.g. with a user's own objective). ``variables`` are one
  model's (not seed-stacked). ``labels`` [N] feed the 'logit' objective.
  ``devices``: see the module docstring (default: every device of the job).
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
  mesh = train.fit_mesh(devices)
  variables = sharding.put_weights(mesh, variables, devices)
  size = min(chunk_size, max(n, 1))
  out = np.empty_like(images)
  l2, linf, before, gain = (np.empty((n,), np.float32) for _ in range(4))
  t0 = time.perf_counter()
  for c, start in enumerate(range(0, n, size)):
    stop = min(start + size, n)
    x, y, valid = sharding.put_rows(  # padding rows are zeros, so not valid
        mesh, (images[start:stop], labels[start:stop], np.ones((stop - start,), bool)), size)
    r = sharding.to_host(dream_batch(model, spec, variables, x, y, valid,
                                   jax.random.fold_in(key, c)))
    m = stop - start
    out[start:stop] = r["images"][:m]
    l2[start:stop], linf[start:stop] = r["l2"][:m], r["linf"][:m]
    before[start:stop] = r["objective_before"][:m]
    gain[start:stop] = r["objective_after"][:m] - r["objective_before"][:m]
    elapsed = time.perf_counter() - t0
    if stop == n or c % 10 == 0:
      log(f"dream: {stop}/{n} images, {stop * spec.total_steps / max(elapsed, 1e-9):,.0f}"
          f" image·steps/s, ETA {(n - stop) * elapsed / stop:.0f}s")
  seconds = time.perf_counter() - t0
  return DreamResult(images=out, l2=l2, linf=linf, objective_before=before,
                     objective_gain=gain, seconds=seconds,
                     image_steps_per_s=n * spec.total_steps / max(seconds, 1e-9))
