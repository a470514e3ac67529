"""What the arms do: the functions :mod:`dreamjax.configs.arms` registers.

``generate`` functions return one seed's extra labeled images (M copies per
labeled image, ``config.copies``); ``transform`` functions return a batch
transform for the jitted train step; ``init`` functions return a classifier
initialiser. Each receives the budget's :class:`dreamjax.study.run.context.Context`
and the cell's arm name (a variant's, e.g. ``dream_sweep@0.2``); what the arm
is (its source, its settings, the configs made from them) is the study's resolved
arm of that name, ``ctx.arm(arm)`` (:class:`dreamjax.configs.arms.Resolved`).
"""

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from dreamjax import data as data_lib
from dreamjax.methods import adversarial as adv_lib
from dreamjax import generators
from dreamjax.methods import augment, pretrain, semi
from dreamjax.training import train
from dreamjax import dream as dream_lib
from dreamjax.configs import arms as arms_lib
from dreamjax.configs import generator as gen_configs
from dreamjax.dream import online
from dreamjax.errors import CheckpointError, ConfigError
from dreamjax.generators import common
from dreamjax.plumbing import checkpoint
from dreamjax.study import plan as plan_lib
from dreamjax.study.run import artefacts


@dataclasses.dataclass
class Generated:
  """One seed's extra training images, with provenance."""
  images: np.ndarray
  labels: np.ndarray
  source_index: np.ndarray  # position in the official training split, -1 if none
  seconds: float
  info: dict[str, Any] = dataclasses.field(default_factory=dict)


def _copies(s: data_lib.Splits, copies: int):
  rep = lambda a: np.concatenate([a] * copies)
  return rep(s.labeled_images), rep(s.labeled_labels), rep(s.labeled_index)


# --- offline sets made from each real labeled image ------------------------

def classical(ctx, arm, seed, s, key) -> Generated:
  return _offline(ctx, s, key, augment.classical_fn(augment.classical_config()))


def noise(ctx, arm, seed, s, key) -> Generated:
  return _offline(ctx, s, key, augment.noise_fn(augment.noise_config()))


def _offline(ctx, s, key, fn) -> Generated:
  t0 = time.perf_counter()
  x, y, pos = augment.offline(s.labeled_images, s.labeled_labels, key, fn,
                              copies=ctx.copies, mesh=ctx.mesh)
  return Generated(x, y, s.labeled_index[pos], time.perf_counter() - t0)


def dream_config(config, arm: str):
  """The dream block of a dream arm (or of one variant, ``dream_sweep@STRENGTH``), for
  code outside a study; a study's arms carry theirs (:attr:`dreamjax.configs.arms.Resolved.dream`)."""
  return arms_lib.resolve_arm(config, arm).dream


def dreamer(ctx, arm, seed):
  """(model, variables, info) of the network a dream arm dreams through (its source)."""
  if ctx.arm(arm).source == arms_lib.Classifier("pool_dreamer"):
    model, variables, seconds, image_steps = artefacts.pool_dreamer(ctx)
    return model, variables, {"dreamer_pretrain_seconds": seconds,
                              "dreamer_pretrain_image_steps": image_steps}
  return (*ctx.baseline_model(seed), {})


def dream(ctx, arm, seed, s, key) -> Generated:
  model, variables, dreamer_info = dreamer(ctx, arm, seed)
  x, y, idx = _copies(s, ctx.copies)
  spec = dream_lib.from_config(ctx.arm(arm).dream, model)
  res = dream_lib.dream_dataset(model, variables, x, y, spec, key,
                                chunk_size=ctx.config.dream_chunk, progress=ctx.log,
                                mesh=ctx.mesh)
  info = {"mean_l2": float(np.mean(res.l2)), "mean_linf": float(np.mean(res.linf)),
          "objective_gain": float(np.mean(res.objective_gain)),
          "image_steps_per_s": float(res.image_steps_per_s),
          "image_steps": spec.total_steps * len(y), **dreamer_info}
  return Generated(res.images, y, idx, res.seconds, info)


def adversarial(ctx, arm, seed, s, key) -> Generated:
  model, variables = ctx.baseline_model(seed)
  x, y, idx = _copies(s, ctx.copies)
  t0 = time.perf_counter()
  method = ctx.arm(arm).source.method
  adv, info = adv_lib.adversarial_dataset(
      model, variables, x, y, key, method=method, eps=ctx.config.attack.eps,
      steps=ctx.config.attack.pgd_steps if method == "pgd" else 1, mesh=ctx.mesh)
  info = {k: v for k, v in dict(info).items() if isinstance(v, (int, float))}
  info["image_steps"] = int(info["steps"] * info["restarts"] * len(y))
  return Generated(adv, y, idx, time.perf_counter() - t0, info)


def pgd_train(ctx, arm):
  a = ctx.config.attack
  return adv_lib.adversarial_batch_transform(ctx.model, method=ctx.arm(arm).source.method,
                                             eps=a.eps,
                                             steps=a.train_steps, fraction=a.train_fraction)


def classical_online(ctx, arm):
  return augment.online_transform(augment.classical_fn(augment.classical_config()),
                                  ctx.config.online_fraction)


def noise_online(ctx, arm):
  return augment.online_transform(augment.noise_fn(augment.noise_config()),
                                  ctx.config.online_fraction)


def noise_matched_online(ctx, arm):
  """Gaussian noise on part of every batch, its σ set so that its mean L2 distance from
  the source image equals the dream of arm ``settings.match``'s.

  The dream's size is measured through each seed's baseline on the first
  ``settings.num_images`` labeled images (the online dream's steps are normalised,
  so its size depends little on which model it ascends); σ is found on the same
  images (:func:`dreamjax.methods.augment.match_noise_std`). What was matched is the
  transform's ``info``, which the cell records.
  """
  settings = ctx.arm(arm).settings
  matched = ctx.arm(settings.match).dream
  l2, linf, images = [], [], []
  for seed, s in zip(ctx.seeds, ctx.splits):
    model, variables = ctx.baseline_model(seed)
    x, y = s.labeled_images[:int(settings.num_images)], s.labeled_labels[:int(settings.num_images)]
    res = dream_lib.dream_dataset(model, variables, x, y,
                                  dream_lib.from_config(matched, model),
                                  artefacts.arm_key(seed, arm), chunk_size=ctx.config.dream_chunk,
                                  mesh=ctx.mesh)
    l2.append(float(np.mean(res.l2)))
    linf.append(float(np.mean(res.linf)))
    images.append(x)
  images = np.concatenate(images)
  key = artefacts.arm_key(ctx.seeds[0], f"{arm}_match")
  std = augment.match_noise_std(images, float(np.mean(l2)), key)
  noise_l2, noise_linf = augment.noise_distances(images, std, jax.random.fold_in(key, 1))
  cfg = augment.noise_config()
  cfg.std = std
  transform = augment.online_transform(augment.noise_fn(cfg), ctx.config.online_fraction)
  transform.info = {"matched_to": settings.match, "std": std, "dream_mean_l2": float(np.mean(l2)),
                    "noise_mean_l2": noise_l2, "dream_mean_linf": float(np.mean(linf)),
                    "noise_mean_linf": noise_linf, "images": int(len(images))}
  ctx.log(f"{arm}: σ {std:.4f} matches {settings.match}'s mean L2 {np.mean(l2):.3f}"
          f" (noise on fresh draws: {noise_l2:.3f})")
  return transform


def dream_online(ctx, arm):
  """A dream (the arm's preset) of part of every batch, from the current model or,
  with the pool dreamer as its source, through that fixed network."""
  resolved = ctx.arm(arm)
  if resolved.source == arms_lib.Classifier("pool_dreamer"):
    model, variables, _ = dreamer(ctx, arm, None)
    return online.batch_transform(model, resolved.dream,
                                  fraction=ctx.config.online_fraction, variables=variables)
  return online.batch_transform(ctx.model, resolved.dream,
                                fraction=ctx.config.online_fraction)


# --- the unlabeled pool -----------------------------------------------------------

def self_training(ctx, arm, seed, s, key) -> Generated:
  """Real pool images with the seed's baseline's labels, where it is confident.

  The semi-supervised yardstick for the pool (Lee 2013's pseudo-labels; with
  classical augmentation online, as in the strong self-training baselines):
  what the unlabeled pool delivers without any generator. The pool's own
  labels are never read. The kept images are the most confident ones,
  class-balanced (at most ``max_images / classes`` per class), so one easy
  class cannot crowd out the rest.
  """
  del key  # deterministic: the baseline's most confident pool images
  t0 = time.perf_counter()
  st = ctx.config.self_training
  model, variables = ctx.baseline_model(seed)
  pool = ctx.pool_images(seed)
  probs = generators.probabilities(model, variables, pool, mesh=ctx.mesh)
  confidence, label = probs.max(-1), probs.argmax(-1).astype(np.int32)
  per_class = max(int(st.max_images) // ctx.num_classes, 1)
  idx = generators.balanced_selection(probs, per_class=per_class, threshold=st.threshold)
  if not len(idx):
    raise ConfigError(f"{arm}: no pool image reached self_training.threshold={st.threshold};"
                      " lower it.")
  pool_index = ctx.splits[ctx.seeds.index(seed)].pool_index
  info = {"threshold": float(st.threshold), "kept": int(len(idx)),
          "confident_fraction": float(np.mean(confidence >= st.threshold)),
          "kept_per_class": _per_class(label[idx], ctx.num_classes), "image_steps": 0}
  return Generated(pool[idx], label[idx], pool_index[idx], time.perf_counter() - t0, info)


def fixmatch(ctx, arm):
  """FixMatch's unlabeled term (Sohn et al. 2020): each seed's own pool, images only.

  Every train step draws ``mu·B`` of the seed's pool images beside its labeled
  batch; :func:`dreamjax.methods.semi.fixmatch_loss` pseudo-labels their weak copies
  (a flip-free shift) with the model in training and trains their strong
  copies (:func:`dreamjax.methods.augment.strong_fn`) towards the labels whose
  confidence reaches ``threshold``. The pool's labels are not in the context.
  """
  settings = ctx.arm(arm).settings
  pools = [ctx.pool_images(seed) for seed in ctx.seeds]
  n = max(len(p) for p in pools)
  images = np.zeros((len(pools), n, *ctx.image_shape), np.float32)
  for i, p in enumerate(pools):
    images[i, :len(p)] = p
  loss = semi.fixmatch_loss(_weak(), augment.strong_fn(augment.strong_config()),
                            float(settings.threshold), float(settings.lambda_u))
  batch = int(settings.mu) * int(ctx.train_cfg.batch_size)
  return train.Unlabeled(images, batch, loss, counts=np.asarray([len(p) for p in pools]),
                         info={"mu": int(settings.mu), "threshold": float(settings.threshold),
                               "lambda_u": float(settings.lambda_u), "batch_size": batch,
                               "pool_images": int(n)})


def fixmatch_weak(ctx, arm):
  """FixMatch's weak augmentation of every labeled image of a batch, as the paper's
  labeled loss takes it."""
  return augment.online_transform(_weak(), 1.0)


def _weak():
  """FixMatch's weak augmentation: the classical transform's shift alone (no flip, which
  the classical transform leaves off for Fashion-MNIST)."""
  return augment.shift_fn(int(augment.classical_config().translate))


# --- generators -----------------------------------------------------------------

def small_generator(ctx, arm, seed, s, key) -> Generated:
  """Conditional VAE/GAN trained on the seed's labeled set; samples its labels."""
  return small_generators(ctx, arm, [seed], [s], [key])[seed]


def small_generators(ctx, arm, seeds, splits, keys) -> dict[int, Generated]:
  """:func:`small_generator` of several seeds, their generators trained as one program.

  Each seed's generator, samples and numbers are its own (its key, its
  labeled set); only the program that steps them is shared
  (:func:`dreamjax.generators.common.train_seeds`). The generators are kept
  (:func:`trained_small_generators`), so that the arm's fresh-sample twin samples
  them instead of training them again.
  """
  resolved = ctx.arm(arm)
  kind, gcfg = resolved.source.family, resolved.generator
  k_train, k_sample = zip(*(jax.random.split(key) for key in keys))
  trained = trained_small_generators(ctx, arm, kind, gcfg, seeds, splits, k_train)
  out = {}
  for seed, s, key in zip(seeds, splits, k_sample):
    params, train_seconds, history = trained[seed]
    t1 = time.perf_counter()
    want = np.concatenate([s.labeled_labels] * ctx.copies)
    x = generators.SAMPLE[kind](gcfg, params, key, labels=want, mesh=ctx.mesh)
    info = {"final_losses": history[-1] if history else {}, "history": history,
            "image_steps": int(gcfg.steps) * _generator_batch(gcfg)}
    out[seed] = Generated(x, want.astype(np.int32), np.full(len(want), -1, np.int64),
                          train_seconds + time.perf_counter() - t1, info)
  return out


def small_generator_path(ctx, arm: str, seed: int) -> str:
  """Where seed ``seed``'s class-conditional generator of the stored arm ``arm`` is kept
  at the context's budget: the folder of the arm's main cell."""
  return ctx.path(plan_lib.folder_of(f"N{ctx.budget}/{arm}"), f"generator_seed{seed}.msgpack")


def trained_small_generators(ctx, arm, kind, gcfg, seeds, splits, keys,
                             also: tuple[Callable[[int], str], ...] = ()
                             ) -> dict[int, tuple[Any, float, list]]:
  """``{seed: (params, train seconds, history)}``: the stored arm ``arm``'s
  class-conditional generator of each seed (a ``kind`` model of config ``gcfg``),
  trained from its trainer key in ``keys``.

  A generator kept at :func:`small_generator_path` (or where a function of the seed in
  ``also`` says) by an
  earlier cell of the workdir is read back; the others are trained as one
  program (:func:`train_small`) and kept. Whoever trains first, the stored arm
  or its fresh-sample twin, trains the same generator (same labeled set, same
  key), so the one that comes second samples it instead of training it again.
  """
  out, missing = {}, []
  for seed in seeds:
    for path in (small_generator_path(ctx, arm, seed), *(where(seed) for where in also)):
      try:
        params, meta = checkpoint.load_tree(path)
        out[seed] = (params, float(meta["seconds"]), meta.get("history", []))
        break
      except (CheckpointError, KeyError) as e:
        if os.path.exists(path):
          ctx.log(f"{arm}: training seed {seed}'s generator again ({e})")
    if seed not in out:
      missing.append(seed)
  if missing:
    index = {seed: i for i, seed in enumerate(seeds)}
    training_dir = small_generator_training_path(ctx, arm, missing)
    t0 = time.perf_counter()
    before = common.seconds_trained(training_dir)
    trained = train_small(ctx, kind, gcfg, [splits[index[seed]] for seed in missing],
                          [keys[index[seed]] for seed in missing], checkpoint_dir=training_dir)
    each = (before + time.perf_counter() - t0) / len(missing)
    for seed, (params, history) in zip(missing, trained):
      checkpoint.save_tree(small_generator_path(ctx, arm, seed), params,
                           {"seconds": each, "history": history, "generator_arm": arm})
      out[seed] = (params, each, history)
    checkpoint.remove(training_dir)
  return out


def small_generator_training_path(ctx, arm: str, seeds) -> str:
  """The checkpoint folder of the stored arm ``arm``'s generators of ``seeds`` while
  they train (as one program), beside where they are kept: a study stopped
  mid-training goes on from it, to the same bits."""
  return ctx.path(plan_lib.folder_of(f"N{ctx.budget}/{arm}"),
                  "generator_training_seed" + "_".join(str(int(s)) for s in seeds))


def train_small(ctx, kind: str, gcfg, splits, keys, checkpoint_dir: str | None = None
                ) -> list[tuple[Any, list]]:
  """``[(params, history)]``: a class-conditional ``kind`` generator on each split's
  labeled set, from its trainer key in ``keys``; several seeds as one program, kept
  in ``checkpoint_dir`` as it trains."""
  if len(splits) == 1:
    return [generators.TRAIN[kind](gcfg, splits[0].labeled_images, splits[0].labeled_labels,
                                   keys[0], progress=ctx.log, mesh=ctx.mesh,
                                   checkpoint_dir=checkpoint_dir)]
  return common.train_seeds(generators.PREPARE[kind], kind, gcfg,
                            np.stack([s.labeled_images for s in splits]),
                            np.stack([s.labeled_labels for s in splits]), list(keys),
                            mesh=ctx.mesh, progress=ctx.log, checkpoint_dir=checkpoint_dir)


# Sampling rounds of a pool generator arm before it keeps what it has.
POOL_ROUNDS = 8


def pool_generator(ctx, arm, seed, s, key) -> Generated:
  """Unconditional generator trained on the unlabeled pool, pseudo-labeled.

  The generator is the seed's own among the arm's ``pool_generators``
  (:func:`dreamjax.study.run.artefacts.pool_generator_index`, recorded in the set's
  ``info["pool_generator"]``). Labels come from the seed's baseline classifier,
  keeping samples whose confidence reaches ``pseudo_label_threshold``. With the
  arm's ``balanced`` setting (the default) the kept samples are the most confident
  of each class,
  at most M·N / classes per class (:func:`dreamjax.generators.balanced_selection`),
  and sampling repeats (up to ``POOL_ROUNDS`` rounds of M·N samples) until every
  class is filled; a class the generator rarely makes may stay short. Without
  it, the first M·N samples above the threshold are kept, whatever their class.
  """
  kind = ctx.arm(arm).source.family
  gcfg, params, train_seconds, history = artefacts.pool_generator(ctx, arm, seed)
  model, variables = ctx.baseline_model(seed)
  want = len(s.labeled_labels) * ctx.copies
  threshold = ctx.config.pseudo_label_threshold
  t0 = time.perf_counter()
  if ctx.arm(arm).settings.get("balanced", True):
    x, y, info = _balanced_samples(ctx, kind, gcfg, params, model, variables, want, threshold,
                                   key)
  else:
    x, y, info = _first_samples(ctx, kind, gcfg, params, model, variables, want, threshold,
                                key)
  if len(y) == 0:
    raise ConfigError(f"{arm}: no generated image reached pseudo_label_threshold={threshold};"
                      " lower the threshold.")
  info.update({"pseudo_label_threshold": threshold,
               "kept_per_class": _per_class(y, ctx.num_classes),
               "pool_generator": {"index": artefacts.pool_generator_index(ctx, seed),
                                  "of": artefacts.pool_generators(ctx.config)},
               "generator_train_seconds": train_seconds, "history": history,
               "image_steps": int(gcfg.steps) * _generator_batch(gcfg)})
  return Generated(x, y, np.full(len(y), -1, np.int64), time.perf_counter() - t0 + train_seconds,
                   info)


def _balanced_samples(ctx, kind, gcfg, params, model, variables, want, threshold, key,
                      rounds: int = POOL_ROUNDS):
  """(images, pseudo-labels, info): the most confident samples of each class, at most
  ``want / classes`` each, over as many rounds of ``want`` samples as it takes to fill
  every class (at most ``rounds``)."""
  per_class = max(want // ctx.num_classes, 1)
  kept_x = np.zeros((0, *ctx.image_shape), np.float32)
  kept_p = np.zeros((0, ctx.num_classes), np.float32)
  drawn = confident = 0
  for r in range(rounds):
    x = generators.SAMPLE[kind](gcfg, params, jax.random.fold_in(key, r), num=want,
                                mesh=ctx.mesh)
    p = generators.probabilities(model, variables, x, mesh=ctx.mesh)
    drawn += len(x)
    confident += int(np.sum(p.max(-1) >= threshold))
    # The top of each class over every round so far: the top of the kept and the new.
    x, p = np.concatenate([kept_x, x]), np.concatenate([kept_p, p])
    idx = generators.balanced_selection(p, per_class=per_class, threshold=threshold)
    kept_x, kept_p = x[idx], p[idx]
    if np.all(np.bincount(kept_p.argmax(-1), minlength=ctx.num_classes) >= per_class):
      break
  info = {"balanced": True, "per_class_target": per_class, "rounds": r + 1,
          "kept_fraction": confident / max(drawn, 1)}
  return kept_x, kept_p.argmax(-1).astype(np.int32), info


def _first_samples(ctx, kind, gcfg, params, model, variables, want, threshold, key):
  """(images, pseudo-labels, info): the first ``want`` samples above the threshold."""
  kept_x, kept_y, drawn = [], [], 0
  for r in range(POOL_ROUNDS):
    x = generators.SAMPLE[kind](gcfg, params, jax.random.fold_in(key, r), num=want,
                                mesh=ctx.mesh)
    xk, yk, _ = generators.pseudo_label(model, variables, x, threshold=threshold, mesh=ctx.mesh)
    drawn += len(x)
    kept_x.append(xk)
    kept_y.append(yk)
    if sum(len(y) for y in kept_y) >= want:
      break
  x = np.concatenate(kept_x)[:want]
  y = np.concatenate(kept_y)[:want].astype(np.int32)
  return x, y, {"balanced": False, "rounds": r + 1,
                "kept_fraction": sum(len(v) for v in kept_y) / max(drawn, 1)}


def _per_class(labels, num_classes: int) -> list[int]:
  """How many of ``labels`` each class has."""
  return np.bincount(np.asarray(labels, np.int64), minlength=num_classes).tolist()


def _generator_batch(gcfg) -> int:
  return gen_configs.generator_batch_size(gcfg)[1]


def pretrained_init(ctx, arm):
  """(init function for train.fit, pretraining seconds, pretraining image-steps)."""
  variables, seconds, _ = artefacts.pretrained(ctx, arm)
  gcfg = ctx.arm(arm).generator
  return (pretrain.init_fn(ctx.model, ctx.image_shape, variables), seconds,
          int(gcfg.steps) * int(gcfg.batch_size))
