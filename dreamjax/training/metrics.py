"""Training metrics for TensorBoard, next to the JSON history every run keeps.

:class:`MetricWriter` follows CLU's ``metric_writers.MetricWriter`` interface
(``write_scalars(step, scalars)``, ``write_hparams``, ``flush``, ``close``), the
Flax examples' convention, and writes TensorBoard event files through
``tensorboardX``. CLU's own writer is not used because importing
``clu.metric_writers`` imports TensorFlow (clu 0.0.12), a dependency dreamjax
otherwise never needs. ``tensorboard --logdir WORKDIR`` then shows every run
and every study cell.

Only process 0 of a multi-host job writes; the others get a writer that drops
everything, so callers need no branch.
"""

import os
from typing import Any, Mapping

import jax
import numpy as np

from dreamjax.plumbing import fileio, sharding

LOGDIR = "tensorboard"  # a run's events go to WORKDIR/tensorboard


class MetricWriter:
  """Scalars to TensorBoard; a vector metric (one value per seed) as its mean and per seed."""

  def __init__(self, logdir: str | None):
    self.logdir = logdir
    self._writer = None
    if logdir and sharding.is_primary():
      # tensorboardX and its protobuf load only where events are written (process 0).
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      os.makedirs(logdir, exist_ok=True)
      self._writer = SummaryWriter(logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if self._writer is None:
      return
    for name, value in scalars.items():
      values = np.asarray(value, np.float64).reshape(-1)
      if values.size == 1:
        self._writer.add_scalar(name, float(values[0]), step)
        continue
      self._writer.add_scalar(name, float(values.mean()), step)
      for i, v in enumerate(values):
        self._writer.add_scalar(f"{name}/seed{i}", float(v), step)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    if self._writer is not None:
      self._writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in
                                                 sorted(hparams.items())))

  def flush(self) -> None:
    if self._writer is not None:
      with fileio.translate_disk_full(self.logdir):  # tensorboardX writes from its own thread
        self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      writer, self._writer = self._writer, None
      with fileio.translate_disk_full(self.logdir):
        writer.close()


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Every scalar in the event files under ``logdir``: tag -> [(step, value)].

  For tests and reports; it reads the files TensorBoard reads.
  """
  # As in MetricWriter: tensorboardX loads only where events are read.
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out: dict[str, list[tuple[int, float]]] = {}
  for root, _, files in os.walk(logdir):
    for name in sorted(files):
      if "tfevents" not in name:
        continue
      with open(os.path.join(root, name), "rb") as f:
        data = f.read()
      pos = 0
      while pos + 12 <= len(data):  # TFRecord: length, crc, payload, crc
        length = int.from_bytes(data[pos:pos + 8], "little")
        event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
        for v in event.summary.value:
          out.setdefault(v.tag, []).append((int(event.step), float(v.simple_value)))
  return out


class CompileCounter:
  """Counts the XLA programs built inside a ``with`` block, and the seconds they took.

  A program is built by compiling it or by loading it from JAX's persistent
  compilation cache; JAX reports both as one backend-compile event, so
  ``programs`` says how many distinct programs the block needed whatever the
  cache held, and ``cache_hits`` how many of them the cache served.
  """

  _EVENTS = ("/jax/core/compile/backend_compile_duration",)
  _HITS = ("/jax/compilation_cache/cache_hits",)

  def __init__(self):
    self.programs = 0
    self.cache_hits = 0
    self.seconds = 0.0

  def _duration(self, event, duration_secs, **kwargs):
    del kwargs
    if event in self._EVENTS:
      self.programs += 1
      self.seconds += duration_secs

  def _event(self, event, **kwargs):
    del kwargs
    if event in self._HITS:
      self.cache_hits += 1

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self._duration)
    jax.monitoring.register_event_listener(self._event)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._duration)
    jax.monitoring.unregister_event_listener(self._event)
    return False

  @property
  def compiles(self) -> int:
    return self.programs - self.cache_hits

  def to_dict(self) -> dict[str, float]:
    return {"programs": self.programs, "compiles": self.compiles,
            "cache_hits": self.cache_hits, "compile_seconds": self.seconds}
