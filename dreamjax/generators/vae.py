"""Convolutional VAE, optionally class-conditional (labels enter the encoder
and the decoder as one-hot vectors), trained on the ELBO with Adam."""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamjax import sharding
from dreamjax.generators import common


class VAE(nn.Module):
  image_shape: tuple[int, int, int]
  widths: tuple[int, ...]
  latent_dim: int
  num_classes: int = 0  # 0: unconditional

  def setup(self):
    self.encoder = common.Encoder(self.widths)
    self.to_stats = nn.Dense(2 * self.latent_dim)
    self.decoder = common.Decoder(self.image_shape, self.widths)

  def decode(self, z: jax.Array, labels: jax.Array | None) -> jax.Array:
    """Pixel logits; sigmoid gives the Bernoulli means (the sample images)."""
    return self.decoder(common.with_condition(z, common.one_hot(labels, self.num_classes)))

  def __call__(self, x_NHWC: jax.Array, labels: jax.Array | None, key: jax.Array):
    cond = common.one_hot(labels, self.num_classes)
    mean, log_var = jnp.split(self.to_stats(common.with_condition(self.encoder(x_NHWC), cond)),
                              2, axis=-1)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
    return self.decode(z, labels), mean, log_var


def make_module(cfg, image_shape, num_classes: int) -> VAE:
  return VAE(image_shape=tuple(image_shape), widths=tuple(int(w) for w in cfg.widths),
             latent_dim=int(cfg.latent_dim), num_classes=int(num_classes))


def init_params(cfg, image_shape, num_classes: int, key: jax.Array):
  module = make_module(cfg, image_shape, num_classes)
  x = jnp.zeros((1, *image_shape), jnp.float32)
  labels = jnp.zeros((1,), jnp.int32) if num_classes else None
  variables = module.init(key, x, labels, key)
  return {"vae": variables, **common.describe(image_shape, num_classes)}


def elbo_terms(module: VAE, variables, x_NHWC, labels, key):
  """(reconstruction, KL), each per image and averaged over the batch.

  Pixels in [0, 1] are treated as Bernoulli means (continuous cross-entropy),
  the usual likelihood for Fashion-MNIST-like images.
  """
  logits, mean, log_var = module.apply(variables, x_NHWC, labels, key)
  reconstruction = optax.sigmoid_binary_cross_entropy(logits, x_NHWC).sum((1, 2, 3)).mean()
  kl = 0.5 * (jnp.exp(log_var) + mean ** 2 - 1.0 - log_var).sum(-1).mean()
  return reconstruction, kl


def make_optimizer(cfg) -> optax.GradientTransformation:
  return _adam(float(cfg.learning_rate))


@functools.lru_cache(maxsize=16)
def _adam(learning_rate: float) -> optax.GradientTransformation:
  # One object per setting, so the compiled step below is shared by every run
  # alike (the study trains one small VAE per seed).
  return optax.adam(learning_rate)


@functools.lru_cache(maxsize=16)
def _compiled_step(module, tx, batch_size: int, kl_weight: float, mesh) -> Callable:
  """The jitted step over ``mesh``, shared by every run with the same settings."""
  return common.compile_step(make_train_step(module, tx, batch_size, kl_weight, mesh), mesh)


def make_train_step(module: VAE, tx: optax.GradientTransformation, batch_size: int,
                    kl_weight: float, mesh: jax.sharding.Mesh | None = None) -> Callable:
  """``step(state, images, labels_or_None, key) -> (state, metrics)``, pure.

  ``state = {"variables", "opt_state"}``; the batch is drawn on the device and
  split by rows over ``mesh`` (default: every device).
  """
  mesh = sharding.default(mesh)

  def loss_fn(variables, x, y, key):
    reconstruction, kl = elbo_terms(module, variables, x, y, key)
    return reconstruction + kl_weight * kl, (reconstruction, kl)

  def step(state, images, labels, key):
    k_idx, k_z = jax.random.split(key)
    x, y = sharding.sample_batch(mesh, k_idx, batch_size, images.shape[0], images, labels)
    (loss, (rec, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["variables"], x, y, k_z)
    updates, opt_state = tx.update(grads, state["opt_state"], state["variables"])
    state = {"variables": optax.apply_updates(state["variables"], updates), "opt_state": opt_state}
    return state, {"loss": loss, "reconstruction": rec, "kl": kl}

  return step


def train_vae(cfg, images, labels, key: jax.Array, *, progress=None,
              mesh: jax.sharding.Mesh | None = None, metrics_dir: str | None = None):
  """Trains a VAE on ``images`` (conditional iff ``labels`` / ``cfg.conditional``).

  Returns ``(params, history)``: params as :func:`init_params` lays them out,
  history one dict per ``cfg.log_every`` steps (step, loss, reconstruction, kl).
  ``mesh`` (default: every device): each step's batch is split by rows over
  it and the returned params are replicated on it; ``cfg.batch_size`` must be
  a multiple of its size. Raises ``ConfigError`` on bad settings before compute,
  ``DivergenceError`` naming the step if a loss turns NaN/Inf.
  """
  num_classes, image_shape = common.validate_training(cfg, images, labels,
                                                      lr_field="learning_rate")
  mesh = sharding.default(mesh)
  sharding.check_divisible(mesh, int(cfg.batch_size))
  module = make_module(cfg, image_shape, num_classes)
  k_init, k_train = jax.random.split(key)
  params = init_params(cfg, image_shape, num_classes, k_init)
  tx = make_optimizer(cfg)
  state = {"variables": params["vae"], "opt_state": tx.init(params["vae"])}
  step = _compiled_step(module, tx, int(cfg.batch_size), float(cfg.kl_weight), mesh)
  state, history = common.run_steps(step, state, images, labels, k_train, steps=int(cfg.steps),
                                    log_every=int(cfg.log_every), desc="vae", progress=progress,
                                    mesh=mesh, metrics_dir=metrics_dir)
  return {**params, "vae": state["variables"]}, history


@functools.partial(jax.jit, static_argnums=(0, 1))
def _decode_prior(module: VAE, mesh, variables, labels, key):
  # The latents follow the labels' rows, split over ``mesh``.
  z = sharding.constrain_rows(mesh, jax.random.normal(key, (labels.shape[0], module.latent_dim)))
  logits = module.apply(variables, z, labels if module.num_classes else None,
                        method=VAE.decode)
  return jax.nn.sigmoid(logits)


def sample_vae(cfg, params, key: jax.Array, labels=None, num: int | None = None, *,
               mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
  """Decoder means of prior draws, ``[M, H, W, C]`` in [0, 1].

  Conditional models take ``labels`` (or ``num``, class-balanced); unconditional
  ones take ``num``. The same key and count give the same images, on any
  ``mesh`` (default: every device) up to float rounding.
  """
  image_shape, num_classes = common.shape_of(params)
  labels = common.sample_labels(num_classes, labels, num)
  module = make_module(cfg, image_shape, num_classes)
  if not len(labels):
    return np.zeros((0, *image_shape), np.float32)
  mesh = sharding.default(mesh)
  return common.sample_in_chunks(functools.partial(_decode_prior, module, mesh), params["vae"],
                                 key, labels, int(cfg.sample_batch), mesh)
