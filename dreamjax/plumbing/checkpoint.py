"""Orbax checkpoints of explicit pytrees, with corruption turned into errors.

A checkpoint folder holds the pytree (Orbax's own atomic write: a temporary
folder renamed when complete) and ``dreamjax.json`` with the fingerprint of
the config that made it, so a resume from another config is refused.

Orbax's array files carry no checksum: a flipped bit on disk would restore as
silently wrong weights. So every checkpoint (and every :func:`save_tree`
snapshot) records a sha256 digest of its arrays (:func:`tree_digest`) and of
its metadata, and a restore that does not reproduce them raises
:class:`CheckpointError`. Checkpoints written before digests existed load
unverified. A full disk raises :class:`DiskFullError` and leaves the previous
checkpoint as it was.

In a multi-host job every process calls :func:`save`, :func:`restore` and
:func:`remove` alike (the folder must be on storage every host sees); Orbax
writes the arrays once, process 0 alone moves folders and writes the
metadata, and barriers keep the other processes from reading ahead of it.
"""

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from dreamjax.plumbing import sharding
from dreamjax.errors import CheckpointError, is_disk_full
from dreamjax.plumbing.fileio import atomic_path, jsonable, translate_disk_full

_META = "dreamjax.json"
_TREE = "tree"
# Keys dreamjax adds to a checkpoint's metadata.
TREE_DIGEST = "tree_sha256"
META_DIGEST = "meta_sha256"


class _QuietOrbax(logging.Filter):
  """Orbax logs every save step at INFO; dreamjax's own progress lines suffice.

  On a full disk Orbax also logs the error, with its traceback, from each of
  its writer threads; :func:`save` raises it once as a one-line
  :class:`~dreamjax.errors.DiskFullError`, so those copies are dropped too.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    if "/orbax/" not in record.pathname:
      return True
    if record.levelno < logging.WARNING:
      return False
    error = record.exc_info[1] if record.exc_info else None
    return not (is_disk_full(error) if error else is_disk_full(ValueError(record.getMessage())))


logging.getLogger("absl").addFilter(_QuietOrbax())


def _closed_loop_callback(unraisable: Any) -> bool:
  """True for a result delivered to an asyncio loop that had already closed.

  Orbax runs tensorstore's reads and writes on a private asyncio loop and
  closes it as soon as one of them fails (a damaged checkpoint, a full disk);
  tensorstore then completes the others on its own threads and hands each
  result to ``loop.call_soon_threadsafe``, which raises "Event loop is closed"
  and Python prints it as an unraisable traceback, a dozen at a time. Nothing
  waits for those results any more and the first failure is raised to the
  caller, so they are noise. Only that exact case matches.
  """
  error, tb = unraisable.exc_value, unraisable.exc_traceback
  return (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
          and tb is not None and tb.tb_frame.f_code.co_name == "call_soon_threadsafe")


def _install_unraisable_filter() -> None:
  previous = sys.unraisablehook
  if getattr(previous, "_dreamjax_filter", False):
    return  # already installed (module reloaded)

  def hook(unraisable):
    if not _closed_loop_callback(unraisable):
      previous(unraisable)

  hook._dreamjax_filter = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


_install_unraisable_filter()


def tree_digest(tree: Any) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes, in path order.

  The same for a pytree before a save and after its restore (host numpy
  arrays either way), and different if any bit of any array differs.
  """
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for key, leaf in sorted(((jax.tree_util.keystr(k), v) for k, v in leaves), key=lambda kv: kv[0]):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{key}\0{a.dtype.str}\0{a.shape}\0{a.nbytes}\0".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _meta_digest(meta: dict[str, Any]) -> str:
  """sha256 of the metadata as JSON, without the digests themselves."""
  body = {k: v for k, v in meta.items() if k not in (TREE_DIGEST, META_DIGEST)}
  # Canonical text of the JSON as it reads back (tuples become lists, ...).
  text = json.dumps(json.loads(json.dumps(body, default=jsonable)), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()


def exists(path: str) -> bool:
  return os.path.exists(os.path.join(path, _META))


def save(path: str, tree: Any, meta: dict[str, Any]) -> None:
  """Saves ``tree`` (any Flax/optax pytree) and ``meta`` under ``path``.

  ``meta`` is stored with two more keys, ``tree_sha256`` and ``meta_sha256``,
  which :func:`restore` checks. On a full disk it raises
  :class:`DiskFullError`, removes the half-written ``<path>.partial`` and
  leaves the previous checkpoint at ``path`` as it was.
  """
  path = os.path.abspath(path)
  tmp = path + ".partial"
  primary = sharding.is_primary()
  try:
    with translate_disk_full(path):
      if primary:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
      sharding.sync("checkpoint-save-start")
      state = sharding.to_host(serialization.to_state_dict(tree))
      meta = {**meta, TREE_DIGEST: tree_digest(state)}
      meta[META_DIGEST] = _meta_digest(meta)
      ocp.PyTreeCheckpointer().save(os.path.join(tmp, _TREE), state)
      if primary:
        # A plain write (fileio's would wait for the other processes): the folder
        # rename below is what makes the checkpoint appear whole.
        with open(os.path.join(tmp, _META), "w") as f:
          json.dump(meta, f, indent=2, sort_keys=True, default=jsonable)
          f.flush()
          os.fsync(f.fileno())
        # Swap in the finished folder; the old checkpoint is removed only after.
        old = path + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(path):
          os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
  except BaseException:
    if primary:  # a rerun must not find (or trip over) a half-written folder
      _remove_lingering(tmp)
    raise
  sharding.sync("checkpoint-save-done")


def _remove_lingering(folder: str, patience_s: float = 5.0) -> None:
  """Removes ``folder`` even while tensorstore's abandoned writes still add to it.

  When one write of a save fails (a full disk) Orbax raises at once, but
  tensorstore finishes or fails the others on its own threads a moment later,
  recreating files in the folder just removed; so remove until it stays gone.
  """
  deadline = time.monotonic() + patience_s
  gone_since = None
  while time.monotonic() < deadline:
    if os.path.exists(folder):
      shutil.rmtree(folder, ignore_errors=True)
      gone_since = None
    elif gone_since is None:
      gone_since = time.monotonic()
    elif time.monotonic() - gone_since > 0.2:
      return
    time.sleep(0.05)


def read_meta(path: str) -> dict[str, Any]:
  """The checkpoint's metadata; CheckpointError if unreadable or not as saved."""
  try:
    with open(os.path.join(path, _META)) as f:
      meta = json.load(f)
    if not isinstance(meta, dict):
      raise ValueError("not a JSON object")
  except (OSError, ValueError) as e:
    raise CheckpointError(f"checkpoint {path}: unreadable metadata ({e}).",
                          "Delete that folder and rerun to train again.") from None
  if META_DIGEST in meta and meta[META_DIGEST] != _meta_digest(meta):
    raise _damaged(path, "metadata")
  return meta


def _damaged(path: str, what: str) -> CheckpointError:
  return CheckpointError(
      f"checkpoint {path} is damaged: its {what} do not match the sha256 digest recorded when"
      " it was saved (bytes changed on disk since), so its numbers cannot be trusted.",
      "Delete it and rerun to recompute it.")


def restore(path: str, like: Any) -> tuple[Any, dict[str, Any]]:
  """Restores into the structure of ``like``; raises CheckpointError if broken.

  Broken: missing, unreadable, from another model, or damaged (its arrays or
  metadata differ from the digests saved with them; a checkpoint without
  digests, from before they were added, loads unverified).
  """
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
    if TREE_DIGEST in meta and tree_digest(restored) != meta[TREE_DIGEST]:
      raise _damaged(path, "arrays")
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
  _remove_old(path)
  return tree, meta


def _remove_old(path: str) -> None:
  """Removes ``<path>.old`` once ``path`` has restored whole and verified.

  :func:`save` swaps a new checkpoint in by renaming the previous one to
  ``<path>.old``, renaming the new one into place, then removing the old
  one. A save stopped (Ctrl-C, SIGTERM, a kill) after the new one is in
  place but before the old one is gone leaves both; a later save would
  remove it, but the last save of a run has no later one. So the next
  restore removes it, once ``path`` has proved good: the last good
  checkpoint is never the one removed. Only process 0 touches it; no other
  process reads ``<path>.old`` before the next barrier.
  """
  old = path + ".old"
  if sharding.is_primary() and os.path.exists(old):
    shutil.rmtree(old, ignore_errors=True)


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
  reused whole; training runs use the Orbax checkpoints above. The file also
  holds a digest of the arrays and of ``meta`` that :func:`load_tree` checks.
  A full disk raises :class:`DiskFullError` and leaves no file.
  """
  state = jax.device_get(serialization.to_state_dict(tree))
  meta_text = json.dumps(meta or {})
  payload = {"tree": state, "meta": meta_text, "sha256": _snapshot_digest(state, meta_text)}
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(serialization.msgpack_serialize(payload))


def _snapshot_digest(state: Any, meta_text: str) -> str:
  return hashlib.sha256(f"{tree_digest(state)}\0{meta_text}".encode()).hexdigest()


def load_tree(path: str) -> tuple[Any, dict[str, Any]]:
  """(tree, meta) of a :func:`save_tree` snapshot; CheckpointError if missing or damaged."""
  try:
    with open(path, "rb") as f:
      payload = serialization.msgpack_restore(f.read())
    tree, meta_text = payload["tree"], payload["meta"]
    digest = payload.get("sha256")  # absent in snapshots from before digests
    meta = json.loads(meta_text)
  except FileNotFoundError:
    raise CheckpointError(f"no snapshot at {path}.") from None
  except Exception as e:  # msgpack raises several types on damaged bytes.
    raise CheckpointError(f"snapshot {path} is corrupt ({type(e).__name__}: {str(e)[:200]}).",
                          "Delete it and rerun to recompute it.") from None
  if digest is not None and digest != _snapshot_digest(tree, meta_text):
    raise CheckpointError(f"snapshot {path} is damaged: its arrays or metadata do not match"
                          " the sha256 digest recorded when it was saved (bytes changed on"
                          " disk since), so it cannot be trusted.",
                          "Delete it and rerun to recompute it.")
  return tree, meta
