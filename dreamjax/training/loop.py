"""The one training loop: the classifier, the generators and pretraining all run it.

``run`` calls a jitted ``step(state, *data, key) -> (state, metrics)`` and,
every ``log_every`` steps, turns the window's metrics into one history row,
raises :class:`DivergenceError` on the first NaN/Inf (naming its step, and its
seed when metrics carry one value per seed), writes the row to TensorBoard,
logs one progress line, and runs the optional evaluation and checkpoint
hooks. Metrics are fetched from the device once per window, not per step.

:func:`resume` and :func:`checkpoint_hook` are the one way a run continues
from its checkpoint: a run restored at step s and run on gives the bits the
uninterrupted run gives (step s's key is a function of s alone).
"""

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging

from dreamjax.errors import CheckpointError, ConfigError, DivergenceError
from dreamjax.plumbing import checkpoint
from dreamjax.training.metrics import MetricWriter


@dataclasses.dataclass
class Hooks:
  """What a caller adds to the bare loop; every field optional."""
  evaluate: Callable[[Any], dict[str, Any]] | None = None  # state -> extra row entries
  eval_every: int = 0                  # 0: evaluate at the last step only
  save: Callable[[Any, int, list], None] | None = None    # (state, step, history)
  save_every: int = 0                  # 0: never
  writer: MetricWriter | None = None
  images_per_step: int = 0             # for the img/s figure of the progress line
  seeds: Sequence[int] | None = None   # names the seed of a per-seed NaN
  divergence_hint: str = "lower the learning rate or check the input data."


def run(step_fn: Callable, state: Any, data: tuple, step_key: Callable[[int], jax.Array], *,
        steps: int, log_every: int, desc: str, start_step: int = 0,
        history: list[dict[str, Any]] | None = None, hooks: Hooks | None = None,
        log: Callable[[str], None] | None = None) -> tuple[Any, list[dict[str, Any]]]:
  """Runs steps ``start_step .. steps-1``; returns ``(state, history)``.

  ``step_key(s)`` is step ``s``'s key (callers fold the step into their root).
  History rows: ``{"step": s, metric: window mean}``, a float for a scalar
  metric and a list (one per seed) for a vector one.
  """
  hooks = hooks or Hooks()
  log = log or logging.info
  history = list(history or [])
  window: list[dict[str, jax.Array]] = []
  t0 = t_window = time.perf_counter()
  for step in range(start_step, steps):
    state, metrics = step_fn(state, *data, step_key(step))
    window.append(metrics)
    last = step + 1 == steps
    if (step + 1) % log_every == 0 or last:
      stacked = {k: np.asarray(jax.device_get([m[k] for m in window])) for k in window[0]}
      _check_finite(stacked, step + 1 - len(window), desc, hooks)
      row: dict[str, Any] = {"step": step + 1}
      for k, v in stacked.items():
        mean = v.mean(0)
        row[k] = float(mean) if mean.ndim == 0 else mean.tolist()
      if hooks.evaluate is not None and (
          last or (hooks.eval_every and (step + 1) % hooks.eval_every == 0)):
        row.update(hooks.evaluate(state))
      history.append(row)
      if hooks.writer is not None:
        hooks.writer.write_scalars(step + 1, {k: v for k, v in row.items() if k != "step"})
      now = time.perf_counter()
      log(_progress_line(desc, step + 1, steps, row, len(window), now - t_window,
                         (now - t0) / max(step + 1 - start_step, 1), hooks.images_per_step))
      window, t_window = [], now
    if hooks.save is not None and hooks.save_every and (
        (step + 1) % hooks.save_every == 0 or last):
      hooks.save(state, step + 1, history)
  jax.block_until_ready(state)
  if hooks.writer is not None:
    hooks.writer.flush()
  return state, history


def _check_finite(stacked: dict[str, np.ndarray], first_step: int, desc: str,
                  hooks: Hooks) -> None:
  for name, values in stacked.items():
    bad = ~np.isfinite(values)
    if not bad.any():
      continue
    where = np.argwhere(bad)[0]
    step = first_step + int(where[0])
    seed = ""
    if values.ndim > 1:
      s = int(where[1])
      seed = f" (seed {hooks.seeds[s] if hooks.seeds else s})"
    raise DivergenceError(f"{desc}: {name} became {values[tuple(where)]} at step {step}{seed};"
                          f" {hooks.divergence_hint}", step=step)


def _progress_line(desc, step, steps, row, window, window_seconds, seconds_per_step,
                   images_per_step) -> str:
  parts = [f"{desc}: step {step}/{steps}"]
  for k, v in row.items():
    if k != "step":
      parts.append(f"{k}={np.mean(v):.4f}")
  if images_per_step:
    parts.append(f"{window * images_per_step / max(window_seconds, 1e-9):,.0f} img/s")
  parts.append(f"ETA {(steps - step) * seconds_per_step:.0f}s")
  return " ".join(parts)


def resume(checkpoint_dir: str | None, fingerprint: str, state: Any, desc: str,
           log: Callable[[str], None], earlier: Sequence[str] = ()
           ) -> tuple[Any, int, list[dict[str, Any]], float]:
  """(state, start step, history, seconds so far) from ``checkpoint_dir`` if it fits.

  A checkpoint of another ``fingerprint`` (nor one of ``earlier``: what an earlier
  version recorded for the same run) raises :class:`ConfigError`; a damaged one
  is removed with a warning and the run starts from step 0 with ``state``.
  """
  if not checkpoint_dir or not checkpoint.exists(checkpoint_dir):
    return state, 0, [], 0.0
  try:
    meta = checkpoint.read_meta(checkpoint_dir)
  except CheckpointError:
    meta = {}
  if meta and meta.get("fingerprint") not in (fingerprint, *earlier):
    raise ConfigError(f"{checkpoint_dir} holds a checkpoint of another config or seeds;"
                      " use a fresh --workdir or delete that folder.")
  try:
    state, meta = checkpoint.restore(checkpoint_dir, state)
    log(f"{desc}: resumed from step {int(meta['step'])} ({checkpoint_dir})")
    return state, int(meta["step"]), meta.get("history", []), float(meta.get("seconds", 0.0))
  except (CheckpointError, KeyError, ValueError) as e:
    # Never continue from damaged weights: start this run again instead. The user
    # has nothing to do, so the error's advice (delete it, rerun) is left out, and
    # the warning is logged once (``log`` is absl's info log in the commands).
    if isinstance(e, CheckpointError):
      fault = e.fault
    else:  # a "step" or "seconds" entry missing or not a number
      fault = f"checkpoint {checkpoint_dir} has unusable metadata ({type(e).__name__}: {e})."
    logging.warning("%s: %s It was removed and this run trains again from step 0 by"
                    " itself; nothing to do.", desc, fault)
    checkpoint.remove(checkpoint_dir)
    return state, 0, [], 0.0


def checkpoint_hook(checkpoint_dir: str, fingerprint: str, seconds_before: float,
                    every_seconds: float, steps: int) -> Callable[[Any, int, list], None]:
  """A :attr:`Hooks.save` that keeps the run's state in ``checkpoint_dir`` at most
  once every ``every_seconds`` of training (0: at every call), never at the last
  of its ``steps`` (the caller keeps the finished result its own way).

  The metadata :func:`resume` reads: step, fingerprint, history, and the seconds
  trained so far (``seconds_before`` from an earlier run plus this one's).
  Saving reads the state only, so the run's numbers do not depend on when it saves.
  """
  t0 = time.perf_counter()
  last = {"t": t0}

  def save(state, step, history):
    now = time.perf_counter()
    if step >= steps or now - last["t"] < every_seconds:
      return
    checkpoint.save(checkpoint_dir, state, {
        "step": step, "fingerprint": fingerprint, "history": history,
        "seconds": seconds_before + now - t0})
    last["t"] = time.perf_counter()

  return save
