"""Models several cells share: pool generators and pretrained trunks, trained once.

Each is trained on the study's shared pool (seed 0's unlabeled pool at the
pool budget, :func:`dreamjax.study.spec.pool_budget`: the same for every
label budget) the first time a cell asks for it, saved under
``WORKDIR/artefacts/`` and loaded from there by later cells, later budgets and
reruns (and memoised for the rest of the process).

A pool generator arm has ``config.pool_generators`` (G) generators, each
trained from its own seed on the same pool; classifier seed number i of the
study reads generator i mod G (:func:`pool_generator_index`), so the arm's
intervals over seeds hold the generators' variance as well as the seeds'.
The pretrained trunks and the deep dreamer stay one per study.
"""

import hashlib
import json
import os
import time
import zlib
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from dreamjax import generators
from dreamjax.generators import common
from dreamjax.methods import dreamer, pretrain
from dreamjax.plumbing import checkpoint, provenance
from dreamjax.configs import arms as arms_lib
from dreamjax.errors import CheckpointError
from dreamjax.study import spec

_MEMO: dict[str, Any] = {}


def arm_key(seed: int, arm: str) -> jax.Array:
  """A key for (seed, arm) that no other arm or the training shares."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 2), zlib.crc32(arm.encode()))


def generator_config(config, arm: str):
  """The generator config of a generator or pretraining arm (a fresh-sample arm's: its
  stored twin's), a copy to change, for code outside a study; a study's arms carry
  theirs (:attr:`dreamjax.configs.arms.Resolved.generator`)."""
  return arms_lib.resolve_arm(config, arm).generator.copy_and_resolve_references()


def _load_or_make(ctx, name: str, make: Callable[[], tuple[Any, list]],
                  cache_key: str | None = None, training_dir: str | None = None
                  ) -> tuple[Any, float, list]:
  """(tree, seconds it took to make, training history), made once.

  From the workdir if an earlier run made it; else from the user cache when
  ``cache_key`` names one an earlier study left there (copied into the
  workdir, so a workdir stays complete on its own); else made and saved.
  ``training_dir``: the checkpoint folder ``make`` keeps its training in (its
  seconds count in the time it took; it is removed once the tree is saved).
  """
  path = ctx.path("artefacts", f"{name}.msgpack")
  cached = os.path.join(cache_dir(), f"{cache_key}.msgpack") if cache_key else None
  for source in (path, cached):
    if not source or not os.path.exists(source):
      continue
    stamp = (source, os.stat(source).st_mtime_ns)  # a rewritten file is read again
    if stamp not in _MEMO:
      try:
        tree, meta = checkpoint.load_tree(source)
      except CheckpointError as e:
        logging.warning("%s: not using %s: %s It is replaced by a good copy (trained again"
                        " if none is left) by itself; nothing to do.", name, source, e.fault)
        continue
      _MEMO[stamp] = tree, meta
    tree, meta = _MEMO[stamp]
    if source != path:
      ctx.log(f"{name}: reusing the one an earlier study trained on the same data and config"
              f" ({source})")
      checkpoint.save_tree(path, tree, {**meta, "reused_from": source})
    return tree, float(meta.get("seconds", 0.0)), meta.get("history", [])
  t0 = time.perf_counter()
  before = common.seconds_trained(training_dir)
  tree, history = make()
  meta = {"seconds": before + time.perf_counter() - t0, "history": history}
  checkpoint.save_tree(path, tree, meta)
  if training_dir:
    checkpoint.remove(training_dir)
  if cached:
    try:
      checkpoint.save_tree(cached, tree, meta)
    except OSError as e:  # a cache that cannot be written costs time, never results
      ctx.log(f"{name}: not cached ({e})")
  return checkpoint.load_tree(path)[0], meta["seconds"], history


def cache_dir() -> str:
  """Where trained pool models and oracles are kept across studies (``DREAMJAX_CACHE_DIR``)."""
  root = os.environ.get("DREAMJAX_CACHE_DIR") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dreamjax")
  return os.path.join(root, "generators")


def _cache_key(ctx, kind: str, gcfg, generator: int = 0) -> str | None:
  """Everything a pool generator's weights depend on: data, pool, config, seed, software.

  ``generator``: its number among the arm's G (:func:`pool_generator_index`), which
  seeds its training. Generator 0 keeps the key of the one generator an arm had
  before there were G, so the generators cached then serve it.
  """
  if not ctx.config.generator_cache or not ctx.splits[0].data_digest:
    return None
  pool = ctx.pool_for_shared_models()
  # The diffusion fields shape no other family's weights; leaving them out of the
  # others' keys keeps the VAEs and GANs cached before those fields existed.
  fields = {k: v for k, v in gcfg.to_dict().items()
            if kind == "diffusion" or not k.startswith("diffusion_")}
  parts = {"kind": kind, "generator": fields, "data": ctx.splits[0].data_digest,
           "pool": hashlib.sha256(np.ascontiguousarray(pool).tobytes()).hexdigest(),
           "versions": provenance.versions()}
  if generator:
    parts["generator_seed"] = int(generator)
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


pool_generators = spec.pool_generators


def pool_generator_index(ctx, seed: int) -> int:
  """Which of an arm's G pool generators classifier seed ``seed`` reads: its number in
  the study (0 for the first seed) modulo G."""
  return ctx.seeds.index(seed) % pool_generators(ctx.config)


def pool_generator_key(ctx, arm: str, generator: int) -> jax.Array:
  """The training key of generator ``generator`` of arm ``arm``: from the study's first
  seed, so fresh seeds (``first_seed``) get fresh generators; generator 0's is the key
  the arm's one generator had before there were G."""
  key = arm_key(ctx.seeds[0], f"{arm}_gen")
  return jax.random.fold_in(key, generator) if generator else key


def pool_generator_name(arm: str, generator: int) -> str:
  """Its file name under ``WORKDIR/artefacts/``: ``vae_pool``, ``vae_pool_g1``, ..."""
  return f"{arm}_g{generator}" if generator else arm


def built(workdir: str) -> set[str]:
  """The names of the shared models kept in ``WORKDIR/artefacts/`` (restored, not
  trained, by a study that needs them)."""
  where = os.path.join(workdir, "artefacts")
  names = sorted(os.listdir(where)) if os.path.isdir(where) else []
  return {f[:-len(".msgpack")] for f in names if f.endswith(".msgpack")}


def training_path(ctx, name: str) -> str:
  """The checkpoint folder of artefact ``name``'s training while it runs
  (``WORKDIR/artefacts/<name>.training``): a study stopped mid-training goes on
  from it, to the same bits."""
  return ctx.path("artefacts", f"{name}.training")


def pool_generator(ctx, arm: str, seed: int):
  """(config, params, train seconds, history) of the pool generator classifier seed
  ``seed`` reads in arm ``arm`` (:func:`pool_generator_index`), trained the first time
  a cell asks for it."""
  resolved = ctx.arm(arm)
  kind, gcfg = resolved.source.family, resolved.generator
  g = pool_generator_index(ctx, seed)
  name = pool_generator_name(arm, g)
  training_dir = training_path(ctx, name)

  def make():
    readers = [s for s in ctx.seeds if pool_generator_index(ctx, s) == g]
    ctx.log(f"{arm}: training pool generator {g} (of {pool_generators(ctx.config)},"
            f" numbered from 0) for seeds {readers}")
    return generators.TRAIN[kind](gcfg, ctx.pool_for_shared_models(), None,
                                  pool_generator_key(ctx, arm, g), progress=ctx.log,
                                  mesh=ctx.mesh, checkpoint_dir=training_dir)
  params, seconds, history = _load_or_make(ctx, name, make,
                                           cache_key=_cache_key(ctx, kind, gcfg, g),
                                           training_dir=training_dir)
  return gcfg, params, seconds, history


def pretrained(ctx, arm: str):
  """(trunk variables, seconds, history) of the autoencoder / rotation pretraining on the pool."""
  resolved = ctx.arm(arm)
  kind, gcfg = resolved.source.objective, resolved.generator
  k = arm_key(ctx.seeds[0], f"{arm}_pretrain")
  pool = ctx.pool_for_shared_models()
  if kind == "ae":
    make = lambda: pretrain.train_autoencoder(gcfg, pool, k, ctx.config.model,
                                              ctx.num_classes, ctx.image_shape, mesh=ctx.mesh,
                                              return_history=True)
  else:
    make = lambda: pretrain.train_rotation(gcfg, pool, k, ctx.config.model,
                                           ctx.image_shape, mesh=ctx.mesh, return_history=True)
  return _load_or_make(ctx, arm, make)


def pool_dreamer(ctx):
  """(model, variables, pretraining seconds, pretraining image-steps) of the deep dreamer.

  The user's network where ``pool_dreamer.checkpoint`` names one (checked against
  the data's image shape); else a CNN of ``pool_dreamer.model`` pretrained on the
  shared pool's images, once per study, kept as the pool generators are
  (``artefacts/pool_dreamer.msgpack``, and the user cache).
  """
  cfg = ctx.config.pool_dreamer
  if cfg.checkpoint:
    stamp = ("user dreamer", cfg.checkpoint, os.stat(cfg.checkpoint).st_mtime_ns
             if os.path.exists(cfg.checkpoint) else 0, tuple(ctx.image_shape))
    if stamp not in _MEMO:
      _MEMO[stamp] = dreamer.load(cfg.checkpoint, ctx.image_shape)[:2]
    return (*_MEMO[stamp], 0.0, 0)
  variables, seconds, _ = _load_or_make(ctx, "pool_dreamer", lambda: dreamer.pretrain(
      cfg, ctx.pool_for_shared_models(), arm_key(0, "pool_dreamer"), ctx.image_shape,
      progress=ctx.log, mesh=ctx.mesh), cache_key=_cache_key(ctx, "pool_dreamer", cfg))
  return dreamer.model_of(cfg), variables, seconds, dreamer.image_steps(cfg)
