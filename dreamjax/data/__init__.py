"""Data: offline IDX and TFDS sources, the study's splits, augmented-set files."""

from dreamjax.data import augfile
from dreamjax.data.augfile import AugmentedSet
from dreamjax.data.sources import FASHION_MNIST_CLASSES, RawDataset, load_dataset
from dreamjax.data.splits import Splits, make_splits, split_indices

__all__ = ["augfile", "AugmentedSet", "FASHION_MNIST_CLASSES", "RawDataset", "load_dataset",
           "Splits", "make_splits", "split_indices", "load_splits"]


def load_splits(config) -> Splits:
  """Loads ``config.dataset`` and splits it with ``config``'s budget and seed."""
  raw = load_dataset(config.dataset, config.data_dir or None)
  return make_splits(raw, num_labeled=config.num_labeled, val_size=config.val_size,
                     seed=config.seed)
