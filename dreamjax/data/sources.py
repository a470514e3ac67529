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
"""

import dataclasses
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
  """Full official splits, as stored: uint8 images ``[N, H, W, C]``."""
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


def load_dataset(name: str = "fashion_mnist", data_dir: str | None = None) -> RawDataset:
  if name == "fashion_mnist":
    return load_idx_dataset(data_dir, name=name, class_names=FASHION_MNIST_CLASSES)
  if name.startswith("idx:"):
    return load_idx_dataset(name[4:], name=name)
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
                     class_names: tuple[str, ...] | None = None) -> RawDataset:
  if data_dir:
    folders = [data_dir]
  else:
    folders = [d for d in [os.environ.get("DREAMJAX_DATA_DIR")] if d] + list(DEFAULT_IDX_DIRS)
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
  for key, stem in IDX_FILES.items():
    arrays[key] = idx.read_idx(_find_idx(folder, stem), ndim=3 if "images" in key else 1)
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
  )


def load_tfds_dataset(name: str, data_dir: str | None = None) -> RawDataset:
  """Reads a prepared TFDS image-classification dataset as numpy arrays."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # TFDS raises several types for unknown names.
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
  splits = {}
  for split in ("train", "test"):
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:
      raise DataError(
          f"TFDS dataset {name!r}, split {split!r}, could not be opened from"
          f" {data_dir or tfds.core.constants.DATA_DIR} ({type(e).__name__}: {str(e)[:300]}).\n"
          f"dreamjax reads array_record files without TensorFlow: prepare it with"
          f" `tfds build {name} --file_format=array_record`, or pass --config.data_dir.") from None
    images, labels = [], []
    for i in range(len(source)):
      example = source[i]
      images.append(np.asarray(example[image_key], np.uint8))
      labels.append(int(example[label_key]))
    if not images:
      raise DataError(f"TFDS dataset {name!r}, split {split!r}, is empty.")
    splits[split] = (np.stack(images), np.asarray(labels, np.int32))
  return RawDataset(
      name=f"tfds:{name}",
      train_images=splits["train"][0], train_labels=splits["train"][1],
      test_images=splits["test"][0], test_labels=splits["test"][1],
      num_classes=label_feature.num_classes,
      class_names=tuple(label_feature.names),
  )
