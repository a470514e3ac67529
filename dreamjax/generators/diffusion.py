"""Flow-matching diffusion model (rectified flow), optionally class-conditional.

The model is a small U-Net that predicts a velocity: for a training image
``x0`` (pixels mapped from [0, 1] to [-1, 1]), Gaussian noise ``eps`` and a
time ``t ~ U(0, 1)``, the noisy image is the straight line
``x_t = (1 - t)·x0 + t·eps`` and the target is its velocity ``eps - x0``
(Liu et al. 2023; Lipman et al. 2023). Sampling integrates the learned ODE
from pure noise at ``t = 1`` to an image at ``t = 0`` with Euler steps; the
number of steps is a sampling setting, not a property of the trained model.

Conditional models (``data="labeled"``) embed the class and add it to the
time embedding; during training a share of the labels
(``diffusion_label_dropout``) is replaced by a null class, so the same
network also learns the unconditional velocity, and sampling mixes the two
with classifier-free guidance (Ho & Salimans 2022):
``v = v_null + w·(v_class - v_null)``, ``w = diffusion_guidance`` (1: the
conditional model alone; larger: samples more typical of their class).

U-Net: the image is padded to a multiple of the coarsest stride, folded
``diffusion_patch`` × ``diffusion_patch`` pixels into channels (space to
depth, so no convolution runs at full resolution with patch 2, as the VAE's
and GAN's sub-pixel decoders avoid it), then one residual block per
resolution on the way down and up (``diffusion_widths``, one ×2 stride
between resolutions), one in the middle, skip connections by concatenation,
GroupNorm + SiLU, a sinusoidal time embedding and zero-initialised output
layers (each residual block starts as the identity and the model as v = 0).
Samples come from an exponential moving average of the weights
(``diffusion_ema_decay``), warmed up so that a short run is not dominated by
its initial weights.
"""

import functools
import math
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

PATCHES = (1, 2)


def _group_norm(x: jax.Array) -> jax.Array:
  # Up to 8 groups that divide the channels, so any width works.
  return nn.GroupNorm(num_groups=math.gcd(int(x.shape[-1]), 8))(x)


def time_embedding(t: jax.Array, dim: int) -> jax.Array:
  """Sinusoidal features ``[B, dim]`` of times ``t`` in [0, 1] (scaled to 0..1000, as DDPM)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
  args = 1000.0 * t[:, None].astype(jnp.float32) * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def space_to_depth_2x(x_NHWC: jax.Array) -> jax.Array:
  """[B, 2H, 2W, C] -> [B, H, W, 4C], the inverse of :func:`common.depth_to_space_2x`."""
  b, h2, w2, c = x_NHWC.shape
  return (x_NHWC.reshape(b, h2 // 2, 2, w2 // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
          .reshape(b, h2 // 2, w2 // 2, 4 * c))


class ResBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
    h = nn.Conv(self.features, (3, 3), padding="SAME")(nn.silu(_group_norm(x)))
    h = h + nn.Dense(self.features)(nn.silu(emb))[:, None, None, :]
    h = nn.Conv(self.features, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros)(
        nn.silu(_group_norm(h)))
    skip = x if x.shape[-1] == self.features else nn.Conv(self.features, (1, 1))(x)
    return skip + h


class UNet(nn.Module):
  """Velocity ``v(x_t, t, label)`` of images in [-1, 1]-space, the input's shape.

  ``labels`` are class indices in ``[0, num_classes]``, where ``num_classes``
  is the null class (no label); unconditional models take None.
  """
  image_shape: tuple[int, int, int]
  widths: tuple[int, ...]
  num_classes: int = 0  # 0: unconditional
  patch: int = 2

  @nn.compact
  def __call__(self, x_NHWC: jax.Array, t: jax.Array, labels: jax.Array | None) -> jax.Array:
    height, width, channels = self.image_shape
    multiple = self.patch * 2 ** (len(self.widths) - 1)
    pad_h, pad_w = -height % multiple, -width % multiple
    x = jnp.pad(x_NHWC, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    if self.patch == 2:
      x = space_to_depth_2x(x)
    dim = 4 * self.widths[0]
    emb = nn.Dense(dim)(nn.silu(nn.Dense(dim)(time_embedding(t, self.widths[0]))))
    if self.num_classes:
      emb = emb + nn.Embed(self.num_classes + 1, dim)(labels)
    h = nn.Conv(self.widths[0], (3, 3), padding="SAME")(x)
    skips = []
    for i, features in enumerate(self.widths):
      h = ResBlock(features)(h, emb)
      skips.append(h)
      if i < len(self.widths) - 1:
        h = nn.Conv(self.widths[i + 1], (3, 3), strides=(2, 2), padding="SAME")(h)
    h = ResBlock(self.widths[-1])(h, emb)
    for i in reversed(range(len(self.widths))):
      h = ResBlock(self.widths[i])(jnp.concatenate([h, skips[i]], axis=-1), emb)
      if i > 0:
        h = nn.Conv(self.widths[i - 1], (3, 3), padding="SAME")(common.upsample_2x(h))
    out = nn.Conv(self.patch ** 2 * channels, (3, 3), padding="SAME",
                  kernel_init=nn.initializers.zeros)(nn.silu(_group_norm(h)))
    if self.patch == 2:
      out = common.depth_to_space_2x(out)
    return out[:, :height, :width, :]


def make_module(cfg, image_shape, num_classes: int) -> UNet:
  return UNet(image_shape=tuple(int(d) for d in image_shape),
              widths=tuple(int(w) for w in cfg.diffusion_widths),
              num_classes=int(num_classes), patch=int(cfg.diffusion_patch))


def init_params(cfg, image_shape, num_classes: int, key: jax.Array):
  module = make_module(cfg, image_shape, num_classes)
  x = jnp.zeros((1, *image_shape), jnp.float32)
  labels = jnp.zeros((1,), jnp.int32) if num_classes else None
  variables = module.init(key, x, jnp.zeros((1,), jnp.float32), labels)
  return {"diffusion": variables, **common.describe(image_shape, num_classes)}


def validate_settings(cfg, *, training: bool, conditional: bool = False) -> None:
  """The diffusion fields of ``cfg``, checked before any compute (one-line ConfigErrors)."""
  widths = tuple(cfg.diffusion_widths)
  if not widths or not all(int(w) == w and w >= 1 for w in widths):
    raise ConfigError(f"diffusion_widths={widths} is invalid: must be a non-empty list of"
                      " positive channel counts.")
  if cfg.diffusion_patch not in PATCHES:
    raise ConfigError(f"diffusion_patch={cfg.diffusion_patch} is invalid: must be one of"
                      f" {', '.join(map(str, PATCHES))}.")
  steps = cfg.diffusion_sample_steps
  if int(steps) != steps or steps < 1:
    raise ConfigError(f"diffusion_sample_steps={steps} is invalid: must be a whole number >= 1.")
  common.check_range("diffusion_guidance", cfg.diffusion_guidance, 0.0, float("inf"))
  if not training:
    return
  common.check_range("diffusion_label_dropout", cfg.diffusion_label_dropout, 0.0, 1.0,
                     closed_high=False)
  common.check_range("diffusion_ema_decay", cfg.diffusion_ema_decay, 0.0, 1.0, closed_high=False)
  if conditional and cfg.diffusion_guidance != 1.0 and cfg.diffusion_label_dropout <= 0.0:
    raise ConfigError(f"diffusion_guidance={cfg.diffusion_guidance} needs"
                      " diffusion_label_dropout > 0: guidance subtracts the unconditional"
                      " velocity, which the model learns only from dropped labels (or set"
                      " diffusion_guidance=1).")


def make_optimizer(cfg) -> optax.GradientTransformation:
  return _adam(float(cfg.diffusion_learning_rate))


@functools.lru_cache(maxsize=16)
def _adam(learning_rate: float) -> optax.GradientTransformation:
  # One object per setting, so the compiled step below is shared by every run
  # alike (the study trains one small model per seed). Clipping guards the
  # first steps, whose loss is the largest.
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))


def flow_loss(module: UNet, variables, x01, labels, t, eps) -> jax.Array:
  """Mean squared error of the predicted velocity, for images ``x01`` in [0, 1]."""
  x0 = 2.0 * x01 - 1.0
  tb = t[:, None, None, None]
  xt = (1.0 - tb) * x0 + tb * eps
  return jnp.mean((module.apply(variables, xt, t, labels) - (eps - x0)) ** 2)


@functools.lru_cache(maxsize=16)
def _compiled_step(module, tx, batch_size: int, label_dropout: float, ema_decay: float,
                   mesh) -> Callable:
  """The jitted step over ``mesh``, shared by every run with the same settings."""
  return common.compile_step(make_train_step(module, tx, batch_size, label_dropout, ema_decay,
                                             mesh), mesh)


def make_train_step(module: UNet, tx: optax.GradientTransformation, batch_size: int,
                    label_dropout: float = 0.1, ema_decay: float = 0.0,
                    mesh: jax.sharding.Mesh | None = None) -> Callable:
  """``step(state, images, labels_or_None, key) -> (state, metrics)``, pure.

  ``state = {"variables", "opt_state", "step"}``, plus ``"ema"`` (the weight
  average) when ``ema_decay > 0``; its decay at step ``s`` is
  ``min(ema_decay, (1 + s) / (10 + s))``, so the first weights fade fast. The
  batch, times and noise are split by rows over ``mesh`` (default: every
  device).
  """
  mesh = sharding.default(mesh)
  conditional = bool(module.num_classes)

  def step(state, images, labels, key):
    k_idx, k_t, k_eps, k_drop = jax.random.split(key, 4)
    x, y = sharding.sample_batch(mesh, k_idx, batch_size, images.shape[0], images,
                                 labels if conditional else None)
    t = jax.random.uniform(k_t, (batch_size,))
    eps = jax.random.normal(k_eps, x.shape)
    if conditional:
      dropped = jax.random.bernoulli(k_drop, label_dropout, (batch_size,))
      y = jnp.where(dropped, module.num_classes, y)
    t, eps, y = sharding.constrain_rows(mesh, (t, eps, y))
    loss, grads = jax.value_and_grad(
        lambda v: flow_loss(module, v, x, y, t, eps))(state["variables"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["variables"])
    variables = optax.apply_updates(state["variables"], updates)
    new = {**state, "variables": variables, "opt_state": opt_state, "step": state["step"] + 1}
    if ema_decay:
      s = state["step"].astype(jnp.float32)
      decay = jnp.minimum(ema_decay, (1.0 + s) / (10.0 + s))
      new["ema"] = optax.incremental_update(variables, state["ema"], 1.0 - decay)
    return new, {"loss": loss}

  return step


def train_diffusion(cfg, images, labels, key: jax.Array, *, progress=None,
                    mesh: jax.sharding.Mesh | None = None, metrics_dir: str | None = None,
                    checkpoint_dir: str | None = None):
  """Trains a flow-matching model on ``images`` (conditional iff ``labels`` / ``cfg.conditional``).

  Returns ``(params, history)``: params as :func:`init_params` lays them out
  (the weight average when ``diffusion_ema_decay > 0``), history one dict per
  ``cfg.log_every`` steps (step, loss: the velocity's mean squared error).
  ``mesh`` as for ``train_vae``. Raises ``ConfigError`` on bad settings before
  compute, ``DivergenceError`` naming the step if the loss turns NaN/Inf.
  ``checkpoint_dir``: where the training is kept as it goes, and goes on from
  (:func:`dreamjax.generators.common.run_steps`).
  """
  return common.train_prepared(prepare_training, "diffusion", cfg, images, labels, key,
                               progress=progress, mesh=mesh, metrics_dir=metrics_dir,
                               checkpoint_dir=checkpoint_dir)


def prepare_training(cfg, images, labels, key: jax.Array, *,
                     mesh: jax.sharding.Mesh | None = None):
  """``(state, jitted step, finish)`` of :func:`train_diffusion`, as the VAE's and GAN's."""
  num_classes, image_shape = common.validate_training(cfg, images, labels,
                                                      lr_field="diffusion_learning_rate")
  validate_settings(cfg, training=True, conditional=bool(num_classes))
  batch_field, batch_size = generator_config.generator_batch_size(cfg, "diffusion")
  if batch_size < 1:
    raise ConfigError(f"{batch_field}={batch_size} is invalid: must be >= 1.")
  mesh = sharding.default(mesh)
  sharding.check_divisible(mesh, batch_size, what=batch_field)
  module = make_module(cfg, image_shape, num_classes)
  params = init_params(cfg, image_shape, num_classes, jax.random.split(key)[0])
  tx = make_optimizer(cfg)
  ema_decay = float(cfg.diffusion_ema_decay)
  state = {"variables": params["diffusion"], "opt_state": tx.init(params["diffusion"]),
           "step": jnp.zeros((), jnp.int32)}
  if ema_decay:
    state["ema"] = jax.tree.map(jnp.copy, params["diffusion"])  # own buffers: both are donated
  step = _compiled_step(module, tx, batch_size, float(cfg.diffusion_label_dropout), ema_decay,
                        mesh)

  def finish(state):
    return {**params, "diffusion": state["ema" if ema_decay else "variables"]}

  return state, step, finish


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _euler_sample(module: UNet, mesh, steps: int, guidance: float, variables, labels, key):
  """Integrates the velocity from noise (t = 1) to images (t = 0); pixels in [0, 1]."""
  n = labels.shape[0]
  x = sharding.constrain_rows(mesh, jax.random.normal(key, (n, *module.image_shape)))
  times = jnp.linspace(1.0, 0.0, steps + 1)
  guided = bool(module.num_classes) and guidance != 1.0
  null = jnp.full_like(labels, module.num_classes)

  def velocity(x, t):
    tb = jnp.full((n,), t)
    if not module.num_classes:
      return module.apply(variables, x, tb, None)
    if not guided:
      return module.apply(variables, x, tb, labels)
    # The class and the null velocity in one batch: one network call per step.
    both = module.apply(variables, jnp.concatenate([x, x]), jnp.concatenate([tb, tb]),
                        jnp.concatenate([labels, null]))
    v_class, v_null = both[:n], both[n:]
    return v_null + guidance * (v_class - v_null)

  def body(i, x):
    return x + (times[i + 1] - times[i]) * velocity(x, times[i])

  x = jax.lax.fori_loop(0, steps, body, x)
  return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0).astype(jnp.float32)


def sample_diffusion(cfg, params, key: jax.Array, labels=None, num: int | None = None, *,
                     mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
  """Euler samples ``[M, H, W, C]`` in [0, 1] (same calling rules as ``sample_vae``).

  ``cfg.diffusion_sample_steps`` Euler steps; a conditional model guided with
  weight ``cfg.diffusion_guidance``. The same key and count give the same
  images.
  """
  validate_settings(cfg, training=False)
  return common.sample(params, "diffusion", key, labels, num, cfg.sample_batch, mesh,
                       lambda shape, k, mesh: functools.partial(
                           _euler_sample, make_module(cfg, shape, k), mesh,
                           int(cfg.diffusion_sample_steps), float(cfg.diffusion_guidance)))
