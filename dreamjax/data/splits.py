"""The study's splits of a dataset, deterministic for a seed.

From the official training images: a validation split (model monitoring only),
a stratified labeled subset of ``num_labeled`` images (equal per class), and
the unlabeled pool (everything else, returned *without* labels so no arm can
read them). The official test split is kept for final evaluation.
"""

import dataclasses

import numpy as np

from dreamjax.data.sources import RawDataset
from dreamjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Splits:
  """Float32 images in [0, 1], NHWC; int32 labels."""
  name: str
  seed: int
  num_classes: int
  class_names: tuple[str, ...]
  labeled_images: np.ndarray
  labeled_labels: np.ndarray
  labeled_index: np.ndarray  # positions in the official training split
  pool_images: np.ndarray    # unlabeled pool: no labels on purpose
  pool_index: np.ndarray
  val_images: np.ndarray
  val_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  data_source: str = ""  # the folder (or TFDS dir) the images were read from
  data_digest: str = ""  # sha256 of the files read (dreamjax.data.sources)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.test_images.shape[1:])


def to_float(images_u8: np.ndarray) -> np.ndarray:
  return images_u8.astype(np.float32) / 255.0


def split_indices(labels: np.ndarray, num_classes: int, num_labeled: int, val_size: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Returns (labeled, pool, val) index arrays into the training split.

  ``num_labeled=-1`` labels every training image outside the validation split.
  """
  n = len(labels)
  if val_size < 0 or val_size >= n:
    raise ConfigError(f"val_size={val_size} must be in [0, {n - 1}] (the training split"
                      f" has {n} images).")
  order = np.random.default_rng(seed).permutation(n)
  val, rest = order[:val_size], order[val_size:]
  if num_labeled == -1:
    return np.sort(rest), np.zeros((0,), np.int64), np.sort(val)
  if num_labeled <= 0 or num_labeled % num_classes:
    raise ConfigError(f"num_labeled={num_labeled} must be a positive multiple of the"
                      f" number of classes ({num_classes}) so every class gets the same"
                      " number of labels, or -1 for all labels.")
  per_class = num_labeled // num_classes
  rest_labels = labels[rest]
  chosen = []
  for c in range(num_classes):
    of_class = rest[rest_labels == c]
    if len(of_class) < per_class:
      raise ConfigError(f"num_labeled={num_labeled} asks for {per_class} images of class {c},"
                        f" but only {len(of_class)} are left outside the validation split;"
                        f" use at most {num_classes * min(np.bincount(rest_labels, minlength=num_classes))}.")
    chosen.append(of_class[:per_class])
  labeled = np.sort(np.concatenate(chosen))
  pool = np.setdiff1d(rest, labeled)
  return labeled, pool, np.sort(val)


def make_splits(raw: RawDataset, *, num_labeled: int, val_size: int, seed: int) -> Splits:
  labeled, pool, val = split_indices(raw.train_labels, raw.num_classes, num_labeled,
                                     val_size, seed)
  return Splits(
      name=raw.name, seed=seed, num_classes=raw.num_classes, class_names=raw.class_names,
      labeled_images=to_float(raw.train_images[labeled]),
      labeled_labels=raw.train_labels[labeled],
      labeled_index=labeled,
      pool_images=to_float(raw.train_images[pool]),
      pool_index=pool,
      val_images=to_float(raw.train_images[val]),
      val_labels=raw.train_labels[val],
      test_images=to_float(raw.test_images),
      test_labels=raw.test_labels,
      data_source=raw.source,
      data_digest=raw.digest,
  )
