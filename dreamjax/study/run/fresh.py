"""Fresh generator samples in every batch: the functions of the fresh-sample arms.

Each arm samples the generator of its stored twin (``vae_small_online`` samples
``vae_small``'s: :func:`dreamjax.configs.arms.generator_arm`), trained with the
twin's settings and key, and replaces the share of every batch the other online
arms replace (``config.online_fraction``, the first rows of the randomly drawn
batch) with new samples:

* ``small_online`` (class-conditional VAE/GAN on the seed's labeled set): the
  decoder runs inside the jitted step on fresh latents, conditioned on the
  labels of the images it replaces, so the samples' classes are distributed as
  the labeled set's.
* ``pool_online`` (unconditional VAE/GAN on the pool): the decoder draws
  ``candidates`` samples per replaced image inside the step and the seed's
  baseline labels them there; each replaced image takes a distinct sample its
  baseline labels with the image's class at ``pseudo_label_threshold`` or more
  (the most confident first), and stays where there is none. The replaced part
  thus keeps the labeled set's class balance (equal per class), and every
  sample carries a confident pseudo-label, as the stored pool arms' do.
* ``small_bank`` / ``pool_bank`` (diffusion): a diffusion sampler runs tens of
  network passes per image, too slow for every step, so ``bank_multiple · N``
  samples per seed are drawn before training (the small model's with the
  labeled set's labels; the pool model's pseudo-labeled, confident and
  class-balanced as ``diffusion_pool``'s) and the step reads them in order:
  every sample is used once before any is used again.

Each returns a :class:`dreamjax.training.train.SeedTransform`: the seeds' generator (and
labeler) weights or banks reach the step as its arguments. Its ``samples`` are
M·N images per seed drawn the same way for the cell's quality measures (label
preservation, Fréchet distance, CAS), its ``info`` what the cell records of the
arm's cost. The small generators are read from the twin's cell folder where the
twin (or an earlier run) kept them, else trained and kept there, so they are trained
once for both arms; banks are kept in the cell's folder, so a resumed cell does not
make them again.
"""

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dreamjax import generators
from dreamjax.training import train
from dreamjax import data as data_lib
from dreamjax.generators import fresh
from dreamjax.errors import ConfigError
from dreamjax.training.seeds import pad_to_common, stack, unstack
from dreamjax.study.run import artefacts, cells
from dreamjax.study.run import generate as generate_lib

# Sampling rounds of a pool bank before it keeps what it has. Each round draws the
# bank's size again (bank_multiple · N diffusion samples), so the stored pool arms'
# eight rounds of M·N samples would cost up to eight banks; a class the generator
# rarely makes stays short instead (recorded per class).
BANK_ROUNDS = 2


def _pool_generator_for(ctx, arm: str, seed: int):
  """(config, params, train seconds, history) of the pool generator seed ``seed``'s cell of
  arm ``arm`` samples: its stored twin's. Every pool-generator lookup of these arms goes
  through here."""
  return artefacts.pool_generator(ctx, ctx.arm(arm).generator_arm, seed)


def _generator_tag(ctx, seed: int) -> dict[str, int]:
  """Which of the G pool generators seed ``seed`` read, as the stored pool arms record it."""
  return {"index": artefacts.pool_generator_index(ctx, seed),
          "of": artefacts.pool_generators(ctx.config)}


def _rows(ctx) -> int:
  """Images of each batch a fresh sample replaces: ``online_fraction`` of it."""
  return int(round(float(ctx.config.online_fraction) * int(ctx.train_cfg.batch_size)))


def _path(ctx, arm: str, name: str) -> str:
  return ctx.path(cells.folder_of(f"N{ctx.budget}/{arm}"), name)


def _generator_image_steps(gcfg) -> int:
  return int(gcfg.steps) * generate_lib._generator_batch(gcfg)  # pylint: disable=protected-access


# --- the generators --------------------------------------------------------------

def _small_generators(ctx, arm: str):
  """(config, {seed: params}, {seed: train seconds}, seed 0's history) of the twin's
  class-conditional generators, one per seed: the twin's own where its cell (or an
  earlier run of this one) kept them, else trained as the twin trains them (its
  config, its trainer keys) and kept for it."""
  twin = ctx.arm(arm).generator_arm
  # The twin's trainer key: generate.small_generators splits arm_key(seed, twin) so.
  keys = [jax.random.split(artefacts.arm_key(seed, twin))[0] for seed in ctx.seeds]
  # Where this arm kept its own copy before the twin's was shared (workdirs of 2026-12-07).
  def own(seed):
    return _path(ctx, arm, f"generator_seed{seed}.msgpack")

  resolved = ctx.arm(arm)
  trained = generate_lib.trained_small_generators(
      ctx, twin, resolved.source.family, resolved.generator, list(ctx.seeds), list(ctx.splits),
      keys, also=(own,))
  params = {seed: trained[seed][0] for seed in ctx.seeds}
  seconds = {seed: trained[seed][1] for seed in ctx.seeds}
  return resolved.generator, params, seconds, trained[ctx.seeds[0]][2]


def _measured(images, labels, info=None) -> generate_lib.Generated:
  labels = np.asarray(labels, np.int32)
  return generate_lib.Generated(np.asarray(images, np.float32), labels,
                                np.full(len(labels), -1, np.int64), 0.0, info or {})


def _per_class(labels, num_classes: int) -> list[int]:
  return np.bincount(np.asarray(labels, np.int64), minlength=num_classes).tolist()


# --- decoders in the step: the VAE and the GAN -----------------------------------------

def small_online(ctx, arm) -> train.SeedTransform:
  """Fresh class-conditional samples in every batch, labeled as the images they replace."""
  kind = ctx.arm(arm).source.family
  gcfg, params, seconds, history = _small_generators(ctx, arm)
  sample, _ = fresh.prior_sampler(kind, gcfg, params[ctx.seeds[0]])
  weights = stack([fresh.prior_sampler(kind, gcfg, params[seed])[1] for seed in ctx.seeds])
  n = _rows(ctx)

  def fn(state, images, labels, key, data):
    del state
    if n == 0:
      return images, labels
    return images.at[:n].set(sample(data, labels[:n], key, n)), labels

  samples = {}
  for seed, s in zip(ctx.seeds, ctx.splits):
    want = np.concatenate([s.labeled_labels] * ctx.copies)
    samples[seed] = _measured(generators.SAMPLE[kind](gcfg, params[seed],
                                                      artefacts.arm_key(seed, arm),
                                                      labels=want, mesh=ctx.mesh), want)
  info = {"generator_arm": ctx.arm(arm).generator_arm, "rows_per_batch": n,
          "gen_seconds": float(sum(seconds.values())),
          "gen_image_steps": _generator_image_steps(gcfg), "sampled_per_step": n,
          "history": history}
  return train.SeedTransform(fn, weights, info, samples)


def pool_online(ctx, arm) -> train.SeedTransform:
  """Fresh unconditional samples in every batch, pseudo-labeled in the step by the seed's
  baseline: each replaced image takes a confident sample of its own class, else stays."""
  kind = ctx.arm(arm).source.family
  candidates = int(ctx.arm(arm).settings.candidates)
  threshold = float(ctx.config.pseudo_label_threshold)
  made = [_pool_generator_for(ctx, arm, seed) for seed in ctx.seeds]
  gcfg = made[0][0]
  sample, _ = fresh.prior_sampler(kind, gcfg, made[0][1])
  model = ctx.model
  n = _rows(ctx)

  def draw(data, targets, key):
    """(samples [t], found [t]): a confident sample of each target class, where one is."""
    x = sample(data["generator"], None, key, candidates * targets.shape[0])
    probs = jax.nn.softmax(model.apply(data["labeler"], x, train=False), axis=-1)
    index, found = fresh.match_classes(probs, targets, threshold)
    return x[index], found

  def fn(state, images, labels, key, data):
    del state
    if n == 0:
      return images, labels
    x, found = draw(data, labels[:n], key)
    return images.at[:n].set(jnp.where(found[:, None, None, None], x, images[:n])), labels

  data = {"generator": stack([fresh.prior_sampler(kind, gcfg, m[1])[1] for m in made]),
          "labeler": ctx.baseline.state.variables}
  # The images of the measured set: slots of the labeled set's labels (M copies), filled in
  # batch-sized groups as the step fills them.
  t0 = time.perf_counter()
  draw_jit = jax.jit(draw)
  samples, filled, per_class = {}, [], []
  for i, (seed, s) in enumerate(zip(ctx.seeds, ctx.splits)):
    want = np.concatenate([s.labeled_labels] * ctx.copies).astype(np.int32)
    group = max(n, 1)
    pad = np.concatenate([want, want[:(-len(want)) % group]])
    key = artefacts.arm_key(seed, arm)
    xs, found = [], []
    for g in range(len(pad) // group):
      x, f = draw_jit(unstack(data, i), jnp.asarray(pad[g * group:(g + 1) * group]),
                      jax.random.fold_in(key, g))
      xs.append(np.asarray(x))
      found.append(np.asarray(f))
    x, found = np.concatenate(xs)[:len(want)], np.concatenate(found)[:len(want)]
    samples[seed] = _measured(x[found], want[found], {"pool_generator": _generator_tag(ctx, seed)})
    filled.append(float(found.mean()))
    per_class.append(_per_class(want[found], ctx.num_classes))
  if not any(filled):
    raise ConfigError(f"{arm}: no sample reached pseudo_label_threshold={threshold} for any"
                      " class; lower the threshold or raise the arm's candidates.")
  # A shared generator's training counts once (the ``seconds`` of one object), as the
  # stored pool arms count it (records.generation_seconds).
  trained = {id(m[1]): m[2] for m in made}
  info = {"generator_arm": ctx.arm(arm).generator_arm, "rows_per_batch": n,
          "candidates": candidates, "pseudo_label_threshold": threshold,
          "filled_fraction": filled, "filled_per_class": per_class,
          "gen_seconds": float(sum(trained.values())) + time.perf_counter() - t0,
          "gen_image_steps": _generator_image_steps(gcfg),
          "sampled_per_step": candidates * n, "labeler_per_step": candidates * n,
          "history": made[0][3]}
  ctx.log(f"{arm}: {np.mean(filled) * 100:.0f}% of the replaced images find a confident"
          f" sample of their class among {candidates} per image")
  return train.SeedTransform(fn, data, info, samples)


# --- banks: the diffusion models -----------------------------------------------------

def small_bank(ctx, arm) -> train.SeedTransform:
  """Part of every batch from a bank of the seed's class-conditional samples, drawn with
  the labeled set's labels (``bank_multiple`` of each), in shuffled order."""
  kind = ctx.arm(arm).source.family
  multiple = int(ctx.arm(arm).settings.bank_multiple)
  trained = []  # the seeds' generators, trained (or loaded) once a bank needs them

  def draw(seed, s):
    if not trained:
      trained.append(_small_generators(ctx, arm))
    gcfg, params, seconds, history = trained[0]
    key = artefacts.arm_key(seed, arm)
    labels = np.tile(s.labeled_labels, multiple).astype(np.int32)
    labels = labels[np.asarray(jax.random.permutation(jax.random.fold_in(key, 1),
                                                      len(labels)))]
    t0 = time.perf_counter()
    x = generators.SAMPLE[kind](gcfg, params[seed], jax.random.fold_in(key, 0),
                                labels=labels, mesh=ctx.mesh)
    return _save_bank(ctx, arm, seed, x, labels, {
        "generator_seconds": seconds[seed], "sample_seconds": time.perf_counter() - t0,
        "drawn": len(labels), "generator_image_steps": _generator_image_steps(gcfg),
        "history": history if seed == ctx.seeds[0] else []})

  return _banks(ctx, arm, draw)


def pool_bank(ctx, arm) -> train.SeedTransform:
  """Part of every batch from a bank of pool-generator samples, pseudo-labeled by the
  seed's baseline: the most confident of each class, at most ``bank_multiple · N /
  classes`` per class, over up to :data:`BANK_ROUNDS` rounds, in shuffled order."""
  kind = ctx.arm(arm).source.family
  multiple = int(ctx.arm(arm).settings.bank_multiple)
  threshold = float(ctx.config.pseudo_label_threshold)
  trained = {}

  def draw(seed, s):
    gcfg, params, seconds, history = _pool_generator_for(ctx, arm, seed)
    model, variables = ctx.baseline_model(seed)
    key = artefacts.arm_key(seed, arm)
    want = multiple * len(s.labeled_labels)
    t0 = time.perf_counter()
    x, y, info = generate_lib._balanced_samples(  # pylint: disable=protected-access
        ctx, kind, gcfg, params, model, variables, want, threshold,
        jax.random.fold_in(key, 0), rounds=BANK_ROUNDS)
    if not len(y):
      raise ConfigError(f"{arm}: no generated image reached pseudo_label_threshold="
                        f"{threshold}; lower the threshold.")
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), len(y)))
    # A shared generator's training counts once over the seeds (records.generation_seconds).
    shared = seconds if id(params) not in trained else 0.0
    trained[id(params)] = seconds
    return _save_bank(ctx, arm, seed, x[order], y[order], {
        **info, "generator_seconds": shared, "sample_seconds": time.perf_counter() - t0,
        "drawn": int(info["rounds"]) * want, "pseudo_label_threshold": threshold,
        "kept_per_class": _per_class(y, ctx.num_classes),
        "generator_image_steps": _generator_image_steps(gcfg),
        "history": history if seed == ctx.seeds[0] else []})

  return _banks(ctx, arm, draw)


def _banks(ctx, arm, draw) -> train.SeedTransform:
  """The arm's step reader over each seed's bank: the one an earlier run kept, else
  ``draw(seed, split)``'s (saved as it is drawn); each measured set names the
  generator it came from."""
  banks, infos = {}, {}
  for seed, s in zip(ctx.seeds, ctx.splits):
    banks[seed], infos[seed] = _load_bank(ctx, arm, seed) or draw(seed, s)
  transform = _bank_transform(ctx, arm, banks, infos)
  for seed, measured in transform.samples.items():
    measured.info["pool_generator"] = _generator_tag(ctx, seed)
  return transform


def _load_bank(ctx, arm, seed):
  b = data_lib.augfile.load_kept(_path(ctx, arm, f"bank_seed{seed}.npz"),
                                 num_classes=ctx.num_classes, image_shape=ctx.image_shape,
                                 log=ctx.log, again=f"{arm}: drawing seed {seed}'s bank again")
  if b is None:
    return None
  return (b.images, b.labels), b.metadata.get("info", {})


def _save_bank(ctx, arm, seed, images, labels, info):
  data_lib.augfile.save(_path(ctx, arm, f"bank_seed{seed}.npz"), images, labels,
                        np.full(len(labels), -1, np.int64),
                        {"method": arm, "seed": seed, "budget": ctx.budget, "info": info})
  return (np.asarray(images, np.float32), np.asarray(labels, np.int32)), info


def _bank_transform(ctx, arm, banks, infos) -> train.SeedTransform:
  """The step's reader of the seeds' banks (padded to one length), their first M·N
  samples (the first the step uses) as the measured set, and their cost."""
  n = _rows(ctx)
  images, labels, counts = pad_to_common([banks[seed] for seed in ctx.seeds])

  def fn(state, x, y, key, data):
    del key  # the bank's order is fixed; the step number says where the step reads
    if n == 0:
      return x, y
    rows = fresh.bank_rows(state.step, n, data["count"])
    return x.at[:n].set(data["images"][rows]), y.at[:n].set(data["labels"][rows])

  samples = {}
  for seed, s in zip(ctx.seeds, ctx.splits):
    x, y = banks[seed]
    m = len(s.labeled_labels) * ctx.copies
    samples[seed] = _measured(x[:m], y[:m])
  first = infos[ctx.seeds[0]]
  info = {"generator_arm": ctx.arm(arm).generator_arm, "rows_per_batch": n,
          "bank_size": counts.tolist(),
          "bank_multiple": int(ctx.arm(arm).settings.bank_multiple),
          "gen_seconds": float(sum(i.get("generator_seconds", 0.0) + i.get("sample_seconds", 0.0)
                                   for i in infos.values())),
          "gen_image_steps": int(first.get("generator_image_steps", 0)),
          "sampled_images": int(np.mean([i.get("drawn", 0) for i in infos.values()])),
          "history": first.get("history", [])}
  if "kept_per_class" in first:
    info["kept_per_class"] = [infos[seed]["kept_per_class"] for seed in ctx.seeds]
    info["pseudo_label_threshold"] = first.get("pseudo_label_threshold")
  steps = int(ctx.train_cfg.steps)
  info["passes"] = [round(steps * n / max(int(c), 1), 2) for c in counts]
  ctx.log(f"{arm}: banks of {counts.tolist()} samples; training reads each about"
          f" {np.mean(info['passes']):.1f} times")
  return train.SeedTransform(fn, {"images": images, "labels": labels,
                                  "count": counts.astype(np.int32)}, info, samples)
