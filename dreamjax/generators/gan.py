"""DCGAN-style GAN, optionally class-conditional, with the usual stabilisers.

Generator: latent (+ one-hot label) → dense grid → ×2 upsampling stages
(:class:`dreamjax.generators.common.Decoder`: sub-pixel convs, DCGAN's
topology, or nearest-neighbour + conv) with GroupNorm (per-image, so a sample
never depends on its batch) → sigmoid. Discriminator: stride-2 convs with
leaky ReLU; conditional models add a projection term ⟨embed(y), features⟩
(Miyato & Koyama 2018). Losses: the non-saturating generator loss and
one-sided label smoothing on real images (or the hinge loss); both players use
Adam with β1 = ``cfg.beta1`` (DCGAN: 0.5). Optional and off by default:
the hinge loss, DiffAugment and an EMA of the generator's weights (none
raised sample quality within the study's budgets, see
``dreamjax/configs/generator.py``) and an R1 penalty (it more than doubles a
step's cost; its effect on quality was not measured).
"""

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamjax.plumbing import sharding
from dreamjax.configs import generator as generator_config
from dreamjax.errors import ConfigError
from dreamjax.generators import common


class Generator(nn.Module):
  image_shape: tuple[int, int, int]
  widths: tuple[int, ...]
  num_classes: int = 0
  upsample: str = "nearest"  # see common.Decoder

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array | None) -> jax.Array:
    h = common.with_condition(z, common.one_hot(labels, self.num_classes))
    return jax.nn.sigmoid(common.Decoder(self.image_shape, self.widths, group_norm=True,
                                         upsample=self.upsample)(h))


class Discriminator(nn.Module):
  widths: tuple[int, ...]
  num_classes: int = 0

  @nn.compact
  def __call__(self, x_NHWC: jax.Array, labels: jax.Array | None) -> jax.Array:
    """Real-vs-fake logits, shape [B]."""
    # Pixels to [-1, 1]: zero-centred inputs train the first conv faster.
    h = common.Encoder(self.widths)(2.0 * x_NHWC - 1.0)
    logit = nn.Dense(1)(h)[:, 0]
    if self.num_classes:
      logit += jnp.sum(nn.Embed(self.num_classes, h.shape[-1])(labels) * h, axis=-1)
    return logit


def make_modules(cfg, image_shape, num_classes: int) -> tuple[Generator, Discriminator]:
  widths = tuple(int(w) for w in cfg.widths)
  return (Generator(tuple(image_shape), widths, int(num_classes),
                    str(cfg.get("upsample", "nearest"))),
          Discriminator(widths, int(num_classes)))


def init_params(cfg, image_shape, num_classes: int, key: jax.Array):
  gen, disc = make_modules(cfg, image_shape, num_classes)
  k_g, k_d = jax.random.split(key)
  labels = jnp.zeros((1,), jnp.int32) if num_classes else None
  return {"generator": gen.init(k_g, jnp.zeros((1, cfg.latent_dim)), labels),
          "discriminator": disc.init(k_d, jnp.zeros((1, *image_shape)), labels),
          **common.describe(image_shape, num_classes)}


def make_optimizer(cfg) -> optax.GradientTransformation:
  return _adam(float(cfg.gan_learning_rate), float(cfg.beta1), float(cfg.get("beta2", 0.999)))


@functools.lru_cache(maxsize=16)
def _adam(learning_rate: float, beta1: float, beta2: float = 0.999) -> optax.GradientTransformation:
  # One object per setting, so the compiled step below is shared by every run
  # alike (the study trains one small GAN per seed).
  return optax.adam(learning_rate, b1=beta1, b2=beta2)


LOSSES = ("ns", "hinge")
AUGMENTS = ("translation", "cutout", "brightness", "contrast")


def step_options(cfg) -> dict:
  """The train step's stabilisers, from ``cfg`` (absent fields: the plain DCGAN step)."""
  policy = tuple(p for p in str(cfg.get("diffaug", "")).replace(" ", "").split(",") if p)
  for p in policy:
    if p not in AUGMENTS:
      raise ConfigError(f"diffaug={cfg.diffaug!r}: {p!r} is not one of {', '.join(AUGMENTS)}.")
  loss = str(cfg.get("gan_loss", "ns"))
  if loss not in LOSSES:
    raise ConfigError(f"gan_loss={loss!r}; choose one of {', '.join(LOSSES)}.")
  common.check_range("ema_decay", cfg.get("ema_decay", 0.0), 0.0, 1.0, closed_high=False)
  common.check_range("r1_gamma", cfg.get("r1_gamma", 0.0), 0.0, float("inf"))
  return {"loss": loss, "diffaug": policy, "ema_decay": float(cfg.get("ema_decay", 0.0)),
          "r1_gamma": float(cfg.get("r1_gamma", 0.0))}


def diff_augment(x_NHWC: jax.Array, key: jax.Array, policy: Sequence[str]) -> jax.Array:
  """DiffAugment (Zhao et al. 2020): random, differentiable per-image transforms.

  Applied alike to the real and the generated images D sees (and G's gradient
  flows through them), so D cannot memorise a small training set pixel for
  pixel. ``translation``: shift by up to 1/8 of the size with zero fill;
  ``cutout``: a zeroed square of half the size; ``brightness``: add U(-0.25,
  0.25); ``contrast``: scale the deviation from the image mean by U(0.5, 1.5).
  Shifts are one-hot matrix products (cheap, exact gradients, no scatter).
  """
  b, h, w, _ = x_NHWC.shape
  keys = jax.random.split(key, 4)
  x = x_NHWC
  if "brightness" in policy:
    x = x + jax.random.uniform(keys[0], (b, 1, 1, 1), minval=-0.25, maxval=0.25)
  if "contrast" in policy:
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * jax.random.uniform(keys[1], (b, 1, 1, 1), minval=0.5, maxval=1.5) + mean
  if "translation" in policy:
    sy, sx = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
    ky, kx = jax.random.split(keys[2])
    dy = jax.random.randint(ky, (b,), -sy, sy + 1)
    dx = jax.random.randint(kx, (b,), -sx, sx + 1)
    # out[i] = in[i - d]: one-hot [B, out, in] matrices.
    shift_y = (jnp.arange(h)[None, :, None] - jnp.arange(h)[None, None, :]
               == dy[:, None, None]).astype(x.dtype)
    shift_x = (jnp.arange(w)[None, :, None] - jnp.arange(w)[None, None, :]
               == dx[:, None, None]).astype(x.dtype)
    x = jnp.einsum("bij,bjwc->biwc", shift_y, x)
    x = jnp.einsum("bvw,bhwc->bhvc", shift_x, x)
  if "cutout" in policy:
    ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    ky, kx = jax.random.split(keys[3])
    cy = jax.random.randint(ky, (b, 1, 1, 1), 0, h + (1 - ch % 2))
    cx = jax.random.randint(kx, (b, 1, 1, 1), 0, w + (1 - cw % 2))
    rows = jnp.arange(h)[None, :, None, None]
    cols = jnp.arange(w)[None, None, :, None]
    inside = ((rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch)
              & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw))
    x = jnp.where(inside, 0.0, x)
  return x


@functools.lru_cache(maxsize=16)
def _compiled_step(gen, disc, tx, batch_size: int, latent_dim: int, real_label: float,
                   mesh, loss: str = "ns", diffaug: tuple[str, ...] = (), ema_decay: float = 0.0,
                   r1_gamma: float = 0.0) -> Callable:
  """The jitted step over ``mesh``, shared by every run with the same settings."""
  return common.compile_step(
      make_train_step(gen, disc, tx, batch_size, latent_dim, real_label, mesh, loss=loss,
                      diffaug=diffaug, ema_decay=ema_decay, r1_gamma=r1_gamma), mesh)


def make_train_step(gen: Generator, disc: Discriminator, tx: optax.GradientTransformation,
                    batch_size: int, latent_dim: int, real_label: float,
                    mesh: jax.sharding.Mesh | None = None, *, loss: str = "ns",
                    diffaug: Sequence[str] = (), ema_decay: float = 0.0,
                    r1_gamma: float = 0.0) -> Callable:
  """``step(state, images, labels_or_None, key) -> (state, metrics)``, pure.

  One discriminator update, then one generator update on fresh latents.
  ``state = {"generator", "discriminator", "opt_g", "opt_d"}``, plus
  ``"ema"`` (a copy of the generator's variables) when ``ema_decay > 0``.
  Options as in :func:`step_options`: ``loss`` "ns" (non-saturating, with
  ``real_label`` smoothing) or "hinge"; ``diffaug`` a DiffAugment policy
  (:func:`diff_augment`); ``ema_decay`` of the generator's weight average;
  ``r1_gamma`` of the R1 penalty on D's input gradient at real images. Real
  images, labels and latents are split by rows over ``mesh`` (default: every
  device).
  """
  mesh = sharding.default(mesh)
  diffaug = tuple(diffaug)
  conditional = bool(gen.num_classes)
  augment = (lambda x, k: diff_augment(x, k, diffaug)) if diffaug else (lambda x, k: x)

  def d_loss_fn(d_vars, real, fake, y, k_aug):
    k_real, k_fake = jax.random.split(k_aug)
    real_in = augment(real, k_real)
    real_logits = disc.apply(d_vars, real_in, y)
    fake_logits = disc.apply(d_vars, augment(fake, k_fake), y)
    if loss == "hinge":
      value = jax.nn.relu(1.0 - real_logits).mean() + jax.nn.relu(1.0 + fake_logits).mean()
    else:
      value = (optax.sigmoid_binary_cross_entropy(real_logits, real_label).mean()
               + optax.sigmoid_binary_cross_entropy(fake_logits, 0.0).mean())
    if r1_gamma:
      # R1 (Mescheder et al. 2018): penalise D's slope at the (augmented) real images.
      grad_x = jax.grad(lambda x: disc.apply(d_vars, x, y).sum())(real_in)
      value = value + 0.5 * r1_gamma * jnp.sum(grad_x ** 2, axis=(1, 2, 3)).mean()
    return value, (jax.nn.sigmoid(real_logits).mean(), jax.nn.sigmoid(fake_logits).mean())

  def g_loss_fn(g_vars, d_vars, z, y, k_aug):
    logits = disc.apply(d_vars, augment(gen.apply(g_vars, z, y), k_aug), y)
    if loss == "hinge":
      return -logits.mean()
    # Non-saturating: maximise log D(G(z)) instead of minimising log(1 - D(G(z))).
    return optax.sigmoid_binary_cross_entropy(logits, 1.0).mean()

  def step(state, images, labels, key):
    k_idx, k_z1, k_z2, k_y, k_a1, k_a2 = jax.random.split(key, 6)
    real, y = sharding.sample_batch(mesh, k_idx, batch_size, images.shape[0], images,
                                    labels if conditional else None)
    z = sharding.constrain_rows(mesh, jax.random.normal(k_z1, (batch_size, latent_dim)))
    fake = gen.apply(state["generator"], z, y)
    (d_loss, (d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        state["discriminator"], real, jax.lax.stop_gradient(fake), y, k_a1)
    d_updates, opt_d = tx.update(d_grads, state["opt_d"], state["discriminator"])
    d_vars = optax.apply_updates(state["discriminator"], d_updates)
    # The generator's labels follow the training set's class frequencies.
    y_g = labels[jax.random.randint(k_y, (batch_size,), 0, images.shape[0])] if conditional else None
    z = jax.random.normal(k_z2, (batch_size, latent_dim))
    z, y_g = sharding.constrain_rows(mesh, (z, y_g))
    g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state["generator"], d_vars, z, y_g, k_a2)
    g_updates, opt_g = tx.update(g_grads, state["opt_g"], state["generator"])
    g_vars = optax.apply_updates(state["generator"], g_updates)
    new = {**state, "generator": g_vars, "discriminator": d_vars, "opt_g": opt_g, "opt_d": opt_d}
    if ema_decay:
      new["ema"] = optax.incremental_update(g_vars, state["ema"], 1.0 - ema_decay)
    return new, {"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake}

  return step


def train_gan(cfg, images, labels, key: jax.Array, *, progress=None,
              mesh: jax.sharding.Mesh | None = None, metrics_dir: str | None = None,
              checkpoint_dir: str | None = None):
  """Trains a GAN on ``images`` (conditional iff ``labels`` / ``cfg.conditional``).

  Returns ``(params, history)``; history rows hold step, d_loss, g_loss and
  D's mean output on real (d_real) and generated (d_fake) images.
  ``mesh`` (default: every device): each step's real images, labels and
  latents are split by rows over it and the returned params are replicated on
  it; the batch (``cfg.generator_batch_size``, or ``cfg.batch_size`` where
  that is 0) must be a multiple of its size. Raises
  ``ConfigError`` before compute on bad settings and ``DivergenceError``
  naming the step on a NaN/Inf loss.
  ``checkpoint_dir``: where the training is kept as it goes, and goes on from
  (:func:`dreamjax.generators.common.run_steps`).
  """
  return common.train_prepared(prepare_training, "gan", cfg, images, labels, key,
                               progress=progress, mesh=mesh, metrics_dir=metrics_dir,
                               checkpoint_dir=checkpoint_dir)


def prepare_training(cfg, images, labels, key: jax.Array, *,
                     mesh: jax.sharding.Mesh | None = None):
  """``(state, jitted step, finish)`` of :func:`train_gan`, which runs the step
  ``cfg.steps`` times (:func:`dreamjax.generators.common.run_steps`) and returns
  ``finish(state)``; exposed so a study of training length can run it in parts."""
  num_classes, image_shape = common.validate_training(cfg, images, labels,
                                                      lr_field="gan_learning_rate")
  common.check_range("beta1", cfg.beta1, 0.0, 1.0, closed_high=False)
  common.check_range("real_label", cfg.real_label, 0.5, 1.0)
  batch_field, batch_size = generator_config.generator_batch_size(cfg)
  if batch_size < 1:
    raise ConfigError(f"{batch_field}={batch_size} is invalid: must be >= 1.")
  mesh = sharding.default(mesh)
  sharding.check_divisible(mesh, batch_size, what=batch_field)
  gen, disc = make_modules(cfg, image_shape, num_classes)
  k_init = jax.random.split(key)[0]
  params = init_params(cfg, image_shape, num_classes, k_init)
  options = step_options(cfg)
  tx = make_optimizer(cfg)
  state = {"generator": params["generator"], "discriminator": params["discriminator"],
           "opt_g": tx.init(params["generator"]), "opt_d": tx.init(params["discriminator"])}
  if options["ema_decay"]:
    state["ema"] = jax.tree.map(jnp.copy, params["generator"])  # own buffers: both are donated
  step = _compiled_step(gen, disc, tx, batch_size, int(cfg.latent_dim),
                        float(cfg.real_label), mesh, **options)

  def finish(state):
    # With ema_decay the weight average is the generator that samples.
    return {**params, "generator": state["ema" if options["ema_decay"] else "generator"],
            "discriminator": state["discriminator"]}

  return state, step, finish


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _generate(gen: Generator, latent_dim: int, mesh, variables, labels, key):
  # The latents follow the labels' rows, split over ``mesh``.
  z = sharding.constrain_rows(mesh, jax.random.normal(key, (labels.shape[0], latent_dim)))
  return gen.apply(variables, z, labels if gen.num_classes else None)


def sample_gan(cfg, params, key: jax.Array, labels=None, num: int | None = None, *,
               mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
  """Generator outputs ``[M, H, W, C]`` in [0, 1] (same calling rules as ``sample_vae``)."""
  return common.sample(params, "generator", key, labels, num, cfg.sample_batch, mesh,
                       lambda shape, k, mesh: functools.partial(
                           _generate, make_modules(cfg, shape, k)[0], int(cfg.latent_dim), mesh))
