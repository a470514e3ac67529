"""DCGAN-style GAN, optionally class-conditional, with the usual stabilisers.

Generator: latent (+ one-hot label) → dense grid → transposed convs with
GroupNorm (per-image, so a sample never depends on its batch) → sigmoid.
Discriminator: stride-2 convs with leaky ReLU; conditional models add a
projection term ⟨embed(y), features⟩ (Miyato & Koyama 2018). Losses: the
non-saturating generator loss and one-sided label smoothing on real images;
both players use Adam with β1 = ``cfg.beta1`` (DCGAN: 0.5).
"""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamjax import sharding
from dreamjax.generators import common


class Generator(nn.Module):
  image_shape: tuple[int, int, int]
  widths: tuple[int, ...]
  num_classes: int = 0

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array | None) -> jax.Array:
    h = common.with_condition(z, common.one_hot(labels, self.num_classes))
    return jax.nn.sigmoid(common.Decoder(self.image_shape, self.widths, group_norm=True)(h))


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
  return (Generator(tuple(image_shape), widths, int(num_classes)),
          Discriminator(widths, int(num_classes)))


def init_params(cfg, image_shape, num_classes: int, key: jax.Array):
  gen, disc = make_modules(cfg, image_shape, num_classes)
  k_g, k_d = jax.random.split(key)
  labels = jnp.zeros((1,), jnp.int32) if num_classes else None
  return {"generator": gen.init(k_g, jnp.zeros((1, cfg.latent_dim)), labels),
          "discriminator": disc.init(k_d, jnp.zeros((1, *image_shape)), labels),
          **common.describe(image_shape, num_classes)}


def make_optimizer(cfg) -> optax.GradientTransformation:
  return _adam(float(cfg.gan_learning_rate), float(cfg.beta1))


@functools.lru_cache(maxsize=16)
def _adam(learning_rate: float, beta1: float) -> optax.GradientTransformation:
  # One object per setting, so the compiled step below is shared by every run
  # alike (the study trains one small GAN per seed).
  return optax.adam(learning_rate, b1=beta1)


@functools.lru_cache(maxsize=16)
def _compiled_step(gen, disc, tx, batch_size: int, latent_dim: int, real_label: float,
                   mesh) -> Callable:
  """The jitted step over ``mesh``, shared by every run with the same settings."""
  return common.compile_step(
      make_train_step(gen, disc, tx, batch_size, latent_dim, real_label, mesh), mesh)


def make_train_step(gen: Generator, disc: Discriminator, tx: optax.GradientTransformation,
                    batch_size: int, latent_dim: int, real_label: float,
                    mesh: jax.sharding.Mesh | None = None) -> Callable:
  """``step(state, images, labels_or_None, key) -> (state, metrics)``, pure.

  One discriminator update, then one generator update on fresh latents.
  ``state = {"generator", "discriminator", "opt_g", "opt_d"}``. Real images,
  labels and latents are split by rows over ``mesh`` (default: every device).
  """
  mesh = sharding.default(mesh)
  conditional = bool(gen.num_classes)

  def d_loss_fn(d_vars, real, fake, y):
    real_logits = disc.apply(d_vars, real, y)
    fake_logits = disc.apply(d_vars, fake, y)
    loss = (optax.sigmoid_binary_cross_entropy(real_logits, real_label).mean()
            + optax.sigmoid_binary_cross_entropy(fake_logits, 0.0).mean())
    return loss, (jax.nn.sigmoid(real_logits).mean(), jax.nn.sigmoid(fake_logits).mean())

  def g_loss_fn(g_vars, d_vars, z, y):
    # Non-saturating: maximise log D(G(z)) instead of minimising log(1 - D(G(z))).
    return optax.sigmoid_binary_cross_entropy(disc.apply(d_vars, gen.apply(g_vars, z, y), y),
                                              1.0).mean()

  def step(state, images, labels, key):
    k_idx, k_z1, k_z2, k_y = jax.random.split(key, 4)
    real, y = sharding.sample_batch(mesh, k_idx, batch_size, images.shape[0], images,
                                    labels if conditional else None)
    z = sharding.constrain_rows(mesh, jax.random.normal(k_z1, (batch_size, latent_dim)))
    fake = gen.apply(state["generator"], z, y)
    (d_loss, (d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        state["discriminator"], real, jax.lax.stop_gradient(fake), y)
    d_updates, opt_d = tx.update(d_grads, state["opt_d"], state["discriminator"])
    d_vars = optax.apply_updates(state["discriminator"], d_updates)
    # The generator's labels follow the training set's class frequencies.
    y_g = labels[jax.random.randint(k_y, (batch_size,), 0, images.shape[0])] if conditional else None
    z = jax.random.normal(k_z2, (batch_size, latent_dim))
    z, y_g = sharding.constrain_rows(mesh, (z, y_g))
    g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state["generator"], d_vars, z, y_g)
    g_updates, opt_g = tx.update(g_grads, state["opt_g"], state["generator"])
    state = {"generator": optax.apply_updates(state["generator"], g_updates),
             "discriminator": d_vars, "opt_g": opt_g, "opt_d": opt_d}
    return state, {"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake}

  return step


def train_gan(cfg, images, labels, key: jax.Array, *, progress=None,
              mesh: jax.sharding.Mesh | None = None, metrics_dir: str | None = None):
  """Trains a GAN on ``images`` (conditional iff ``labels`` / ``cfg.conditional``).

  Returns ``(params, history)``; history rows hold step, d_loss, g_loss and
  D's mean output on real (d_real) and generated (d_fake) images.
  ``mesh`` (default: every device): each step's real images, labels and
  latents are split by rows over it and the returned params are replicated
  on it; ``cfg.batch_size`` must be a multiple of its size. Raises
  ``ConfigError`` before compute on bad settings and ``DivergenceError``
  naming the step on a NaN/Inf loss.
  """
  num_classes, image_shape = common.validate_training(cfg, images, labels,
                                                      lr_field="gan_learning_rate")
  common.check_range("beta1", cfg.beta1, 0.0, 1.0, closed_high=False)
  common.check_range("real_label", cfg.real_label, 0.5, 1.0)
  mesh = sharding.default(mesh)
  sharding.check_divisible(mesh, int(cfg.batch_size))
  gen, disc = make_modules(cfg, image_shape, num_classes)
  k_init, k_train = jax.random.split(key)
  params = init_params(cfg, image_shape, num_classes, k_init)
  tx = make_optimizer(cfg)
  state = {"generator": params["generator"], "discriminator": params["discriminator"],
           "opt_g": tx.init(params["generator"]), "opt_d": tx.init(params["discriminator"])}
  step = _compiled_step(gen, disc, tx, int(cfg.batch_size), int(cfg.latent_dim),
                        float(cfg.real_label), mesh)
  state, history = common.run_steps(step, state, images, labels, k_train, steps=int(cfg.steps),
                                    log_every=int(cfg.log_every), desc="gan", progress=progress,
                                    mesh=mesh, metrics_dir=metrics_dir)
  return {**params, "generator": state["generator"],
          "discriminator": state["discriminator"]}, history


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _generate(gen: Generator, latent_dim: int, mesh, variables, labels, key):
  # The latents follow the labels' rows, split over ``mesh``.
  z = sharding.constrain_rows(mesh, jax.random.normal(key, (labels.shape[0], latent_dim)))
  return gen.apply(variables, z, labels if gen.num_classes else None)


def sample_gan(cfg, params, key: jax.Array, labels=None, num: int | None = None, *,
               mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
  """Generator outputs ``[M, H, W, C]`` in [0, 1] (same calling rules as ``sample_vae``)."""
  image_shape, num_classes = common.shape_of(params)
  labels = common.sample_labels(num_classes, labels, num)
  gen, _ = make_modules(cfg, image_shape, num_classes)
  if not len(labels):
    return np.zeros((0, *image_shape), np.float32)
  mesh = sharding.default(mesh)
  return common.sample_in_chunks(functools.partial(_generate, gen, int(cfg.latent_dim), mesh),
                                 params["generator"], key, labels, int(cfg.sample_batch), mesh)
