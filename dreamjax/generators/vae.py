"""Convolutional VAE, optionally class-conditional (labels enter the encoder
and the decoder as one-hot vectors), trained on the ELBO with Adam."""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamjax.plumbing import sharding
from dreamjax.configs import generator as generator_config
from dreamjax.errors import ConfigError
from dreamjax.generators import common


class VAE(nn.Module):
  image_shape: tuple[int, int, int]
  widths: tuple[int, ...]
  latent_dim: int
  num_classes: int = 0  # 0: unconditional
  upsample: str = "nearest"  # the decoder's, see common.Decoder

  def setup(self):
    self.encoder = common.Encoder(self.widths)
    self.to_stats = nn.Dense(2 * self.latent_dim)
    self.decoder = common.Decoder(self.image_shape, self.widths, upsample=self.upsample)

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
             latent_dim=int(cfg.latent_dim), num_classes=int(num_classes),
             upsample=str(cfg.get("upsample", "nearest")))


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
  return _adam(float(cfg[generator_config.vae_learning_rate_field(cfg)]))


@functools.lru_cache(maxsize=16)
def _adam(learning_rate: float) -> optax.GradientTransformation:
  # One object per setting, so the compiled step below is shared by every run
  # alike (the study trains one small VAE per seed).
  return optax.adam(learning_rate)


@functools.lru_cache(maxsize=16)
def _compiled_step(module, tx, batch_size: int, kl_weight: float, mesh,
                   kl_warmup_steps: int = 0) -> Callable:
  """The jitted step over ``mesh``, shared by every run with the same settings."""
  return common.compile_step(make_train_step(module, tx, batch_size, kl_weight, mesh,
                                             kl_warmup_steps=kl_warmup_steps), mesh)


def make_train_step(module: VAE, tx: optax.GradientTransformation, batch_size: int,
                    kl_weight: float, mesh: jax.sharding.Mesh | None = None, *,
                    kl_warmup_steps: int = 0) -> Callable:
  """``step(state, images, labels_or_None, key) -> (state, metrics)``, pure.

  ``state = {"variables", "opt_state"}``, plus ``"step"`` (int32 scalar) when
  ``kl_warmup_steps > 0``: the KL weight then rises linearly from 0 to
  ``kl_weight`` over that many steps. The batch is drawn on the device and
  split by rows over ``mesh`` (default: every device).
  """
  mesh = sharding.default(mesh)

  def loss_fn(variables, x, y, key, weight):
    reconstruction, kl = elbo_terms(module, variables, x, y, key)
    return reconstruction + weight * kl, (reconstruction, kl)

  def step(state, images, labels, key):
    k_idx, k_z = jax.random.split(key)
    x, y = sharding.sample_batch(mesh, k_idx, batch_size, images.shape[0], images, labels)
    weight = kl_weight
    if kl_warmup_steps:
      weight = kl_weight * jnp.minimum(1.0, (state["step"] + 1) / kl_warmup_steps)
    (loss, (rec, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["variables"], x, y, k_z, weight)
    updates, opt_state = tx.update(grads, state["opt_state"], state["variables"])
    new = {**state, "variables": optax.apply_updates(state["variables"], updates),
           "opt_state": opt_state}
    if kl_warmup_steps:
      new["step"] = state["step"] + 1
    # "loss" is the ELBO's negative (KL at full weight), comparable across warm-up.
    return new, {"loss": rec + kl_weight * kl, "reconstruction": rec, "kl": kl}

  return step


def train_vae(cfg, images, labels, key: jax.Array, *, progress=None,
              mesh: jax.sharding.Mesh | None = None, metrics_dir: str | None = None,
              checkpoint_dir: str | None = None):
  """Trains a VAE on ``images`` (conditional iff ``labels`` / ``cfg.conditional``).

  Returns ``(params, history)``: params as :func:`init_params` lays them out,
  history one dict per ``cfg.log_every`` steps (step, loss, reconstruction, kl).
  ``mesh`` (default: every device): each step's batch is split by rows over it
  and the returned params are replicated on it; the batch
  (``cfg.generator_batch_size``, or ``cfg.batch_size`` where that is 0) must
  be a multiple of its size.
  Raises ``ConfigError`` on bad settings before compute, ``DivergenceError``
  naming the step if a loss turns NaN/Inf.
  ``checkpoint_dir``: where the training is kept as it goes, and goes on from
  (:func:`dreamjax.generators.common.run_steps`).
  """
  return common.train_prepared(prepare_training, "vae", cfg, images, labels, key,
                               progress=progress, mesh=mesh, metrics_dir=metrics_dir,
                               checkpoint_dir=checkpoint_dir)


def prepare_training(cfg, images, labels, key: jax.Array, *,
                     mesh: jax.sharding.Mesh | None = None):
  """``(state, jitted step, finish)`` of :func:`train_vae`, which runs the step
  ``cfg.steps`` times (:func:`dreamjax.generators.common.run_steps`) and returns
  ``finish(state)``; exposed so a study of training length can run it in parts."""
  lr_field = generator_config.vae_learning_rate_field(cfg)
  num_classes, image_shape = common.validate_training(cfg, images, labels, lr_field=lr_field)
  common.check_range("kl_warmup_steps", cfg.get("kl_warmup_steps", 0), 0, float("inf"))
  batch_field, batch_size = generator_config.generator_batch_size(cfg)
  if batch_size < 1:
    raise ConfigError(f"{batch_field}={batch_size} is invalid: must be >= 1.")
  mesh = sharding.default(mesh)
  sharding.check_divisible(mesh, batch_size, what=batch_field)
  module = make_module(cfg, image_shape, num_classes)
  k_init = jax.random.split(key)[0]
  params = init_params(cfg, image_shape, num_classes, k_init)
  tx = make_optimizer(cfg)
  state = {"variables": params["vae"], "opt_state": tx.init(params["vae"])}
  warmup = int(cfg.get("kl_warmup_steps", 0))
  if warmup:
    state["step"] = jnp.zeros((), jnp.int32)
  step = _compiled_step(module, tx, batch_size, float(cfg.kl_weight), mesh, warmup)
  return state, step, lambda state: {**params, "vae": state["variables"]}


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _decode_prior(module: VAE, mesh, temperature, variables, labels, key):
  # The latents follow the labels' rows, split over ``mesh``.
  z = temperature * jax.random.normal(key, (labels.shape[0], module.latent_dim))
  z = sharding.constrain_rows(mesh, z)
  logits = module.apply(variables, z, labels if module.num_classes else None,
                        method=VAE.decode)
  return jax.nn.sigmoid(logits)


def sample_vae(cfg, params, key: jax.Array, labels=None, num: int | None = None, *,
               mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
  """Decoder means of prior draws, ``[M, H, W, C]`` in [0, 1].

  The latents are N(0, T²I) with ``T = cfg.sample_temperature`` (default 1,
  the prior itself; T < 1 trades variety for typical samples).

  Conditional models take ``labels`` (or ``num``, class-balanced); unconditional
  ones take ``num``. The same key and count give the same images, on any
  ``mesh`` (default: every device) up to float rounding.
  """
  common.check_range("sample_temperature", cfg.get("sample_temperature", 1.0), 0.0, float("inf"))
  temperature = float(cfg.get("sample_temperature", 1.0))
  return common.sample(params, "vae", key, labels, num, cfg.sample_batch, mesh,
                       lambda shape, k, mesh: functools.partial(
                           _decode_prior, make_module(cfg, shape, k), mesh, temperature))
