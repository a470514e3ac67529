"""Generator checkpoints: the params pytree plus the config that shapes it."""

import ml_collections
import jax

from dreamjax.plumbing import checkpoint
from dreamjax.errors import CheckpointError
from dreamjax.generators import common, diffusion, gan, vae

_INIT = {"vae": vae.init_params, "gan": gan.init_params, "diffusion": diffusion.init_params}


def save(path: str, kind: str, cfg, params, meta: dict | None = None) -> None:
  """Writes ``params`` of a ``kind`` (a key of ``generators.TRAIN``) generator and ``cfg``
  to ``path``."""
  image_shape, num_classes = common.shape_of(params)
  checkpoint.save(path, params, {"kind": kind, "config": cfg.to_dict(),
                                 "image_shape": list(image_shape), "num_classes": num_classes,
                                 **(meta or {})})


def load(path: str):
  """Returns ``(kind, cfg, params, meta)`` of a checkpoint written by :func:`save`."""
  meta = checkpoint.read_meta(path)
  if meta.get("kind") not in _INIT:
    raise CheckpointError(f"{path} is not a generator checkpoint (kind={meta.get('kind')!r}).")
  cfg = ml_collections.ConfigDict(meta["config"])
  params, meta = checkpoint.restore_from_init(path, lambda: _INIT[meta["kind"]](
      cfg, tuple(meta["image_shape"]), meta["num_classes"], jax.random.key(0)))
  return meta["kind"], cfg, params, meta
