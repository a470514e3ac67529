"""Where images come from: Fashion-MNIST IDX files offline, or any TFDS dataset.

``load_dataset(name)`` returns the full train and test splits as uint8 NHWC
arrays. Names:

* ``fashion_mnist`` (default): the four IDX files, gzipped or raw, from
  ``data_dir`` or the folders in :data:`DEFAULT_IDX_DIRS` (Debian's
  ``dataset-fashion-mnist`` package installs them there). The same reader
  takes MNIST's files, which share the format: ``idx:/path/to/folder``.
* ``tfds:NAME`` (e.g. ``tfds:mnist``, ``tfds:cifar10``): a prepared TFDS image
  classification dataset in the user's TFDS data dir, read through
  ``tfds.data_source`` (array_record files; no TensorFlow needed).

Every :class:`RawDataset` says what was read: ``source`` (the folder) and
``digest`` (sha256 of the data), so results can name their data exactly.
"""

import dataclasses
import hashlib
import os

import numpy as np

from dreamjax.data import idx
from dreamjax.errors import DataError

DEFAULT_IDX_DIRS = ("/usr/share/datasets/fashion-mnist",)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclasses.dataclass(frozen=True)
class RawDataset:
  """Full official splits, as stored: uint8 images ``[N, H, W, C]``.

  ``source``: the folder read (the IDX folder, or the TFDS dataset's versioned
  folder). ``digest``: sha256 of what was read there (the four IDX files'
  bytes, decompressed; for TFDS the decoded arrays); equal digests mean the
  same data.
  """
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]
  source: str = ""
  digest: str = ""

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


def load_dataset(name: str = "fashion_mnist", data_dir: str | None = None) -> RawDataset:
  if name == "fashion_mnist":
    return load_idx_dataset(data_dir, name=name, class_names=FASHION_MNIST_CLASSES,
                            origin="--config.data_dir" if data_dir else None)
  if name.startswith("idx:"):
    return load_idx_dataset(name[4:], name=name, origin="--config.dataset=idx:")
  if name.startswith("tfds:"):
    return load_tfds_dataset(name[5:], data_dir=data_dir)
  raise DataError(f"unknown dataset {name!r}. Use 'fashion_mnist' (offline IDX files),"
                  " 'idx:/folder/with/idx/files' or 'tfds:NAME' (e.g. tfds:mnist).")


def _find_idx(folder: str, stem: str) -> str | None:
  for candidate in (stem + ".gz", stem):
    path = os.path.join(folder, candidate)
    if os.path.exists(path):
      return path
  return None


def missing_dataset_message(tried: list[str]) -> str:
  return (
      "Fashion-MNIST not found. Looked for the four IDX files "
      f"({', '.join(v + '[.gz]' for v in IDX_FILES.values())}) in: "
      + ", ".join(tried) + ".\nFix it either way:\n"
      "  1. as root: apt-get install dataset-fashion-mnist   (Debian/Ubuntu;"
      " installs them under /usr/share/datasets/fashion-mnist)\n"
      "  2. put the four files in a folder and pass --config.data_dir=/that/folder"
      " (or set DREAMJAX_DATA_DIR)")


def load_idx_dataset(data_dir: str | None, *, name: str = "idx",
                     class_names: tuple[str, ...] | None = None,
                     origin: str | None = None) -> RawDataset:
  """Reads the four IDX files from ``data_dir``, or from where the user said.

  A folder the user named (``data_dir``, or else ``DREAMJAX_DATA_DIR``) is the
  only place looked: if it is missing, a file or incomplete, that is an error
  naming the setting, never a silent fall back to the default folders.
  ``origin`` names the setting that gave ``data_dir`` in messages.
  """
  env = os.environ.get("DREAMJAX_DATA_DIR", "").strip()
  if data_dir:
    folders, origin = [data_dir], origin or "--config.data_dir"
  elif env:
    folders, origin = [env], "DREAMJAX_DATA_DIR"
  else:
    folders = list(DEFAULT_IDX_DIRS)
  if origin is not None:
    _check_named_folder(folders[0], origin)
  folder = None
  for f in folders:
    if all(_find_idx(f, stem) for stem in IDX_FILES.values()):
      folder = f
      break
  if folder is None:
    for f in folders:  # Some files present: say which are missing.
      present = [s for s in IDX_FILES.values() if _find_idx(f, s)]
      if present:
        missing = [s for s in IDX_FILES.values() if not _find_idx(f, s)]
        raise DataError(f"{f} holds only part of the dataset: missing "
                        f"{', '.join(missing)} (or their .gz). Copy all four IDX files there.")
    raise DataError(missing_dataset_message(folders))
  arrays = {}
  digest = hashlib.sha256()
  for key, stem in IDX_FILES.items():
    path = _find_idx(folder, stem)
    raw = idx.read_idx_bytes(path)
    digest.update(f"{stem}\0{len(raw)}\0".encode())
    digest.update(raw)
    arrays[key] = idx.parse_idx(raw, name=os.path.basename(path),
                                ndim=3 if "images" in key else 1)
  for split in ("train", "test"):
    n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
    if n_img != n_lab:
      raise DataError(f"{folder}: {split} split has {n_img} images but {n_lab} labels;"
                      " the files do not belong together.")
  if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
    raise DataError(f"{folder}: train images are {arrays['train_images'].shape[1:]} but test"
                    f" images are {arrays['test_images'].shape[1:]}.")
  num_classes = int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1
  if class_names is not None and num_classes > len(class_names):
    raise DataError(f"{folder}: labels go up to {num_classes - 1} but the dataset has"
                    f" {len(class_names)} classes; the label files are corrupt.")
  if class_names is not None:
    num_classes = len(class_names)
  return RawDataset(
      name=name,
      train_images=arrays["train_images"][..., None],
      train_labels=arrays["train_labels"].astype(np.int32),
      test_images=arrays["test_images"][..., None],
      test_labels=arrays["test_labels"].astype(np.int32),
      num_classes=num_classes,
      class_names=class_names or tuple(str(i) for i in range(num_classes)),
      source=os.path.abspath(folder),
      digest=digest.hexdigest(),
  )


def _check_named_folder(folder: str, origin: str) -> None:
  """Refuses a folder the user named unless it holds all four IDX files."""
  setting = f"{origin}{folder}" if origin.endswith(":") else f"{origin}={folder}"
  if not os.path.exists(folder):
    problem = "no such folder"
  elif not os.path.isdir(folder):
    problem = "that is a file, not a folder"
  else:
    missing = [s for s in IDX_FILES.values() if not _find_idx(folder, s)]
    if not missing:
      return
    problem = (f"that folder holds only part of the dataset: missing {', '.join(missing)}"
               " (or their .gz)" if len(missing) < len(IDX_FILES)
               else "that folder holds none of the four IDX files")
  if origin == "DREAMJAX_DATA_DIR":
    other = ("point DREAMJAX_DATA_DIR at the folder that holds them, or unset it to read"
             f" {' or '.join(DEFAULT_IDX_DIRS)}")
  elif origin.startswith("--config.dataset"):
    other = "name the folder that holds them: --config.dataset=idx:/that/folder"
  else:
    other = ("pass --config.data_dir=/the/folder/that/holds/them, or leave it empty to read"
             f" DREAMJAX_DATA_DIR or {' or '.join(DEFAULT_IDX_DIRS)}")
  raise DataError(
      f"{setting}: {problem}. dreamjax reads the four IDX files"
      f" ({', '.join(v + '[.gz]' for v in IDX_FILES.values())}) from the folder named"
      " there and nowhere else. Fix it either way:\n"
      "  1. put all four files there (as root, apt-get install dataset-fashion-mnist"
      f" installs Fashion-MNIST's under {DEFAULT_IDX_DIRS[0]})\n"
      f"  2. {other}")


def load_tfds_dataset(name: str, data_dir: str | None = None) -> RawDataset:
  """Reads a prepared TFDS image-classification dataset as numpy arrays.

  Only reads: a dataset that is not prepared is an error saying how to
  prepare it, never a download in the middle of a run.
  """
  # TFDS takes seconds to import and only a tfds: dataset needs it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # TFDS raises several types for unknown names.
    if isinstance(_root_cause(e), ImportError):
      raise DataError(f"TFDS dataset {name!r} could not be loaded: {_cause_text(e)}") from None
    detail = str(e).split("Available datasets")[0].strip()[:300]
    raise DataError(f"TFDS has no dataset {name!r} ({type(e).__name__}: {detail})."
                    " Check the name with `tfds.list_builders()`.") from None
  features = builder.info.features
  image_key, label_key = builder.info.supervised_keys or ("image", "label")
  if not (isinstance(image_key, str) and isinstance(label_key, str)
          and image_key in features and label_key in features):
    raise DataError(f"TFDS dataset {name!r} has no (image, label) supervised keys;"
                    " dreamjax needs an image-classification dataset.")
  label_feature = features[label_key]
  image_shape = getattr(features[image_key], "shape", None)
  if not isinstance(label_feature, tfds.features.ClassLabel) or image_shape is None or len(image_shape) != 3:
    raise DataError(f"TFDS dataset {name!r} is not an image-classification dataset"
                    f" (features {image_key}={type(features[image_key]).__name__}{image_shape},"
                    f" {label_key}={type(label_feature).__name__}).")
  if None in image_shape:
    raise DataError(f"TFDS dataset {name!r} has images of varying size {image_shape};"
                    " dreamjax needs a fixed image shape.")
  where = data_dir or tfds.core.constants.DATA_DIR
  build = (f"`tfds build {name} --file_format=array_record"
           f"{f' --data_dir={data_dir}' if data_dir else ''}` (it downloads the data)")
  splits = {}
  digest = hashlib.sha256()
  for split in ("train", "test"):
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # noqa: BLE001 - diagnosed below, the cause shown
      if not _is_prepared(builder):
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in {where} (no {builder.data_dir}/"
            f"dataset_info.json). dreamjax only reads prepared datasets: prepare it with"
            f" {build}, or pass --config.data_dir=/the/tfds/data_dir that holds it.") from None
      file_format = getattr(builder.info, "file_format", None)
      if file_format is not None and "array_record" not in str(file_format).lower():
        raise DataError(
            f"TFDS dataset {name!r} in {builder.data_dir} is stored as"
            f" {getattr(file_format, 'value', file_format)}, which needs TensorFlow to read."
            f" dreamjax reads array_record files: prepare it again with {build}.") from None
      raise DataError(
          f"TFDS dataset {name!r}, split {split!r}, could not be opened from"
          f" {builder.data_dir}: {_cause_text(e)}") from None
    images, labels = [], []
    for i in range(len(source)):
      example = source[i]
      images.append(np.asarray(example[image_key], np.uint8))
      labels.append(int(example[label_key]))
    if not images:
      raise DataError(f"TFDS dataset {name!r}, split {split!r}, is empty.")
    splits[split] = (np.stack(images), np.asarray(labels, np.int32))
    for what, a in zip(("images", "labels"), splits[split]):
      digest.update(f"{split}/{what}\0{a.dtype.str}\0{a.shape}\0".encode())
      digest.update(np.ascontiguousarray(a).tobytes())
  return RawDataset(
      name=f"tfds:{name}",
      train_images=splits["train"][0], train_labels=splits["train"][1],
      test_images=splits["test"][0], test_labels=splits["test"][1],
      num_classes=label_feature.num_classes,
      class_names=tuple(label_feature.names),
      source=str(builder.data_dir),
      digest=digest.hexdigest(),
  )


def _is_prepared(builder) -> bool:
  try:
    return bool(builder.is_prepared())
  except Exception:  # noqa: BLE001 - a builder that cannot even tell is not usable
    return False


def _root_cause(error: BaseException) -> BaseException:
  """The innermost exception ``error`` was raised from (TFDS wraps its failures)."""
  seen = {id(error)}
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
    if id(error) in seen:
      break
    seen.add(id(error))
  return error


def _cause_text(error: BaseException) -> str:
  """The real cause of a TFDS failure, and what to do if it is a missing module."""
  root = _root_cause(error)
  text = f"{type(root).__name__}: {str(root)[:300]}"
  if root is not error:
    text = f"{type(error).__name__}: {str(error)[:200]}, caused by {text}"
  if isinstance(root, ImportError):
    module = (getattr(root, "name", None) or "it").split(".")[0]
    return (f"{text}. A module TFDS needs is not installed: `pip install {module}`"
            " (./launch.sh installs what dreamjax needs).")
  return text + ". If the files are damaged, prepare the dataset again."
