"""Classifier training: pure jitted steps over explicit state, K seeds at once.

Everything is stacked along a leading seed axis ``K``: ``fit`` trains K
independent models (one per seed) in one compiled program, which is how the
study gets its seeds cheaply. A single run is K = 1. The program holds one
copy of the step per seed (:func:`map_seeds`) rather than ``jax.vmap``: on
XLA:CPU a vmapped convolution becomes a grouped convolution that ran 1.4-1.6x
slower than K separate ones (numbers in benchmarks/README.md).

Keys: one root key per seed; ``fold_in(root, 0)`` initialises the model (so
every arm of the study starts from the same weights for a seed) and
``fold_in(fold_in(root, 1), step)`` drives batch sampling and augmentation.

Devices: on a machine with several devices, or in a multi-host job, ``fit``
trains data-parallel over all of them with :mod:`dreamjax.sharding`'s pattern:
state and training set replicated on a ``("data",)`` mesh, each seed's sampled
batch split by rows over it, the gradient mean one all-reduce. Results match
one device up to float summation order; ``train.batch_size`` must be a
multiple of the device count. Evaluation (:func:`make_predict`,
:func:`accuracy`, and ``val`` inside ``fit``) replicates the weights on the
same mesh and splits each chunk of images by rows over it. With one device
(or ``devices=[d]``) the step and evaluation are the plain jitted programs,
with no mesh.
"""

import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any, Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax.training import train_state

from dreamjax import checkpoint
from dreamjax import models
from dreamjax import sharding
from dreamjax.errors import CheckpointError, ConfigError, DivergenceError

# (state, images, labels, key) -> (images, labels): a pure, jittable change of
# each batch (classical augmentation, noise, adversarial examples, ...).
BatchTransform = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


class TrainState(train_state.TrainState):
  batch_stats: Any = None

  @property
  def variables(self) -> dict[str, Any]:
    v = {"params": self.params}
    if self.batch_stats:
      v["batch_stats"] = self.batch_stats
    return v


def validate_train_config(tcfg) -> None:
  checks = [
      ("train.steps", tcfg.steps, tcfg.steps >= 1, ">= 1"),
      ("train.batch_size", tcfg.batch_size, tcfg.batch_size >= 1, ">= 1"),
      ("train.learning_rate", tcfg.learning_rate, tcfg.learning_rate > 0, "> 0"),
      ("train.weight_decay", tcfg.weight_decay, tcfg.weight_decay >= 0, ">= 0"),
      ("train.warmup_steps", tcfg.warmup_steps, 0 <= tcfg.warmup_steps < tcfg.steps,
       f"in [0, train.steps={tcfg.steps})"),
      ("train.log_every", tcfg.log_every, tcfg.log_every >= 1, ">= 1"),
      ("train.eval_every", tcfg.eval_every,
       tcfg.eval_every >= 0 and tcfg.eval_every % max(tcfg.log_every, 1) == 0,
       f">= 0 (0: only at the end) and a multiple of train.log_every={tcfg.log_every}"),
      ("train.checkpoint_every", tcfg.checkpoint_every,
       tcfg.checkpoint_every >= 0 and tcfg.checkpoint_every % max(tcfg.log_every, 1) == 0,
       f">= 0 (0: never) and a multiple of train.log_every={tcfg.log_every}, so a resumed"
       " run logs the same history"),
      ("train.label_smoothing", tcfg.label_smoothing, 0 <= tcfg.label_smoothing < 1, "in [0, 1)"),
  ]
  for name, value, ok, valid in checks:
    if not ok:
      raise ConfigError(f"{name}={value} is invalid: must be {valid}.")


def make_optimizer(tcfg) -> optax.GradientTransformation:
  return _optimizer(float(tcfg.learning_rate), int(tcfg.warmup_steps), int(tcfg.steps),
                    float(tcfg.weight_decay))


@functools.lru_cache(maxsize=32)
def _optimizer(learning_rate, warmup_steps, steps, weight_decay) -> optax.GradientTransformation:
  # One object per setting: the optimizer is a static part of TrainState's
  # tree structure, so equal settings must give an equal object for compiled
  # steps to be reused across runs (the study trains many arms alike).
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
      decay_steps=steps, end_value=learning_rate * 0.01)
  return optax.adamw(schedule, weight_decay=weight_decay)


def create_state(model, tx, variables) -> TrainState:
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats", {}))


def seed_keys(seeds) -> jax.Array:
  return jnp.stack([jax.random.key(int(s)) for s in seeds])


def make_train_step(model, batch_size: int, *, batch_transform: BatchTransform | None = None,
                    label_smoothing: float = 0.0):
  """Returns ``train_step(state, images, labels, count, key) -> (state, metrics)``.

  The whole training set lives on the device; the step samples ``batch_size``
  indices below ``count`` (so padded per-seed sets of different sizes share
  one shape) and applies ``batch_transform`` before the gradient.
  """

  def loss_fn(params, state, images, labels):
    variables = {"params": params}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
      logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
      new_stats = updates["batch_stats"]
    else:
      logits = model.apply(variables, images, train=True)
      new_stats = state.batch_stats
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    return loss, (logits, new_stats)

  def train_step(state, images, labels, count, key):
    k_idx, k_aug = jax.random.split(key)
    idx = jax.random.randint(k_idx, (batch_size,), 0, count)
    x, y = images[idx], labels[idx]
    if batch_transform is not None:
      x, y = batch_transform(state, x, y, k_aug)
    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state, x, y)
    state = state.apply_gradients(grads=grads, batch_stats=new_stats)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}
    return state, metrics

  return train_step


def map_seeds(fn: Callable, in_axes: int | None | tuple[int | None, ...] = 0) -> Callable:
  """``jax.vmap`` over a leading seed axis, unrolled: one copy of ``fn`` per seed.

  Same results as ``jax.vmap(fn, in_axes)`` (axis 0 or None per argument), but
  each seed keeps ungrouped convolutions and matmuls, which XLA:CPU runs faster
  and may run side by side. Compile time grows with K, so it suits the handful
  of seeds a study uses. On accelerators, which run a vmapped (grouped)
  convolution well and gain most from one large launch, it is ``jax.vmap``.
  """
  if jax.default_backend() != "cpu":
    return jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    if len(axes) != len(args):
      raise ValueError(f"map_seeds: {len(axes)} in_axes for {len(args)} arguments.")
    if any(a not in (0, None) for a in axes):
      raise ValueError(f"map_seeds: in_axes={axes} must each be 0 or None.")
    stacked = [a for a, ax in zip(args, axes) if ax == 0]
    if not stacked:
      raise ValueError("map_seeds: no argument has a seed axis (in_axes all None).")
    k = jax.tree.leaves(stacked[0])[0].shape[0]
    outs = [fn(*[unstack(a, i) if ax == 0 else a for a, ax in zip(args, axes)])
            for i in range(k)]
    return stack(outs)

  return mapped


@functools.lru_cache(maxsize=32)
def make_predict(model, batch_size: int = 500):
  """Returns ``predict(variables_K, images, *, devices=None) -> logits [K, N, classes]``.

  Jitted per chunk of ``batch_size`` images; a last, shorter chunk is
  zero-padded to that shape so the chunk function compiles once. ``devices``
  as in :func:`fit`: with several (default: every device of the job,
  :func:`fit_mesh`) the weights are replicated and each chunk, padded to a
  multiple of the device count, is split by rows over them, so each device
  predicts its own rows (in a multi-host job the logits are then gathered to
  every process); the logits equal one device's up to float rounding. One
  device: the one-device program, with no sharding.
  """

  @jax.jit
  def _chunk(variables_K, x):
    return map_seeds(lambda v: model.apply(v, x, train=False))(variables_K)

  def predict(variables_K, images, *, devices: Sequence[jax.Device] | None = None):
    mesh = fit_mesh(devices)
    variables_K = sharding.put_weights(mesh, variables_K, devices)
    size = min(batch_size, len(images))  # Keep one shape so the chunk function compiles once.
    outs = []
    for start in range(0, len(images), batch_size):
      out = _chunk(variables_K, sharding.put_rows(mesh, images[start:start + batch_size], size))
      if not out.is_fully_addressable:  # rows on other hosts: gather them here
        out = jnp.asarray(sharding.to_host(out))
      n = min(batch_size, len(images) - start)
      outs.append(out[:, :n] if out.shape[1] > n else out)
    return jnp.concatenate(outs, axis=1)

  return predict


def accuracy(predict, variables_K, images, labels, *,
             devices: Sequence[jax.Device] | None = None) -> np.ndarray:
  """Accuracy of each of the K models, shape [K].

  ``predict`` is one of :func:`make_predict`; ``devices`` as in :func:`fit`.
  """
  logits = predict(variables_K, images, devices=devices)
  return np.asarray(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(labels)[None], axis=1))


@dataclasses.dataclass
class FitResult:
  state: TrainState              # stacked over seeds
  history: list[dict[str, Any]]  # one row per log interval
  seconds: float
  steps_run: int                 # steps run by this call (0 when fully resumed)


def config_fingerprint(*parts: Any) -> str:
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def fit(model, tcfg, images, labels, *, seeds, counts=None, image_shape=None,
        init_fn: Callable[[jax.Array], Any] | None = None,
        batch_transform: BatchTransform | None = None,
        val: tuple[np.ndarray, np.ndarray] | None = None,
        checkpoint_dir: str | None = None, fingerprint: str = "",
        desc: str = "train", progress: Callable[[str], None] | None = None,
        devices: Sequence[jax.Device] | None = None) -> FitResult:
  """Trains one model per seed, all at once.

  Args:
    model: a :class:`dreamjax.models.CNN` (or any Linen module of its interface).
    tcfg: the ``train`` config block (steps, batch_size, learning_rate, ...).
    images: float32 ``[N, H, W, C]`` shared by all seeds, or ``[K, N, H, W, C]``.
    labels: int ``[N]`` or ``[K, N]``.
    seeds: K ints. The same seed gives the same initial weights in every call.
    counts: ``[K]`` valid rows per seed when per-seed sets were padded to N.
    init_fn: ``key -> variables`` to start from (e.g. pretrained layers);
      default: the model's own initialiser.
    batch_transform: applied to every batch inside the jitted step.
    val: (images, labels) evaluated every ``tcfg.eval_every`` steps.
    checkpoint_dir: if set, the state is saved every ``tcfg.checkpoint_every``
      steps and a run with the same ``fingerprint`` resumes from it.
    devices: where to train. Default (None): every device of the job
      (:func:`fit_mesh`; in a multi-host job every process calls ``fit`` with
      the same arguments and only process 0 writes checkpoints). Several devices:
      data-parallel over them (:func:`fit_mesh`); the returned state is
      replicated on each, and ``tcfg.batch_size`` must be a multiple of their
      count (else ConfigError). One device, e.g. ``[jax.devices()[0]]``: the
      one-device program on that device, as on a one-device machine (a
      reference run on a many-device host).

  Raises:
    ConfigError: a bad ``tcfg``, an empty training set, a batch that does not
      split over the devices, or a checkpoint of another config.
    DivergenceError: a non-finite loss.
  """
  validate_train_config(tcfg)
  mesh = fit_mesh(devices, tcfg.batch_size, what="train.batch_size")
  seeds = [int(s) for s in seeds]
  k = len(seeds)
  per_seed = images.ndim == 5
  if per_seed:
    chex.assert_axis_dimension(images, 0, k)
    chex.assert_axis_dimension(labels, 0, k)
  n = images.shape[-4]
  counts = np.full((k,), n, np.int32) if counts is None else np.asarray(counts, np.int32)
  if np.any(counts < 1):
    raise ConfigError(f"{desc}: a seed has an empty training set (counts={counts.tolist()}).")
  image_shape = image_shape or tuple(images.shape[-3:])
  log = progress or logging.info

  tx = make_optimizer(tcfg)
  roots = seed_keys(seeds)
  init_keys = jax.vmap(lambda r: jax.random.fold_in(r, 0))(roots)
  step_roots = jax.vmap(lambda r: jax.random.fold_in(r, 1))(roots)
  if init_fn is None:
    state = _compiled_init(model, tx, tuple(image_shape))(init_keys)
  else:
    state = jax.jit(jax.vmap(lambda key: create_state(model, tx, init_fn(key))))(init_keys)

  start_step = 0
  fingerprint = config_fingerprint(fingerprint, seeds, tcfg.to_dict() if hasattr(tcfg, "to_dict") else tcfg)
  history: list[dict[str, Any]] = []
  seconds_before = 0.0
  if checkpoint_dir and checkpoint.exists(checkpoint_dir):
    try:
      meta = checkpoint.read_meta(checkpoint_dir)
    except CheckpointError:
      meta = {}
    if meta and meta.get("fingerprint") != fingerprint:
      raise ConfigError(f"{checkpoint_dir} holds a checkpoint of another config or seeds;"
                        " use a fresh --workdir or delete that folder.")
    try:
      state, meta = checkpoint.restore(checkpoint_dir, state)
      start_step = int(meta["step"])
      history = meta.get("history", [])
      seconds_before = float(meta.get("seconds", 0.0))
      log(f"{desc}: resumed from step {start_step} ({checkpoint_dir})")
    except (CheckpointError, KeyError, ValueError) as e:
      # Never continue from damaged weights: start this run again instead.
      log(f"{desc}: checkpoint unusable ({e}); training from step 0")
      checkpoint.remove(checkpoint_dir)

  data_axis = 0 if per_seed else None
  step_fn = _compiled_step(model, int(tcfg.batch_size), batch_transform,
                           float(tcfg.label_smoothing), data_axis, mesh)
  predict = make_predict(model)
  images = jnp.asarray(images)
  labels = jnp.asarray(labels, jnp.int32)
  counts_dev = jnp.asarray(counts)
  if mesh is not None:
    # After the restore, which returns host arrays whatever ``like``'s placement.
    state, images, labels, counts_dev, step_roots = sharding.replicate(
        mesh, (state, images, labels, counts_dev, step_roots))
  elif devices is not None:
    state, images, labels, counts_dev, step_roots = jax.device_put(
        (state, images, labels, counts_dev, step_roots), list(devices)[0])

  t0 = time.perf_counter()
  t_window = t0
  window: list[dict[str, jax.Array]] = []
  total = tcfg.steps
  for step in range(start_step, total):
    state, metrics = step_fn(state, images, labels, counts_dev, _fold_seeds(step_roots, step))
    window.append(metrics)
    last = step + 1 == total
    if (step + 1) % tcfg.log_every == 0 or last:
      losses = np.asarray(jnp.stack([m["loss"] for m in window]))  # [steps, K]
      bad = ~np.isfinite(losses)
      if bad.any():
        i, s = np.argwhere(bad)[0]
        first = step + 1 - len(window) + int(i)
        raise DivergenceError(
            f"{desc}: loss became {losses[i, s]} at step {first} (seed {seeds[s]});"
            f" learning_rate={tcfg.learning_rate}, batch_size={tcfg.batch_size}."
            " Lower train.learning_rate or check the input data.", step=first)
      accs = np.asarray(jnp.stack([m["accuracy"] for m in window]))
      now = time.perf_counter()
      rate = len(window) * tcfg.batch_size * k / max(now - t_window, 1e-9)
      row = {"step": step + 1, "loss": losses.mean(0).tolist(), "accuracy": accs.mean(0).tolist()}
      evaluate_now = val is not None and (
          last or (tcfg.eval_every and (step + 1) % tcfg.eval_every == 0))
      if evaluate_now:
        row["val_accuracy"] = accuracy(predict, state.variables, *val, devices=devices).tolist()
      history.append(row)
      eta = (total - step - 1) * (now - t0) / max(step + 1 - start_step, 1)
      val_txt = (f" val_acc={np.mean(row['val_accuracy']):.4f}" if "val_accuracy" in row else "")
      log(f"{desc}: step {step + 1}/{total} loss={losses[-1].mean():.4f}"
          f" acc={accs.mean():.3f}{val_txt} {rate:,.0f} img/s ETA {eta:.0f}s")
      window, t_window = [], now
    if checkpoint_dir and tcfg.checkpoint_every and (
        (step + 1) % tcfg.checkpoint_every == 0 or last):
      checkpoint.save(checkpoint_dir, state, {
          "step": step + 1, "fingerprint": fingerprint, "history": history,
          "seconds": seconds_before + time.perf_counter() - t0})
  jax.block_until_ready(state)
  return FitResult(state=state, history=history,
                   seconds=seconds_before + time.perf_counter() - t0,
                   steps_run=total - start_step)


@functools.lru_cache(maxsize=32)
def _compiled_init(model, tx, image_shape):
  """The jitted initial state of K seeds; cached, since tracing Flax's init is slow."""
  return jax.jit(jax.vmap(lambda key: create_state(
      model, tx, models.init_variables(model, key, image_shape))))


_fold_seeds = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))


def fit_mesh(devices: Sequence[jax.Device] | None = None, batch_size: int | None = None,
             what: str = "batch_size") -> jax.sharding.Mesh | None:
  """The ``("data",)`` mesh :func:`fit` trains over, or None for one device.

  ``devices=None`` means every device of the job: this host's devices, and in
  a multi-host job (:func:`dreamjax.sharding.initialize`) every host's, where
  each process must then make the same calls with the same data. With
  ``batch_size`` (named ``what`` in the error) a ConfigError, before any
  compute, when those rows do not split evenly over the mesh.
  """
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ConfigError("fit: devices=[] names no device to train on.")
  mesh = sharding.data_mesh(devices) if len(devices) > 1 else None
  if mesh is not None and batch_size is not None:
    sharding.check_divisible(mesh, int(batch_size), what=what)
  return mesh


@functools.lru_cache(maxsize=32)
def _compiled_step(model, batch_size, batch_transform, label_smoothing, data_axis, mesh):
  """The jitted seed-mapped step, shared by every fit with the same settings.

  ``mesh=None``: the one-device program. Otherwise the state and dataset are
  replicated on ``mesh`` and each seed's batch is split by rows over it
  (:func:`dreamjax.sharding.split_batch_rows`, applied inside the mapped step).
  """
  if mesh is not None:
    batch_transform = sharding.split_batch_rows(mesh, batch_transform)
  step = map_seeds(make_train_step(model, batch_size, batch_transform=batch_transform,
                                   label_smoothing=label_smoothing),
                   in_axes=(0, data_axis, data_axis, 0, 0))
  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  rep = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=rep, out_shardings=rep, donate_argnums=0)


def unstack(tree, i: int):
  """The i-th seed's slice of a seed-stacked pytree."""
  return jax.tree.map(lambda x: x[i], tree)


def stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def pad_to_common(sets: list[tuple[np.ndarray, np.ndarray]]):
  """Stacks per-seed (images, labels) of different lengths: arrays + counts."""
  n = max(len(y) for _, y in sets)
  images = np.zeros((len(sets), n, *sets[0][0].shape[1:]), np.float32)
  labels = np.zeros((len(sets), n), np.int32)
  for i, (x, y) in enumerate(sets):
    images[i, :len(y)], labels[i, :len(y)] = x, y
  return images, labels, np.asarray([len(y) for _, y in sets], np.int32)
