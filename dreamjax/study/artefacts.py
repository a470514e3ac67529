"""Models several cells share: pool generators and pretrained trunks, trained once.

Each is trained on seed 0's unlabeled pool the first time a cell asks for
it, saved under ``WORKDIR/N{budget}/artefacts/`` and loaded from there by
later cells and reruns (and memoised for the rest of the process).
"""

import os
import time
import zlib
from typing import Any, Callable

import jax

from dreamjax import checkpoint
from dreamjax.errors import CheckpointError

_MEMO: dict[str, Any] = {}


def arm_key(seed: int, arm: str) -> jax.Array:
  """A key for (seed, arm) that no other arm or the training shares."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 2), zlib.crc32(arm.encode()))


def generator_config(config, kind: str, conditional: bool):
  """The generator config of the study's VAE/GAN/AE/pretext arms."""
  from dreamjax.configs import generator as gen_configs  # pylint: disable=g-import-not-at-top
  g = gen_configs.get_config(config.generator_preset)
  g.model = kind
  g.conditional = conditional
  g.source = "labeled" if conditional else "pool"
  if conditional:
    g.steps = config.small_generator_steps
  elif kind in ("ae", "pretext"):
    g.steps = config.pretrain_steps
  else:
    g.steps = config.pool_generator_steps
  g.update(config.generator_overrides.to_dict())
  return g


def _load_or_make(ctx, name: str, make: Callable[[], Any]) -> tuple[Any, float]:
  """(tree, seconds it took to make): from the workdir if an earlier run made it."""
  path = ctx.path(f"N{ctx.budget}", "artefacts", f"{name}.msgpack")
  if os.path.exists(path):
    stamp = (path, os.stat(path).st_mtime_ns)  # a rewritten file is read again
    if stamp in _MEMO:
      return _MEMO[stamp]
    try:
      tree, meta = checkpoint.load_tree(path)
      _MEMO[stamp] = tree, float(meta["seconds"])
      return _MEMO[stamp]
    except (CheckpointError, KeyError) as e:
      ctx.log(f"{name}: saved copy unusable ({e}); training it again")
  t0 = time.perf_counter()
  tree = make()
  seconds = time.perf_counter() - t0
  checkpoint.save_tree(path, tree, {"seconds": seconds})
  return checkpoint.load_tree(path)[0], seconds


def pool_generator(ctx, kind: str):
  """(config, params, train seconds) of the unconditional pool generator ``kind``."""
  from dreamjax import generators  # pylint: disable=g-import-not-at-top
  gcfg = generator_config(ctx.config, kind, conditional=False)
  params, seconds = _load_or_make(ctx, f"{kind}_pool", lambda: generators.TRAIN[kind](
      gcfg, ctx.pool_images(0), None, arm_key(0, f"{kind}_pool_gen"), progress=ctx.log,
      mesh=ctx.mesh)[0])
  return gcfg, params, seconds


def pretrained(ctx, arm: str):
  """(trunk variables, seconds) of the autoencoder / rotation pretraining on the pool."""
  from dreamjax import pretrain  # pylint: disable=g-import-not-at-top
  kind = "ae" if arm == "ae_pretrain" else "pretext"
  gcfg = generator_config(ctx.config, kind, conditional=False)
  k = arm_key(0, f"{arm}_pretrain")
  if kind == "ae":
    make = lambda: pretrain.train_autoencoder(gcfg, ctx.pool_images(0), k, ctx.config.model,
                                              ctx.num_classes, ctx.image_shape, mesh=ctx.mesh)
  else:
    make = lambda: pretrain.train_rotation(gcfg, ctx.pool_images(0), k, ctx.config.model,
                                           ctx.image_shape, mesh=ctx.mesh)
  return _load_or_make(ctx, arm, make)
