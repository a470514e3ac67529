"""Pieces the VAE and the GAN share: conv stacks for any image size, checks,
the training loop (NaN check, history) and chunked sampling.

A trained generator is one pytree: the Flax variables of its networks plus
``image_shape`` (int32 [3]) and ``num_classes`` (int32 scalar, 0 when
unconditional) as array leaves, so a checkpoint alone says what it samples.

Devices: the trainers and samplers take the caller's mesh
(:mod:`dreamjax.plumbing.sharding`; default: every device). :func:`run_steps`
replicates the state and the training set on it and each step draws its batch
with :func:`dreamjax.plumbing.sharding.sample_batch`, split by rows, so each device
runs the forward and backward pass of its own rows; :func:`sample_in_chunks`
splits each chunk of latents by rows through :func:`dreamjax.plumbing.sharding.map_rows`.
"""

import functools
import hashlib
import json
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from dreamjax.plumbing import checkpoint, sharding
from dreamjax.training import loop
from dreamjax.training import seeds as seeds_lib
from dreamjax.errors import CheckpointError, ConfigError
from dreamjax.training.metrics import MetricWriter


class Encoder(nn.Module):
  """Stride-2 4×4 convs with leaky ReLU, flattened: the VAE encoder's and the
  discriminator's trunk."""
  widths: Sequence[int]

  @nn.compact
  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    x = x_NHWC
    for width in self.widths:
      x = nn.leaky_relu(nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME")(x), 0.2)
    return x.reshape((x.shape[0], -1))


def upsample_2x(x_NHWC: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x_NHWC, 2, axis=1), 2, axis=2)


def depth_to_space_2x(x_NHWC: jax.Array) -> jax.Array:
  """[B, H, W, 4C] -> [B, 2H, 2W, C]: channel ``(2a + b)·C + c`` goes to pixel (2h+a, 2w+b)."""
  b, h, w, c4 = x_NHWC.shape
  c = c4 // 4
  return (x_NHWC.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
          .reshape(b, 2 * h, 2 * w, c))


def icnr_init(base: Callable = nn.initializers.lecun_normal()) -> Callable:
  """Kernel init of a sub-pixel conv (Aitken et al. 2017, "ICNR"): the four
  sub-pixel phases start equal, so the layer starts as a low-resolution conv
  followed by nearest-neighbour upsampling, free of checkerboard artefacts."""

  def init(key, shape, dtype=jnp.float32):
    *window, c_in, c4 = shape
    return jnp.tile(base(key, (*window, c_in, c4 // 4), dtype), (1,) * (len(window) + 1) + (4,))

  return init


UPSAMPLING = ("nearest", "subpixel")


class Decoder(nn.Module):
  """Dense to a coarse grid, then one ×2 upsampling stage per width back to the image.

  ``upsample="subpixel"`` (DCGAN's topology, its transposed convs written as
  sub-pixel convs, Shi et al. 2016): each stage is a 3×3 conv at the coarse
  resolution to 4× the channels, then depth-to-space; the grid has
  ``widths[-1]`` channels, the stages ``widths[-2], ..., widths[0]`` and the
  last stage the image's channels, so no conv runs at full resolution. On
  XLA:CPU this is several times faster than ``"nearest"`` at the same widths,
  and ``nn.ConvTranspose`` runs far below a plain conv's rate (docs/methods.md).

  ``upsample="nearest"``: nearest-neighbour ×2 then a 3×3 conv per width
  (``widths[-1], ..., widths[0]``), then a 3×3 conv to the image at full
  resolution; that full-resolution stage holds most of the FLOPs.

  Neither has checkerboard artefacts at initialisation (Odena et al. 2016;
  the sub-pixel kernels start as :func:`icnr_init`).

  The grid is ``ceil(H / 2^L)`` so any image size works: the output is cropped
  to ``image_shape``. Returns pre-sigmoid logits. ``group_norm`` (GAN generator)
  normalises each image on its own, so samples never depend on their batch.
  """
  image_shape: tuple[int, int, int]
  widths: Sequence[int]
  group_norm: bool = False
  upsample: str = "nearest"

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    height, width, channels = self.image_shape
    scale = 2 ** len(self.widths)
    h0, w0 = -(-height // scale), -(-width // scale)

    def act(x):
      return nn.relu(nn.GroupNorm(num_groups=None, group_size=min(8, x.shape[-1]))(x)
                     if self.group_norm else x)

    x = act(nn.Dense(h0 * w0 * self.widths[-1])(h).reshape((-1, h0, w0, self.widths[-1])))
    if self.upsample == "subpixel":
      for features in reversed(self.widths[:-1]):
        x = act(depth_to_space_2x(
            nn.Conv(4 * features, (3, 3), padding="SAME", kernel_init=icnr_init())(x)))
      x = depth_to_space_2x(nn.Conv(4 * channels, (3, 3), padding="SAME",
                                    kernel_init=icnr_init())(x))
    elif self.upsample == "nearest":
      for features in reversed(self.widths):
        x = act(nn.Conv(features, (3, 3), padding="SAME")(upsample_2x(x)))
      x = nn.Conv(channels, (3, 3), padding="SAME")(x)
    else:
      raise ConfigError(f"upsample={self.upsample!r}; choose one of {', '.join(UPSAMPLING)}.")
    return x[:, :height, :width, :]


def one_hot(labels: jax.Array | None, num_classes: int) -> jax.Array | None:
  return None if labels is None or not num_classes else jax.nn.one_hot(labels, num_classes)


def with_condition(h: jax.Array, labels_onehot: jax.Array | None) -> jax.Array:
  return h if labels_onehot is None else jnp.concatenate([h, labels_onehot], axis=-1)


def validate_training(cfg, images, labels, *, lr_field: str) -> tuple[int, tuple[int, int, int]]:
  """Checks settings and inputs before any compute; returns (num_classes, image_shape).

  ``num_classes`` is 0 for an unconditional model.
  """
  checks = [
      ("steps", cfg.steps, cfg.steps >= 1, ">= 1"),
      ("batch_size", cfg.batch_size, cfg.batch_size >= 1, ">= 1"),
      ("latent_dim", cfg.latent_dim, cfg.latent_dim >= 1, ">= 1"),
      ("log_every", cfg.log_every, cfg.log_every >= 1, ">= 1"),
      ("sample_batch", cfg.sample_batch, cfg.sample_batch >= 1, ">= 1"),
      (lr_field, cfg[lr_field], cfg[lr_field] > 0, "> 0"),
      ("widths", tuple(cfg.widths), len(cfg.widths) >= 1 and all(int(w) >= 1 for w in cfg.widths),
       "a non-empty list of positive channel counts"),
  ]
  upsample = cfg.get("upsample", "nearest")
  checks.append(("upsample", repr(upsample), upsample in UPSAMPLING,
                 f"one of {', '.join(UPSAMPLING)}"))
  for name, value, ok, valid in checks:
    if not ok:
      raise ConfigError(f"{name}={value} is invalid: must be {valid}.")
  if cfg.conditional and labels is None:
    raise ConfigError("conditional=True needs labels, but none were given (source=pool has"
                      " none by design); use source=labeled or conditional=False.")
  if not cfg.conditional and labels is not None:
    raise ConfigError("conditional=False but labels were given; pass labels=None for an"
                      " unconditional model, or set conditional=True.")
  images = np.asarray(images)
  if images.ndim != 4 or len(images) == 0:
    raise ConfigError(f"images have shape {images.shape}; expected a non-empty [N, H, W, C].")
  num_classes = 0
  if labels is not None:
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
      raise ConfigError(f"labels have shape {labels.shape}; expected ({len(images)},).")
    num_classes = int(cfg.get("num_classes", 0)) or int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= num_classes:
      raise ConfigError(f"labels span [{labels.min()}, {labels.max()}] but num_classes="
                        f"{num_classes}; they must lie in [0, num_classes).")
  return num_classes, tuple(int(d) for d in images.shape[1:])


def describe(image_shape, num_classes) -> dict[str, jax.Array]:
  return {"image_shape": np.asarray(image_shape, np.int32),
          "num_classes": np.asarray(num_classes, np.int32)}


def shape_of(params) -> tuple[tuple[int, int, int], int]:
  return (tuple(int(d) for d in np.asarray(params["image_shape"])),
          int(np.asarray(params["num_classes"])))


def compile_step(step_fn: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """``jax.jit`` of a train step that donates its state (argument 0), replicated on ``mesh``.

  The step's own :func:`dreamjax.plumbing.sharding.sample_batch` splits the batch.
  """
  rep = sharding.replicated(mesh)
  return jax.jit(step_fn, in_shardings=rep, out_shardings=rep, donate_argnums=0)


# A generator's training is kept in its checkpoint folder at most this often (seconds).
CHECKPOINT_SECONDS = 300.0


def run_steps(step_fn: Callable, state: Any, images, labels, key: jax.Array, *, steps: int,
              log_every: int, desc: str, mesh: jax.sharding.Mesh | None = None,
              progress: Callable[[str], None] | None = None,
              metrics_dir: str | None = None, checkpoint_dir: str | None = None,
              fingerprint: str = "") -> tuple[Any, list[dict[str, float]]]:
  """Runs ``step_fn(state, images, labels, key) -> (state, metrics)`` ``steps`` times.

  ``step_fn`` is :func:`compile_step` of a step for ``mesh`` (default: every
  device); state, images, labels and key are replicated on it first. Step ``s`` gets
  ``fold_in(key, s)``; the loop is :func:`dreamjax.training.loop.run` (history rows,
  NaN check, progress line, TensorBoard events in ``metrics_dir``). With
  ``checkpoint_dir`` the state is kept there every :data:`CHECKPOINT_SECONDS` and a
  later call with the same ``fingerprint`` (:func:`training_fingerprint`) goes on
  from it, to the bits of an uninterrupted run; the caller removes the folder
  once it has kept the result.
  """
  mesh = sharding.default(mesh)
  log = progress or logging.info
  state, start, history, seconds_before = loop.resume(checkpoint_dir, fingerprint, state,
                                                      desc, log)
  images = jnp.asarray(images)
  labels = None if labels is None else jnp.asarray(labels, jnp.int32)
  state, images, labels, key = sharding.replicate(mesh, (state, images, labels, key))
  writer = MetricWriter(metrics_dir)
  hooks = loop.Hooks(writer=writer, divergence_hint="lower the learning rate or check the"
                                                    " input images (float32 in [0, 1]).",
                     **_checkpointing(checkpoint_dir, fingerprint, seconds_before, steps,
                                      log_every))
  try:
    return loop.run(step_fn, state, (images, labels), lambda s: jax.random.fold_in(key, s),
                    steps=steps, log_every=log_every, desc=desc, start_step=start,
                    history=history, hooks=hooks, log=log)
  finally:
    writer.close()


def _checkpointing(checkpoint_dir, fingerprint, seconds_before, steps,
                   log_every) -> dict[str, Any]:
  """The :class:`dreamjax.training.loop.Hooks` fields that keep a generator's training
  every :data:`CHECKPOINT_SECONDS`."""
  if not checkpoint_dir:
    return {}
  return {"save": loop.checkpoint_hook(checkpoint_dir, fingerprint, seconds_before,
                                       CHECKPOINT_SECONDS, steps),
          "save_every": max(int(log_every), 1)}


def training_fingerprint(desc: str, cfg, images, labels, keys) -> str:
  """What a generator's training depends on (its config, data and keys), so that a
  checkpoint of another is never resumed."""
  data = hashlib.sha256(np.ascontiguousarray(np.asarray(images)).tobytes())
  if labels is not None:
    data.update(np.ascontiguousarray(np.asarray(labels, np.int32)).tobytes())
  settings = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  keys = [np.asarray(jax.random.key_data(k)).tolist() for k in keys]
  text = json.dumps([desc, settings, keys, data.hexdigest()], sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def seconds_trained(checkpoint_dir: str | None) -> float:
  """The training seconds a checkpoint folder holds (0 when none): what a resumed
  run adds to its own time."""
  if not checkpoint_dir or not checkpoint.exists(checkpoint_dir):
    return 0.0
  try:
    return float(checkpoint.read_meta(checkpoint_dir).get("seconds", 0.0))
  except (CheckpointError, TypeError, ValueError):
    return 0.0


def train_prepared(prepare: Callable, desc: str, cfg, images, labels, key: jax.Array, *,
                   progress=None, mesh: jax.sharding.Mesh | None = None,
                   metrics_dir: str | None = None, checkpoint_dir: str | None = None
                   ) -> tuple[Any, list[dict[str, Any]]]:
  """A trainer's ``prepare(cfg, images, labels, key, mesh=)`` run for ``cfg.steps`` steps:
  ``(finish(state), history)`` (what ``train_vae`` and ``train_gan`` return).
  ``checkpoint_dir``: where the training is kept as it goes (:func:`run_steps`)."""
  mesh = sharding.default(mesh)
  state, step, finish = prepare(cfg, images, labels, key, mesh=mesh)
  fingerprint = (training_fingerprint(desc, cfg, images, labels, [key]) if checkpoint_dir
                 else "")
  state, history = run_steps(step, state, images, labels, jax.random.split(key)[1],
                             steps=int(cfg.steps), log_every=int(cfg.log_every), desc=desc,
                             progress=progress, mesh=mesh, metrics_dir=metrics_dir,
                             checkpoint_dir=checkpoint_dir, fingerprint=fingerprint)
  return finish(state), history


def train_seeds(prepare: Callable, desc: str, cfg, images_K, labels_K, keys,
                mesh: jax.sharding.Mesh | None = None, progress=None,
                checkpoint_dir: str | None = None) -> list[tuple[Any, list[dict[str, Any]]]]:
  """:func:`train_prepared` for K seeds at once: one program steps every seed.

  ``images_K`` ``[K, N, ...]`` (``labels_K`` ``[K, N]`` or None) are the
  seeds' training sets, ``keys`` their K trainer keys. Seed ``i`` gets what
  ``train_prepared(prepare, desc, cfg, images_K[i], labels_K[i], keys[i])``
  gives (its initial state, batches and latents come from its own key); the
  K steps run as one program, as :func:`dreamjax.training.seeds.how` decides for the
  generator step. Returns ``[(params, history)]`` per seed. ``checkpoint_dir``: where
  the K seeds' training is kept as it goes (:func:`run_steps`).
  """
  mesh = sharding.default(mesh)
  k = len(keys)
  prepared = [prepare(cfg, images_K[i], None if labels_K is None else labels_K[i], keys[i],
                      mesh=mesh) for i in range(k)]
  step = prepared[0][1]  # the same compiled step for every seed (same settings)
  state = seeds_lib.stack([p[0] for p in prepared])
  log = progress or logging.info
  fingerprint = (training_fingerprint(desc, cfg, images_K, labels_K, keys) if checkpoint_dir
                 else "")
  state, start, history, seconds_before = loop.resume(checkpoint_dir, fingerprint, state,
                                                      desc, log)
  roots = jnp.stack([jax.random.split(key)[1] for key in keys])
  images = jnp.asarray(images_K)
  labels = None if labels_K is None else jnp.asarray(labels_K, jnp.int32)
  state, images, labels, roots = sharding.replicate(mesh, (state, images, labels, roots))
  in_axes = (0, 0, None if labels is None else 0, 0)
  step_K = _seed_step(step, in_axes, mesh)
  hooks = loop.Hooks(divergence_hint="lower the learning rate or check the input images"
                     " (float32 in [0, 1]); seedI/ names the I-th of the seeds trained.",
                     **_checkpointing(checkpoint_dir, fingerprint, seconds_before,
                                      int(cfg.steps), int(cfg.log_every)))
  state, history = loop.run(step_K, state, (images, labels), lambda s: seeds_lib.fold_in_each(roots, s),
                            steps=int(cfg.steps), log_every=int(cfg.log_every), desc=desc,
                            start_step=start, history=history, hooks=hooks, log=log)
  out = []
  for i, (_, _, finish) in enumerate(prepared):
    prefix = f"seed{i}/"
    rows = [{"step": row["step"], **{key[len(prefix):]: v for key, v in row.items()
                                     if key.startswith(prefix)}} for row in history]
    out.append((finish(seeds_lib.unstack(state, i)), rows))
  return out


@functools.lru_cache(maxsize=16)
def _seed_step(step: Callable, in_axes, mesh) -> Callable:
  """The K-seed program of one compiled step, shared by every call with the same step."""
  rep = sharding.replicated(mesh)
  mapped = seeds_lib.map_seeds(step, in_axes=in_axes, workload="generator_step")

  def step_K(*args):
    # Each seed's metrics as scalars of their own ("seed{i}/loss"), so the loop's
    # window means are the ones a one-seed run logs, to the bit.
    state, metrics = mapped(*args)
    k = jax.tree.leaves(state)[0].shape[0]
    return state, {f"seed{i}/{name}": v[i] for name, v in metrics.items() for i in range(k)}

  return jax.jit(step_K, in_shardings=rep, out_shardings=rep, donate_argnums=0)


def sample_in_chunks(chunk_fn: Callable, weights: Any, key: jax.Array, labels: np.ndarray,
                     chunk: int, mesh: jax.sharding.Mesh) -> np.ndarray:
  """``chunk_fn(weights, labels_chunk, key_i) -> images`` over padded chunks of ``labels``.

  Chunk ``i`` uses ``fold_in(key, i)``, so a key and a count give the same
  images every time, and one shape means one compile. With JAX's default
  ``jax_threefry_partitionable`` a row's latent draw depends neither on the
  sharding nor on the padding rows, so the images equal one device's up to
  float rounding.
  """
  return sharding.map_rows(chunk_fn, weights, np.asarray(labels, np.int32), mesh=mesh,
                           chunk=chunk, key=key)


def sample(params, weights: str, key: jax.Array, labels, num: int | None, chunk: int,
           mesh: jax.sharding.Mesh | None, chunk_fn_of: Callable) -> np.ndarray:
  """What sampling is alike for every generator: ``[M, H, W, C]`` images in [0, 1].

  ``labels``/``num`` as :func:`sample_labels` takes them; ``chunk_fn_of(image_shape,
  num_classes, mesh)`` gives the family's ``fn(weights, labels_chunk, key)``, run on
  ``params[weights]`` in chunks of ``chunk`` rows over ``mesh`` (default: every
  device) by :func:`sample_in_chunks`.
  """
  image_shape, num_classes = shape_of(params)
  labels = sample_labels(num_classes, labels, num)
  mesh = sharding.default(mesh)
  chunk_fn = chunk_fn_of(image_shape, num_classes, mesh)  # a bad setting fails even for none
  if not len(labels):
    return np.zeros((0, *image_shape), np.float32)
  return sample_in_chunks(chunk_fn, params[weights], key, labels, int(chunk), mesh)


def sample_labels(num_classes: int, labels, num: int | None) -> np.ndarray:
  """The labels to sample: the requested ones, or ``num`` of them (class-balanced)."""
  if num_classes:
    if labels is None:
      if num is None:
        raise ConfigError("a conditional generator needs labels=[...] or num=N to sample.")
      return (np.arange(num) % num_classes).astype(np.int32)
    labels = np.asarray(labels, np.int32)
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= num_classes)):
      raise ConfigError(f"labels must be a 1-D list in [0, {num_classes}); got shape"
                        f" {labels.shape}.")
    if num is not None and num != len(labels):
      raise ConfigError(f"num={num} differs from len(labels)={len(labels)}; give one of them.")
    return labels
  if labels is not None:
    raise ConfigError("this generator is unconditional: sample with num=N, not labels.")
  if num is None or num < 0:
    raise ConfigError(f"num={num}: an unconditional generator needs num >= 0 images.")
  return np.zeros((num,), np.int32)


def check_range(name: str, value, low: float, high: float, *, closed_high: bool = True) -> None:
  ok = low <= value <= high if closed_high else low <= value < high
  if not ok:
    raise ConfigError(f"{name}={value} is outside its valid range"
                      f" [{low}, {high}{']' if closed_high else ')'}.")
