"""Orbax checkpoints of explicit pytrees, with corruption turned into errors.

A checkpoint folder holds the pytree (Orbax's own atomic write: a temporary
folder renamed when complete) and ``dreamjax.json`` with the fingerprint of
the config that made it, so a resume from another config is refused.

In a multi-host job every process calls :func:`save`, :func:`restore` and
:func:`remove` alike (the folder must be on storage every host sees); Orbax
writes the arrays once, process 0 alone moves folders and writes the
metadata, and barriers keep the other processes from reading ahead of it.
"""

import json
import logging
import os
import shutil
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from dreamjax import sharding
from dreamjax.errors import CheckpointError
from dreamjax.fileio import jsonable

_META = "dreamjax.json"


class _QuietOrbax(logging.Filter):
  """Orbax logs every save step at INFO; dreamjax's own progress lines suffice."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


logging.getLogger("absl").addFilter(_QuietOrbax())
_TREE = "tree"


def exists(path: str) -> bool:
  return os.path.exists(os.path.join(path, _META))


def save(path: str, tree: Any, meta: dict[str, Any]) -> None:
  """Saves ``tree`` (any Flax/optax pytree) and ``meta`` under ``path``."""
  path = os.path.abspath(path)
  tmp = path + ".partial"
  primary = sharding.is_primary()
  if primary:
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
  sharding.sync("checkpoint-save-start")
  state = sharding.to_host(serialization.to_state_dict(tree))
  ocp.PyTreeCheckpointer().save(os.path.join(tmp, _TREE), state)
  if primary:
    # A plain write (fileio's would wait for the other processes): the folder
    # rename below is what makes the checkpoint appear whole.
    with open(os.path.join(tmp, _META), "w") as f:
      json.dump(meta, f, indent=2, sort_keys=True, default=jsonable)
    # Swap in the finished folder; the old checkpoint is removed only after.
    old = path + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(path):
      os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
  sharding.sync("checkpoint-save-done")


def read_meta(path: str) -> dict[str, Any]:
  try:
    with open(os.path.join(path, _META)) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"checkpoint {path}: unreadable metadata ({e}).") from None


def restore(path: str, like: Any) -> tuple[Any, dict[str, Any]]:
  """Restores into the structure of ``like``; raises CheckpointError if broken."""
  path = os.path.abspath(path)
  missing = not exists(path)
  sharding.sync("checkpoint-restore-check")  # every process looked before any swap
  if missing:
    # An interrupted save leaves only "<path>.old": finish the swap.
    if sharding.is_primary() and os.path.exists(path + ".old") and not os.path.exists(path):
      os.replace(path + ".old", path)
    sharding.sync("checkpoint-restore-swap")
    if not exists(path):
      raise CheckpointError(f"no checkpoint at {path}.")
  meta = read_meta(path)
  like = jax.tree.map(_concrete, like)
  try:
    target = jax.device_get(serialization.to_state_dict(like))
    restored = ocp.PyTreeCheckpointer().restore(os.path.join(path, _TREE), item=target)
    tree = serialization.from_state_dict(like, restored)
    leaves_like = jax.tree.leaves(like)
    leaves = jax.tree.leaves(tree)
    if len(leaves) != len(leaves_like) or any(
        getattr(a, "shape", None) != getattr(b, "shape", None) for a, b in zip(leaves, leaves_like)):
      raise ValueError("restored shapes differ from the model's")
  except CheckpointError:
    raise
  except Exception as e:  # Orbax/tensorstore raise many types on corrupt data.
    raise CheckpointError(f"checkpoint {path} is corrupt or from another model"
                          f" ({type(e).__name__}: {str(e)[:300]}).") from None
  return tree, meta


def _concrete(leaf: Any) -> Any:
  """A zero array for an abstract leaf (``jax.ShapeDtypeStruct``), else the leaf."""
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return np.zeros(leaf.shape, leaf.dtype)
  return leaf


def restore_from_init(path: str, init: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
  """Restores the tree that ``init()`` would build, without running ``init``.

  The one way dreamjax rebuilds a checkpoint's template: ``jax.eval_shape``
  traces ``init`` (a model or optimiser initialiser) for shapes and dtypes
  only, so loading a classifier or a generator costs no initialisation.
  """
  return restore(path, jax.eval_shape(init))


def remove(path: str) -> None:
  sharding.sync("checkpoint-remove-start")
  if sharding.is_primary():
    for p in (path, path + ".partial", path + ".old"):
      shutil.rmtree(p, ignore_errors=True)
  sharding.sync("checkpoint-remove")


def save_tree(path: str, tree: Any, meta: dict[str, Any] | None = None) -> None:
  """One-file msgpack snapshot of a pytree of arrays (no template needed to read).

  Used for finished artefacts (trained generators, pretrained trunks) that are
  reused whole; training runs use the Orbax checkpoints above.
  """
  from dreamjax.fileio import atomic_path  # pylint: disable=g-import-not-at-top
  payload = {"tree": jax.device_get(serialization.to_state_dict(tree)), "meta": json.dumps(meta or {})}
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(serialization.msgpack_serialize(payload))


def load_tree(path: str) -> tuple[Any, dict[str, Any]]:
  try:
    with open(path, "rb") as f:
      payload = serialization.msgpack_restore(f.read())
    return payload["tree"], json.loads(payload["meta"])
  except FileNotFoundError:
    raise CheckpointError(f"no snapshot at {path}.") from None
  except Exception as e:  # msgpack raises several types on damaged bytes.
    raise CheckpointError(f"snapshot {path} is corrupt ({type(e).__name__}: {str(e)[:200]}).") from None
