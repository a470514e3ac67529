"""What each arm adds to the labeled set, and how it changes training.

An arm turns a seed's labeled set into a training set: extra generated images
with labels (dreams, adversarial and classical copies, generator samples), an
on-the-fly batch transform (``pgd_train``) or pretrained first layers
(``ae_pretrain``, ``pretext_transfer``). Everything a generator is trained on
is either the seed's labeled set or the unlabeled pool, whose labels are never
read. Dreams, adversarial sets and pseudo-labels come from the seed's own
baseline classifier, never from the oracle.
"""

import dataclasses
import time
import zlib
from typing import Any, Callable

import jax
import numpy as np

from dreamjax import train
from dreamjax.errors import ConfigError


@dataclasses.dataclass
class Generated:
  """One seed's extra training images, with provenance."""
  images: np.ndarray
  labels: np.ndarray
  source_index: np.ndarray  # position in the official training split, -1 if none
  seconds: float
  info: dict[str, Any] = dataclasses.field(default_factory=dict)


def arm_key(seed: int, arm: str) -> jax.Array:
  """A key for (seed, arm) that no other arm or the training shares."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 2), zlib.crc32(arm.encode()))


def base_arm(arm: str) -> str:
  return arm.split("@")[0]


def repeat(images, labels, index, copies: int):
  return (np.concatenate([images] * copies), np.concatenate([labels] * copies),
          np.concatenate([index] * copies))


# --- offline sets made from each real labeled image ------------------------

def classical(ctx, seed, images, labels, index, key) -> Generated:
  from dreamjax import augment  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  x, y, pos = augment.offline(images, labels, key, augment.classical_fn(augment.classical_config()),
                              copies=ctx.config.copies)
  return Generated(np.asarray(x), np.asarray(y), index[np.asarray(pos)], time.perf_counter() - t0)


def noise(ctx, seed, images, labels, index, key) -> Generated:
  from dreamjax import augment  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  x, y, pos = augment.offline(images, labels, key, augment.noise_fn(augment.noise_config()),
                              copies=ctx.config.copies)
  return Generated(np.asarray(x), np.asarray(y), index[np.asarray(pos)], time.perf_counter() - t0)


def dream_arm(ctx, arm, seed, images, labels, index, key) -> Generated:
  from dreamjax import dream  # pylint: disable=g-import-not-at-top
  cfg = ctx.dream_config(arm)
  model, variables = ctx.baseline(seed)
  x, y, idx = repeat(images, labels, index, ctx.config.copies)
  res = dream.dream_dataset(model, variables, x, y, cfg, key, chunk_size=ctx.config.dream_chunk,
                            progress=ctx.log)
  info = {"mean_l2": float(np.mean(res.l2)), "mean_linf": float(np.mean(res.linf)),
          "objective_gain": float(np.mean(res.objective_gain)),
          "image_steps_per_s": float(res.image_steps_per_s)}
  return Generated(np.asarray(res.images), y, idx, res.seconds, info)


def adversarial_arm(ctx, arm, seed, images, labels, index, key) -> Generated:
  from dreamjax import adversarial  # pylint: disable=g-import-not-at-top
  model, variables = ctx.baseline(seed)
  x, y, idx = repeat(images, labels, index, ctx.config.copies)
  t0 = time.perf_counter()
  adv, info = adversarial.adversarial_dataset(
      model, variables, x, y, key, method=arm, eps=ctx.config.attack.eps,
      steps=ctx.config.attack.pgd_steps if arm == "pgd" else 1)
  info = {k: v for k, v in dict(info).items() if isinstance(v, (int, float))}
  return Generated(np.asarray(adv), y, idx, time.perf_counter() - t0, info)


# --- generators ---------------------------------------------------------------

def small_generator(ctx, arm, seed, images, labels, index, key) -> Generated:
  """Conditional VAE/GAN trained on the seed's labeled set; samples its labels."""
  from dreamjax import generators  # pylint: disable=g-import-not-at-top
  kind = arm.split("_")[0]
  gcfg = ctx.generator_config(kind, conditional=True)
  t0 = time.perf_counter()
  k_train, k_sample = jax.random.split(key)
  trainer = generators.train_vae if kind == "vae" else generators.train_gan
  sampler = generators.sample_vae if kind == "vae" else generators.sample_gan
  params, history = trainer(gcfg, images, labels, k_train, progress=ctx.log)
  want = np.concatenate([labels] * ctx.config.copies)
  x = np.asarray(sampler(gcfg, params, k_sample, labels=want))
  info = {"final_losses": history[-1] if history else {}}
  return Generated(x, want.astype(np.int32), np.full(len(want), -1, np.int64),
                   time.perf_counter() - t0, info)


def pool_generator(ctx, arm, seed, images, labels, index, key) -> Generated:
  """Unconditional VAE/GAN trained on the unlabeled pool, pseudo-labeled.

  Labels come from the seed's baseline classifier, keeping samples whose
  confidence reaches ``pseudo_label_threshold``; sampling repeats (up to 8
  rounds) until M·N images are kept.
  """
  from dreamjax import generators  # pylint: disable=g-import-not-at-top
  kind = arm.split("_")[0]
  gcfg, params, train_seconds = ctx.pool_generator(kind)
  model, variables = ctx.baseline(seed)
  want = len(labels) * ctx.config.copies
  sampler = generators.sample_vae if kind == "vae" else generators.sample_gan
  t0 = time.perf_counter()
  kept_x, kept_y, drawn = [], [], 0
  for r in range(8):
    x = np.asarray(sampler(gcfg, params, jax.random.fold_in(key, r), num=want))
    xk, yk, _ = generators.pseudo_label(model, variables, x, threshold=ctx.config.pseudo_label_threshold)
    drawn += len(x)
    kept_x.append(np.asarray(xk))
    kept_y.append(np.asarray(yk))
    if sum(len(y) for y in kept_y) >= want:
      break
  x = np.concatenate(kept_x)[:want]
  y = np.concatenate(kept_y)[:want].astype(np.int32)
  kept = sum(len(v) for v in kept_y) / max(drawn, 1)
  if len(y) == 0:
    raise ConfigError(f"{arm}: no generated image reached pseudo_label_threshold="
                      f"{ctx.config.pseudo_label_threshold}; lower the threshold.")
  info = {"pseudo_label_threshold": ctx.config.pseudo_label_threshold, "kept_fraction": kept,
          "generator_train_seconds": train_seconds}
  return Generated(x, y, np.full(len(y), -1, np.int64), time.perf_counter() - t0 + train_seconds,
                   info)


GENERATE: dict[str, Callable[..., Generated]] = {
    "classical": lambda ctx, arm, *a: classical(ctx, *a),
    "noise": lambda ctx, arm, *a: noise(ctx, *a),
    "dream_subtle": dream_arm, "dream_strong": dream_arm, "dream_logit": dream_arm,
    "dream_bn": dream_arm, "dream_sweep": dream_arm,
    "fgsm": adversarial_arm, "pgd": adversarial_arm,
    "vae_small": small_generator, "gan_small": small_generator,
    "vae_pool": pool_generator, "gan_pool": pool_generator,
}


def batch_transform(ctx, arm) -> train.BatchTransform | None:
  if arm != "pgd_train":
    return None
  from dreamjax import adversarial  # pylint: disable=g-import-not-at-top
  a = ctx.config.attack
  return adversarial.adversarial_batch_transform(ctx.model, method="pgd", eps=a.eps,
                                                 steps=a.train_steps, fraction=a.train_fraction)


def init_fn(ctx, arm):
  """(init function for train.fit, pretraining seconds) for the transfer arms."""
  if arm not in ("ae_pretrain", "pretext_transfer"):
    return None, 0.0
  from dreamjax import pretrain  # pylint: disable=g-import-not-at-top
  variables, seconds = ctx.pretrained(arm)
  return pretrain.init_fn(ctx.model, ctx.image_shape, variables), seconds
