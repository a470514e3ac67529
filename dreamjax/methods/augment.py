"""Classical label-preserving augmentation and noise, on device, built on dm-pix.

Each transform is ``fn(key, images_NHWC) -> images_NHWC``: pure, batched (each
image draws its own strengths from the batch key), jittable, and deterministic
for a key. Pixels stay in [0, 1]. The same ``fn`` runs inside the jitted train step
(:func:`batch_transform`, a new key every step) or offline (:func:`offline`,
which writes the rows of an augmented-dataset file for the fixed-budget arms).
"""

import functools
import math
from typing import Any, Callable

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from dreamjax.methods import adversarial
from dreamjax.plumbing import sharding
from dreamjax.configs.attack import attack_config, classical_config, noise_config  # noqa: F401
from dreamjax.errors import ConfigError

ImageFn = Callable[[jax.Array, jax.Array], jax.Array]
CHOICES = ("none", "classical", "noise", "fgsm", "pgd")


def _check(name: str, value, ok: bool, valid: str) -> None:
  if not ok:
    raise ConfigError(f"{name}={value!r} is invalid: must be {valid}.")


def validate_classical(cfg, image_shape=None, prefix: str = "classical") -> None:
  _check(f"{prefix}.translate", cfg.translate,
         int(cfg.translate) == cfg.translate and cfg.translate >= 0
         and (image_shape is None or cfg.translate < min(image_shape[:2]) // 2),
         "an integer >= 0" + ("" if image_shape is None
                              else f" and < {min(image_shape[:2]) // 2} (half the image)"))
  _check(f"{prefix}.rotate_degrees", cfg.rotate_degrees, 0 <= cfg.rotate_degrees <= 180,
         "in [0, 180]")
  _check(f"{prefix}.flip", cfg.flip, isinstance(cfg.flip, bool), "True or False")
  _check(f"{prefix}.brightness", cfg.brightness, 0 <= cfg.brightness <= 1, "in [0, 1]")
  _check(f"{prefix}.contrast", cfg.contrast, 0 <= cfg.contrast < 1, "in [0, 1)")


def validate_noise(cfg, prefix: str = "noise") -> None:
  _check(f"{prefix}.std", cfg.std, cfg.std >= 0, ">= 0")


def classical_fn(cfg) -> ImageFn:
  """Random translation, rotation, optional flip, brightness and contrast (``cfg``: see
  :func:`dreamjax.configs.attack.classical_config`)."""
  validate_classical(cfg)
  return _classical_fn(int(cfg.translate), math.radians(cfg.rotate_degrees), bool(cfg.flip),
                       float(cfg.brightness), float(cfg.contrast))


# Equal settings give the same function object, so the jitted steps and
# :func:`offline` that take it are traced and compiled once, not once per call.
@functools.lru_cache(maxsize=32)
def _classical_fn(translate: int, angle: float, flip: bool, brightness: float,
                  contrast: float) -> ImageFn:

  def one(u, image_HWC):
    """``u``: 6 uniforms in [0, 1) that fix this image's transform."""
    x = image_HWC
    if translate:  # black borders: Fashion-MNIST's background is 0
      padded = jnp.pad(x, ((translate, translate), (translate, translate), (0, 0)))
      dy, dx = (jnp.floor(u[:2] * (2 * translate + 1))).astype(jnp.int32)
      x = jax.lax.dynamic_slice(padded, (dy, dx, 0), x.shape)
    if angle:
      x = pix.rotate(x, (2 * u[2] - 1) * angle, mode="constant", cval=0.0)
    if flip:
      x = jnp.where(u[3] < 0.5, pix.flip_left_right(x), x)
    if brightness:
      x = pix.adjust_brightness(x, (2 * u[4] - 1) * brightness)
    if contrast:
      x = pix.adjust_contrast(x, 1.0 + (2 * u[5] - 1) * contrast)
    return jnp.clip(x, 0.0, 1.0)

  def fn(key, images_NHWC):
    # One draw for the whole batch: a threefry call per image and transform
    # (pix.random_*) cost seconds of XLA:CPU compile time each.
    u = jax.random.uniform(key, (images_NHWC.shape[0], 6))
    return jax.vmap(one)(u, images_NHWC)

  return fn


def shift_fn(translate: int) -> ImageFn:
  """A random shift of up to ``translate`` pixels with black borders, nothing else: the
  classical transform's shift alone (FixMatch's weak augmentation, without its flip)."""
  _check("translate", translate, int(translate) == translate and translate >= 0,
         "an integer >= 0")
  return _classical_fn(int(translate), 0.0, False, 0.0, 0.0)


def strong_config():
  """FixMatch's strong augmentation: the classical transforms at larger strengths, then
  Gaussian pixel noise, then a cutout square (a strength of 0 turns that part off)."""
  c = ml_collections.ConfigDict()
  c.translate = 4           # max shift in pixels (the classical transform's: 2)
  c.rotate_degrees = 30.0   # max rotation either way (classical: 10)
  c.brightness = 0.3        # max additive brightness change (classical: 0.1)
  c.contrast = 0.5          # contrast factor drawn from [1 - c, 1 + c] (classical: 0.2)
  c.noise_std = 0.1         # Gaussian pixel noise, the noise arms' σ
  c.cutout = 10             # side in pixels of a square set to cutout_fill (DeVries &
  c.cutout_fill = 0.5       # Taylor 2017); grey, as FixMatch's, so it occludes on black too
  return c


def strong_fn(cfg) -> ImageFn:
  """FixMatch's strong augmentation (``cfg``: :func:`strong_config`): a classical transform
  at ``cfg``'s strengths (no flip), Gaussian noise, and a cutout square centred anywhere
  in the image (so sometimes partly outside it). Pixels stay in [0, 1]."""
  validate_classical(_as_classical(cfg), prefix="strong")
  _check("strong.noise_std", cfg.noise_std, cfg.noise_std >= 0, ">= 0")
  _check("strong.cutout", cfg.cutout, int(cfg.cutout) == cfg.cutout and cfg.cutout >= 0,
         "an integer >= 0")
  _check("strong.cutout_fill", cfg.cutout_fill, 0 <= cfg.cutout_fill <= 1, "in [0, 1]")
  return _strong_fn(int(cfg.translate), math.radians(cfg.rotate_degrees), float(cfg.brightness),
                    float(cfg.contrast), float(cfg.noise_std), int(cfg.cutout),
                    float(cfg.cutout_fill))


def _as_classical(cfg):
  """The classical-transform part of a :func:`strong_config`."""
  return ml_collections.ConfigDict({
      "translate": cfg.translate, "rotate_degrees": cfg.rotate_degrees, "flip": False,
      "brightness": cfg.brightness, "contrast": cfg.contrast})


@functools.lru_cache(maxsize=32)
def _strong_fn(translate: int, angle: float, brightness: float, contrast: float, std: float,
               cutout: int, fill: float) -> ImageFn:
  classical = _classical_fn(translate, angle, False, brightness, contrast)

  def fn(key, images_NHWC):
    k_classical, k_noise, k_cut = jax.random.split(key, 3)
    x = classical(k_classical, images_NHWC)
    if std:
      x = _noise_fn(std)(k_noise, x)
    if cutout:
      x = _cutout(k_cut, x, cutout, fill)
    return x

  return fn


def _cutout(key, images_NHWC, size: int, fill: float):
  """A ``size``-pixel square of each image set to ``fill``, its centre uniform in the image."""
  n, h, w = images_NHWC.shape[:3]
  centre = jax.random.uniform(key, (n, 2)) * jnp.asarray([h, w], jnp.float32)
  top, left = [jnp.floor(centre[:, i] - size / 2)[:, None, None] for i in (0, 1)]
  rows = jnp.arange(h, dtype=jnp.float32)[None, :, None]
  cols = jnp.arange(w, dtype=jnp.float32)[None, None, :]
  inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
  return jnp.where(inside[..., None], jnp.asarray(fill, images_NHWC.dtype), images_NHWC)


def noise_fn(cfg) -> ImageFn:
  """Additive Gaussian pixel noise of ``cfg.std``, clipped to [0, 1]."""
  validate_noise(cfg)
  return _noise_fn(float(cfg.std))


@functools.lru_cache(maxsize=32)
def _noise_fn(std: float) -> ImageFn:

  def fn(key, images_NHWC):
    noise = jax.random.normal(key, images_NHWC.shape, images_NHWC.dtype)
    return jnp.clip(images_NHWC + std * noise, 0.0, 1.0)

  return fn


def noise_distances(images, std: float, key) -> tuple[float, float]:
  """Mean L2 and mean L∞ distance of ``noise_fn`` (σ ``std``, clipped) from ``images``."""
  x = jnp.asarray(images, jnp.float32)
  d = (_noise_fn(float(std))(key, x) - x).reshape(len(x), -1)
  return float(jnp.mean(jnp.linalg.norm(d, axis=1))), float(jnp.mean(jnp.max(jnp.abs(d), 1)))


def match_noise_std(images, mean_l2: float, key, iterations: int = 40) -> float:
  """The σ of Gaussian pixel noise (clipped to [0, 1], as :func:`noise_fn`) whose mean L2
  distance from ``images`` is ``mean_l2``.

  Clipping removes part of the noise on saturated pixels, so σ is found by
  bisection on the images themselves rather than from ``mean_l2 / sqrt(pixels)``.
  """
  if not mean_l2 > 0:
    raise ConfigError(f"match_noise_std: mean_l2={mean_l2} must be > 0.")
  lo, hi = 0.0, 1.0
  while noise_distances(images, hi, key)[0] < mean_l2:
    hi *= 2
    if hi > 1e3:
      raise ConfigError(f"no noise σ reaches a mean L2 distance of {mean_l2} on these images.")
  for _ in range(iterations):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if noise_distances(images, mid, key)[0] < mean_l2 else (lo, mid)
  return 0.5 * (lo + hi)


def offline(images, labels, key, fn: ImageFn, copies: int = 1, chunk_size: int = 1024, *,
            mesh: Mesh | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``copies`` transformed copies of every image, for an augmented-dataset file.

  Returns ``(images, labels, source_positions)``: copy ``c`` of image ``i`` is
  row ``c·N + i`` and its source position is ``i`` (map it through the split's
  ``labeled_index`` to get the file's ``source_index``). Deterministic per key;
  chunks are split by rows over ``mesh`` (default: every device), and a row's
  random draw does not depend on the padding, so the copies equal one device's.
  """
  _check("copies", copies, copies >= 1, ">= 1")
  _check("chunk_size", chunk_size, chunk_size >= 1, ">= 1")
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  mesh = sharding.default(mesh)
  apply = _offline_fn(fn)
  out = np.concatenate([
      sharding.map_rows(apply, (), images, mesh=mesh, chunk=chunk_size,
                        key=jax.random.fold_in(key, c)) for c in range(copies)])
  positions = np.tile(np.arange(len(images)), copies)
  return out, labels[positions], positions


@functools.lru_cache(maxsize=32)
def _offline_fn(fn: ImageFn):
  """``fn`` as :func:`dreamjax.plumbing.sharding.map_rows` calls it; one jitted program per
  ``fn``."""
  return jax.jit(lambda weights, x, key: fn(key, x))


def online_transform(fn: ImageFn, fraction: float = 1.0):
  """A :data:`dreamjax.training.train.BatchTransform`: ``fn`` on the first ``round(fraction·B)``
  images of every (randomly drawn) batch, with the step's key; labels unchanged.

  The online form of augmentation: a fresh transform every time an image is
  drawn, inside the jitted step.
  """
  _check("fraction", fraction, 0.0 <= fraction <= 1.0, "in [0, 1]")

  def transform(state, images, labels, key):
    del state
    n = int(round(fraction * images.shape[0]))  # static: shapes are known when traced
    if n == 0:
      return images, labels
    if n == images.shape[0]:
      return fn(key, images), labels
    return images.at[:n].set(fn(key, images[:n])), labels

  return transform


def validate_config(config) -> None:
  """Checks ``config.augment`` and the block it reads, before any compute."""
  choice = config.augment
  _check("augment", choice, choice in CHOICES, f"one of {', '.join(CHOICES)}")
  if choice == "classical":
    validate_classical(config.classical)
  elif choice == "noise":
    validate_noise(config.noise)
  elif choice in ("fgsm", "pgd"):
    a = config.attack
    adversarial.validate_attack(eps=a.eps, steps=a.steps, step_size=a.step_size or None,
                                norm=a.norm, fraction=a.fraction)


def batch_transform(config, model) -> Any:
  """The :data:`dreamjax.training.train.BatchTransform` that ``config.augment`` names.

  ``none``: None; ``classical``/``noise``: ``config.classical``/``config.noise``
  on every image; ``fgsm``/``pgd``: adversarial training with ``config.attack``.
  """
  validate_config(config)
  choice = config.augment
  if choice == "none":
    return None
  if choice in ("fgsm", "pgd"):
    a = config.attack
    return adversarial.adversarial_batch_transform(
        model, method=choice, eps=a.eps, steps=a.steps, fraction=a.fraction,
        step_size=a.step_size or None, norm=a.norm)
  fn = classical_fn(config.classical) if choice == "classical" else noise_fn(config.noise)
  return online_transform(fn)
