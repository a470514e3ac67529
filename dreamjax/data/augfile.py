"""The augmented-dataset file: generated images with labels and provenance.

One ``.npz`` (see README, "Augmented-dataset files") holding

* ``images``: float32 ``[M, H, W, C]`` in [0, 1];
* ``labels``: int32 ``[M]`` in [0, num_classes);
* ``source_index``: int64 ``[M]``, the real training image each one came from
  (position in the official training split), or -1 if none;
* ``metadata``: a JSON string: method, config, seed, dreamjax version, ...

Files are written atomically and read with ``allow_pickle=False``: nothing in
them is ever unpickled.
"""

import dataclasses
import json
import os
import zipfile
from typing import Any, Callable

import numpy as np

import dreamjax
from dreamjax.errors import DataError
from dreamjax.plumbing.fileio import atomic_path

REQUIRED = ("images", "labels", "source_index", "metadata")


@dataclasses.dataclass(frozen=True)
class AugmentedSet:
  images: np.ndarray
  labels: np.ndarray
  source_index: np.ndarray
  metadata: dict[str, Any]

  def __len__(self) -> int:
    return len(self.labels)


def validate(images, labels, source_index, *, name: str, num_classes: int | None = None,
             image_shape: tuple[int, ...] | None = None) -> None:
  """Raises :class:`DataError` naming ``name`` and the first fault found."""
  for key, arr in (("images", images), ("labels", labels), ("source_index", source_index)):
    if not isinstance(arr, np.ndarray) or arr.dtype == object:
      raise DataError(f"{name}: '{key}' must be a numeric array, not {type(arr).__name__}"
                      f" of {getattr(arr, 'dtype', '?')}.")
  if images.ndim != 4:
    raise DataError(f"{name}: 'images' has shape {images.shape}; expected [M, H, W, C].")
  if images.dtype != np.float32:
    raise DataError(f"{name}: 'images' has dtype {images.dtype}; expected float32 in [0, 1].")
  if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
    raise DataError(f"{name}: images are {tuple(images.shape[1:])} but the dataset's are"
                    f" {tuple(image_shape)}.")
  if not np.all(np.isfinite(images)):
    raise DataError(f"{name}: 'images' holds NaN or Inf pixels"
                    f" ({int(np.sum(~np.isfinite(images)))} of them).")
  if images.size and (images.min() < 0.0 or images.max() > 1.0):
    raise DataError(f"{name}: pixels span [{images.min():.3g}, {images.max():.3g}];"
                    " expected [0, 1].")
  if labels.shape != (len(images),) or source_index.shape != (len(images),):
    raise DataError(f"{name}: {len(images)} images but labels {labels.shape} and"
                    f" source_index {source_index.shape}; each needs one entry per image.")
  if not np.issubdtype(labels.dtype, np.integer) or not np.issubdtype(source_index.dtype, np.integer):
    raise DataError(f"{name}: 'labels' ({labels.dtype}) and 'source_index'"
                    f" ({source_index.dtype}) must be integer arrays.")
  if labels.size and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
    raise DataError(f"{name}: labels span [{labels.min()}, {labels.max()}]; expected"
                    f" [0, {num_classes if num_classes is not None else 'num_classes'}).")
  if source_index.size and source_index.min() < -1:
    raise DataError(f"{name}: source_index has {source_index.min()}; expected >= -1.")


def save(path: str, images, labels, source_index, metadata: dict[str, Any]) -> None:
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  source_index = np.asarray(source_index, np.int64)
  validate(images, labels, source_index, name=path)
  metadata = {"dreamjax_version": dreamjax.__version__, **metadata}
  text = json.dumps(metadata, sort_keys=True, default=lambda x: getattr(x, "tolist", str)())
  with atomic_path(path) as tmp:
    np.savez(tmp, images=images, labels=labels, source_index=source_index,
             metadata=np.asarray(text))


_EXPECTED = ("an .npz (zip) archive of numeric arrays images, labels, source_index and"
             " metadata, as dreamjax.data.augfile.save and the experiments/ scripts write it"
             " (see README, 'Augmented-dataset files')")


def _check_is_npz(path: str) -> None:
  """Refuses a file that is not a zip archive before numpy guesses what it is.

  ``np.load`` takes anything that is neither a zip nor an ``.npy`` for a
  pickle, so a text file would be reported as holding object arrays.
  """
  if os.path.isdir(path):
    raise DataError(f"{path}: is a folder, not an augmented-dataset file; pass {_EXPECTED}.")
  if zipfile.is_zipfile(path):
    return
  try:
    with open(path, "rb") as f:
      head = f.read(64)
  except OSError as e:
    raise DataError(f"{path}: cannot read ({e.strerror}).") from None
  if head.startswith(b"PK"):
    return  # a damaged zip: np.load below names the damage
  if head.startswith(b"\x93NUMPY"):
    kind = "a single-array .npy file"
  elif not head:
    kind = "empty"
  elif all(32 <= b < 127 or b in b"\t\r\n" for b in head):
    kind = f"a text file (it starts {head[:40].decode(errors='replace')!r})"
  else:
    kind = f"not a zip archive (it starts with bytes {head[:8].hex()})"
  raise DataError(f"{path}: not an .npz file: {kind}. An augmented-dataset file must be"
                  f" {_EXPECTED}.")


def load(path: str, *, num_classes: int | None = None,
         image_shape: tuple[int, ...] | None = None) -> AugmentedSet:
  if not os.path.exists(path):
    raise DataError(f"augmented-dataset file {path!r} does not exist.")
  _check_is_npz(path)
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in REQUIRED if k not in f.files]
      if missing:
        raise DataError(f"{path}: not a dreamjax augmented-dataset file: missing"
                        f" {', '.join(missing)} (has {', '.join(f.files) or 'nothing'}).")
      arrays = {k: f[k] for k in REQUIRED}
  except DataError:
    raise
  except ValueError as e:
    if "pickle" in str(e).lower():
      raise DataError(f"{path}: holds object arrays, which would need unpickling;"
                      " dreamjax refuses them. Write numeric arrays only.") from None
    raise DataError(f"{path}: unreadable .npz ({e}).") from None
  except (OSError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f"{path}: corrupt or truncated .npz ({e}).") from None
  try:
    metadata = json.loads(str(arrays["metadata"]))
    if not isinstance(metadata, dict):
      raise ValueError("not a JSON object")
  except ValueError as e:
    raise DataError(f"{path}: 'metadata' is not a JSON object ({e}).") from None
  validate(arrays["images"], arrays["labels"], arrays["source_index"], name=path,
           num_classes=num_classes, image_shape=image_shape)
  return AugmentedSet(arrays["images"], arrays["labels"].astype(np.int32),
                      arrays["source_index"].astype(np.int64), metadata)


def load_kept(path: str, *, num_classes: int, image_shape: tuple[int, ...],
              log: Callable[[str], None], again: str) -> AugmentedSet | None:
  """The set an earlier run kept at ``path``, or None when there is none or it is
  damaged; then ``log`` hears ``again`` (what its maker does instead) and why."""
  if not os.path.exists(path):
    return None
  try:
    return load(path, num_classes=num_classes, image_shape=image_shape)
  except DataError as e:
    log(f"{again} ({e})")
    return None
