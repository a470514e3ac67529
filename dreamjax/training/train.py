"""Classifier training: pure jitted steps over explicit state, K seeds at once.

Everything is stacked along a leading seed axis ``K`` (:mod:`dreamjax.training.seeds`):
``fit`` trains K independent models (one per seed) in one compiled program,
which is how the study gets its seeds cheaply. A single run is K = 1.

Keys: one root key per seed; ``fold_in(root, 0)`` initialises the model (so
every arm of the study starts from the same weights for a seed) and
``fold_in(fold_in(root, 1), step)`` drives batch sampling and augmentation.

Devices: ``fit`` takes the mesh its caller made (:mod:`dreamjax.plumbing.sharding`):
state and training set replicated, each seed's sampled batch split by rows
over the mesh, the gradient mean one all-reduce. ``train.batch_size`` must be
a multiple of the mesh size.
"""

import dataclasses
import functools
import hashlib
import json
import time
from typing import Any, Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax.training import train_state
from jax.sharding import Mesh

from dreamjax.plumbing import checkpoint, sharding
from dreamjax.training import evaluate, loop, models
from dreamjax.errors import ConfigError
from dreamjax.training.metrics import MetricWriter
from dreamjax.training import seeds as seeds_lib
from dreamjax.training.seeds import (  # noqa: F401
    fold_in_each, map_seeds, pad_to_common, seed_keys, stack, unstack)

# (state, images, labels, key) -> (images, labels): a pure, jittable change of
# each batch (classical augmentation, noise, adversarial examples, ...).
BatchTransform = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

# (forward, params, images, key) -> (loss, metrics): a loss term of a batch of unlabeled
# images, added to the labeled loss inside the jitted step (semi-supervised arms).
# ``forward(params, images) -> logits`` runs the model in training mode on them; the
# BatchNorm statistics of that pass are not kept (the labeled batch's are).
UnlabeledLoss = Callable[[Callable[[Any, jax.Array], jax.Array], Any, jax.Array, jax.Array],
                         tuple[jax.Array, dict[str, jax.Array]]]



@dataclasses.dataclass(frozen=True, eq=False)
class SeedTransform:
  """A batch transform that reads arrays of its own seed: a generator's weights, a
  labeler's, a bank of samples.

  ``fn(state, images, labels, key, data) -> (images, labels)`` runs inside the jitted
  step as a :data:`BatchTransform` does, ``data`` being this seed's slice of
  :attr:`data` (a pytree whose every leaf has the seeds on its leading axis, K
  long). The arrays reach the step as its arguments, never as constants of its
  program, so every seed runs one compiled step.

  Attributes:
    fn: the transform; one object per cell (equal objects reuse a compiled step).
    data: the seeds' arrays, stacked.
    info: what the transform's maker records of it (its settings, its cost).
    samples: what the transform puts in batches, drawn apart from training for
      measurement only (the study's quality measures read them), or None.
  """
  fn: Callable[..., tuple[jax.Array, jax.Array]]
  data: Any
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  samples: Any = None


# Folded into a step's key for the unlabeled batch, so the labeled batch and its
# transform draw exactly the keys they draw without one.
UNLABELED_KEY = 0x756E6C62


@dataclasses.dataclass(frozen=True, eq=False)
class Unlabeled:
  """Unlabeled images and the loss term a batch of them adds to every train step.

  Attributes:
    images: float32 ``[N, H, W, C]`` shared by the seeds, or ``[K, N, H, W, C]``
      one set per seed. Images only: the term never sees a label.
    batch_size: unlabeled images drawn per step, beside the labeled batch.
    loss: the :data:`UnlabeledLoss`; one object per setting, so equal settings
      reuse one compiled step.
    counts: ``[K]`` valid rows per seed when per-seed sets were padded to N.
    info: what the term's maker records of it (settings, pool sizes).
  """
  images: Any
  batch_size: int
  loss: UnlabeledLoss
  counts: Any = None
  info: dict[str, Any] = dataclasses.field(default_factory=dict)


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


def make_train_step(model, batch_size: int, mesh: Mesh | None = None, *,
                    batch_transform: BatchTransform | None = None,
                    label_smoothing: float = 0.0,
                    unlabeled_loss: UnlabeledLoss | None = None,
                    unlabeled_batch_size: int = 0):
  """Returns ``train_step(state, images, labels, count, key) -> (state, metrics)``.

  The whole training set lives on the devices (replicated); the step samples
  ``batch_size`` rows below ``count`` (so padded per-seed sets of different
  sizes share one shape), split over ``mesh`` (:func:`sharding.sample_batch`;
  default: every device), and applies ``batch_transform`` to them before the
  gradient.

  With ``unlabeled_loss`` the step is ``train_step(state, images, labels, count,
  u_images, u_count, key)``: it also draws ``unlabeled_batch_size`` rows below
  ``u_count`` of ``u_images`` and adds ``unlabeled_loss`` of them to the labeled
  loss. The labeled batch, its transform and its loss are computed as without it.

  With a :class:`SeedTransform` the step takes that seed's ``data`` as one more
  argument, before the key: ``train_step(state, images, labels, count[, u_images,
  u_count], t_data, key)``.
  """
  mesh = sharding.default(mesh)
  seed_transform = isinstance(batch_transform, SeedTransform)

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

  def labeled_batch(state, images, labels, count, key, t_data=None):
    k_idx, k_aug = jax.random.split(key)
    x, y = sharding.sample_batch(mesh, k_idx, batch_size, count, images, labels)
    if seed_transform:
      x, y = sharding.constrain_rows(mesh, batch_transform.fn(state, x, y, k_aug, t_data))
    elif batch_transform is not None:
      x, y = sharding.constrain_rows(mesh, batch_transform(state, x, y, k_aug))
    return x, y

  def train_step(state, images, labels, count, *args):
    *t_data, key = args  # t_data: the seed transform's arrays, where it has them
    x, y = labeled_batch(state, images, labels, count, key, *t_data)
    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state, x, y)
    state = state.apply_gradients(grads=grads, batch_stats=new_stats)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}
    return state, metrics

  if unlabeled_loss is None:
    return train_step

  def forward(state, params, images):
    variables = {"params": params}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
      return model.apply(variables, images, train=True, mutable=["batch_stats"])[0]
    return model.apply(variables, images, train=True)

  def semi_step(state, images, labels, count, u_images, u_count, *args):
    *t_data, key = args
    x, y = labeled_batch(state, images, labels, count, key, *t_data)
    k_u, k_loss = jax.random.split(jax.random.fold_in(key, UNLABELED_KEY))
    (u,) = sharding.sample_batch(mesh, k_u, unlabeled_batch_size, u_count, u_images)

    def total(params):
      loss, (logits, new_stats) = loss_fn(params, state, x, y)
      u_loss, u_metrics = unlabeled_loss(functools.partial(forward, state), params, u, k_loss)
      return loss + u_loss, (logits, new_stats, loss, u_metrics)

    (loss, (logits, new_stats, labeled, u_metrics)), grads = jax.value_and_grad(
        total, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=new_stats)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
               "labeled_loss": labeled, **u_metrics}
    return state, metrics

  return semi_step


@dataclasses.dataclass
class FitResult:
  state: TrainState              # stacked over seeds
  history: list[dict[str, Any]]  # one row per log interval
  seconds: float
  steps_run: int                 # steps run by this call (0 when fully resumed)


def config_fingerprint(*parts: Any) -> str:
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def fit(model, tcfg, images, labels, *, seeds, mesh: Mesh | None = None, counts=None,
        image_shape=None, init_fn: Callable[[jax.Array], Any] | None = None,
        batch_transform: BatchTransform | None = None,
        unlabeled: Unlabeled | None = None,
        val: tuple[np.ndarray, np.ndarray] | None = None,
        checkpoint_dir: str | None = None, fingerprint: str = "",
        metrics_dir: str | None = None, desc: str = "train",
        progress: Callable[[str], None] | None = None,
        earlier_fingerprints: Sequence[str] = ()) -> FitResult:
  """Trains one model per seed, all at once.

  Args:
    model: a :class:`dreamjax.training.models.CNN` (or any Linen module of its interface).
    tcfg: the ``train`` config block (steps, batch_size, learning_rate, ...).
    images: float32 ``[N, H, W, C]`` shared by all seeds, or ``[K, N, H, W, C]``.
    labels: int ``[N]`` or ``[K, N]``.
    seeds: K ints. The same seed gives the same initial weights in every call.
    mesh: the devices to train on (default: every device of the job); the
      returned state is replicated on it.
    counts: ``[K]`` valid rows per seed when per-seed sets were padded to N.
    init_fn: ``key -> variables`` to start from (e.g. pretrained layers);
      default: the model's own initialiser.
    batch_transform: applied to every batch inside the jitted step; a
      :class:`SeedTransform` also reads its seed's arrays there.
    unlabeled: unlabeled images and the loss term a batch of them adds to every
      step (:class:`Unlabeled`); the labeled batches are the ones drawn without it.
    val: (images, labels) evaluated every ``tcfg.eval_every`` steps.
    checkpoint_dir: if set, the state is saved every ``tcfg.checkpoint_every``
      steps and a run with the same ``fingerprint`` resumes from it (or with one of
      ``earlier_fingerprints``: what an earlier version recorded for the same run).
    metrics_dir: if set, the history also goes to TensorBoard event files there.

  Raises:
    ConfigError: a bad ``tcfg``, an empty training set, a batch that does not
      split over the mesh, or a checkpoint of another config.
    DivergenceError: a non-finite loss.
  """
  validate_train_config(tcfg)
  mesh = sharding.default(mesh)
  sharding.check_divisible(mesh, int(tcfg.batch_size), what="train.batch_size")
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
  u_data, u_batch, u_per_seed = _unlabeled_data(unlabeled, k, mesh, desc)
  t_data = _transform_data(batch_transform, k)

  tx = make_optimizer(tcfg)
  roots = seed_keys(seeds)
  init_keys = jax.vmap(lambda r: jax.random.fold_in(r, 0))(roots)
  step_roots = jax.vmap(lambda r: jax.random.fold_in(r, 1))(roots)
  if init_fn is None:
    state = _compiled_init(model, tx, tuple(image_shape))(init_keys)
  else:
    state = jax.jit(jax.vmap(lambda key: create_state(model, tx, init_fn(key))))(init_keys)

  parts = (fingerprint, seeds, tcfg.to_dict() if hasattr(tcfg, "to_dict") else tcfg)
  if unlabeled is not None:  # without one, the fingerprints of every run so far
    parts += (u_batch, unlabeled.info)
  earlier = tuple(config_fingerprint(f, *parts[1:]) for f in earlier_fingerprints)
  fingerprint = config_fingerprint(*parts)
  state, start_step, history, seconds_before = loop.resume(checkpoint_dir, fingerprint, state,
                                                           desc, log, earlier)
  # After the restore, which returns host arrays whatever ``like``'s placement.
  state, data, step_roots = sharding.replicate(mesh, (
      state, (jnp.asarray(images), jnp.asarray(labels, jnp.int32), jnp.asarray(counts))
      + u_data + t_data, step_roots))
  program = _SeedPrograms(model, int(tcfg.batch_size), batch_transform,
                          float(tcfg.label_smoothing), per_seed, mesh, k,
                          unlabeled=None if unlabeled is None else (
                              unlabeled.loss, u_batch, u_per_seed))
  state, data, step_key = program.split(state, data, step_roots)

  def save(state, step, history):
    checkpoint.save(checkpoint_dir, program.join(state), {
        "step": step, "fingerprint": fingerprint, "history": history,
        "seconds": seconds_before + time.perf_counter() - t0})

  def validation(state):
    variables = program.join(state).variables
    return {"val_accuracy": evaluate.accuracy(model, variables, *val, mesh=mesh).tolist()}

  writer = MetricWriter(metrics_dir)
  hooks = loop.Hooks(evaluate=validation if val is not None else None,
                     eval_every=int(tcfg.eval_every), save=save if checkpoint_dir else None,
                     save_every=int(tcfg.checkpoint_every), writer=writer,
                     images_per_step=(int(tcfg.batch_size) + u_batch) * k, seeds=seeds,
                     divergence_hint=f"learning_rate={tcfg.learning_rate}, batch_size="
                                     f"{tcfg.batch_size}. Lower train.learning_rate or check"
                                     " the input data.")
  t0 = time.perf_counter()
  try:
    state, history = loop.run(program.step, state, data, step_key, steps=int(tcfg.steps),
                              log_every=int(tcfg.log_every), desc=desc, start_step=start_step,
                              history=history, hooks=hooks, log=log)
  finally:
    writer.close()
  return FitResult(state=program.join(state), history=history,
                   seconds=seconds_before + time.perf_counter() - t0,
                   steps_run=int(tcfg.steps) - start_step)


def _unlabeled_data(unlabeled: Unlabeled | None, k: int, mesh: Mesh, desc: str):
  """(data appended to the step's arguments, batch size, per-seed images?) of ``unlabeled``."""
  if unlabeled is None:
    return (), 0, False
  u_batch = int(unlabeled.batch_size)
  if u_batch < 1:
    raise ConfigError(f"{desc}: the unlabeled batch size is {u_batch}; it must be >= 1.")
  sharding.check_divisible(mesh, u_batch, what=f"{desc}: the unlabeled batch size")
  images = np.asarray(unlabeled.images, np.float32)
  per_seed = images.ndim == 5
  if per_seed:
    chex.assert_axis_dimension(images, 0, k)
  n = images.shape[-4]
  counts = (np.full((k,), n, np.int32) if unlabeled.counts is None
            else np.asarray(unlabeled.counts, np.int32))
  if np.any(counts < 1):
    raise ConfigError(f"{desc}: a seed has no unlabeled images (counts={counts.tolist()}).")
  return (jnp.asarray(images), jnp.asarray(counts)), u_batch, per_seed


def _transform_data(batch_transform, k: int) -> tuple:
  """(the seed transform's stacked arrays,) appended to the step's arguments, or ()."""
  if not isinstance(batch_transform, SeedTransform):
    return ()
  for leaf in jax.tree.leaves(batch_transform.data):
    chex.assert_axis_dimension(leaf, 0, k)
  return (jax.tree.map(jnp.asarray, batch_transform.data),)


@functools.lru_cache(maxsize=32)
def _compiled_init(model, tx, image_shape):
  """The jitted initial state of K seeds; cached, since tracing Flax's init is slow."""
  return jax.jit(jax.vmap(lambda key: create_state(
      model, tx, models.init_variables(model, key, image_shape))))




class _SeedPrograms:
  """How the K seeds of one ``fit`` step run: one program for all, or one each in turn,
  as :func:`dreamjax.training.seeds.how` decides for the classifier step. In turn, one
  program is compiled whatever K is. Either way the state the caller sees is
  stacked over seeds (:meth:`join`).
  """

  def __init__(self, model, batch_size, batch_transform, label_smoothing, per_seed, mesh, k,
               unlabeled=None):
    """``unlabeled``: None, or (loss, batch size, per-seed images?) of an :class:`Unlabeled`."""
    self.together = seeds_lib.how("classifier_step") != "in_turn"
    self.k = k
    self._t_data = isinstance(batch_transform, SeedTransform)
    u_per_seed = unlabeled is not None and unlabeled[2]
    if unlabeled is not None:  # the images' seed axis as the step maps it
      unlabeled = (unlabeled[0], unlabeled[1], 0 if u_per_seed else None)
    if self.together:
      self._step = _compiled_step(model, batch_size, batch_transform, label_smoothing,
                                  0 if per_seed else None, mesh, unlabeled)
    else:
      self._step = _compiled_step(model, batch_size, batch_transform, label_smoothing,
                                  "one", mesh, unlabeled)
    self._per_seed = per_seed
    self._u_per_seed = u_per_seed
    self._mesh = mesh

  def split(self, state, data, step_roots):
    """(state, data, step_key) in the form :meth:`step` takes."""
    if self.together:
      return state, data, lambda s: fold_in_each(step_roots, s)
    images, labels, counts, *rest = data
    t = rest.pop() if self._t_data else None  # the seed transform's arrays come last
    states = tuple(unstack(state, i) for i in range(self.k))
    per = tuple((images[i] if self._per_seed else images, labels[i] if self._per_seed else labels,
                 counts[i]) for i in range(self.k))
    if rest:  # the unlabeled images and counts, after the labeled ones
      u_images, u_counts = rest
      per = tuple(p + (u_images[i] if self._u_per_seed else u_images, u_counts[i])
                  for i, p in enumerate(per))
    if t is not None:
      per = tuple(p + (unstack(t, i),) for i, p in enumerate(per))
    roots = tuple(unstack(step_roots, i) for i in range(self.k))
    return states, (per,), lambda s: tuple(_fold_one(r, s) for r in roots)

  def step(self, state, *args):
    """``(state, images, labels, counts[, u_images, u_counts][, t_data], keys)`` together,
    or ``(states, per_seed, keys)``."""
    if self.together:
      return self._step(state, *args)
    data, keys = args
    outs = [self._step(s, *d, key) for s, d, key in zip(state, data, keys)]
    metrics = {name: tuple(o[1][name] for o in outs) for name in outs[0][1]}
    return tuple(o[0] for o in outs), metrics

  def join(self, state):
    """The seeds' states stacked, replicated on the mesh as a one-program step leaves them."""
    return state if self.together else sharding.replicate(self._mesh, stack(state))


_fold_one = jax.jit(jax.random.fold_in)


@functools.lru_cache(maxsize=32)
def _compiled_step(model, batch_size, batch_transform, label_smoothing, data_axis, mesh,
                   unlabeled=None):
  """The jitted step over ``mesh``, shared by every fit with the same settings:
  seed-mapped (``data_axis`` 0 or None) or for one seed (``data_axis="one"``).
  ``unlabeled``: None, or (loss, batch size, seed axis of the unlabeled images). A
  :class:`SeedTransform`'s arrays are one more argument, one slice per seed."""
  t_axes = (0,) if isinstance(batch_transform, SeedTransform) else ()
  if unlabeled is None:
    step = make_train_step(model, batch_size, mesh, batch_transform=batch_transform,
                           label_smoothing=label_smoothing)
    in_axes = (0, data_axis, data_axis, 0, *t_axes, 0)
  else:
    loss, u_batch, u_axis = unlabeled
    step = make_train_step(model, batch_size, mesh, batch_transform=batch_transform,
                           label_smoothing=label_smoothing, unlabeled_loss=loss,
                           unlabeled_batch_size=u_batch)
    in_axes = (0, data_axis, data_axis, 0, u_axis, 0, *t_axes, 0)
  if data_axis != "one":
    step = map_seeds(step, in_axes=in_axes, workload="classifier_step")
  rep = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=rep, out_shardings=rep, donate_argnums=0)
