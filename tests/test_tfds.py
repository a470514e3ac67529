"""The TFDS path, on TFDS's own mock data (no download, no TensorFlow)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dreamjax import data
from dreamjax.errors import DataError


def test_tfds_mnist_through_mock_data():
  with tfds.testing.mock_data(num_examples=30):
    raw = data.load_dataset("tfds:mnist")
  assert raw.name == "tfds:mnist"
  assert raw.train_images.shape == (30, 28, 28, 1) and raw.train_images.dtype == np.uint8
  assert raw.test_images.shape == (30, 28, 28, 1)
  assert raw.num_classes == 10 and raw.train_labels.max() < 10
  splits = data.make_splits(raw, num_labeled=-1, val_size=5, seed=0)
  assert splits.labeled_images.shape == (25, 28, 28, 1)


def test_tfds_cifar10_shape_and_channels():
  with tfds.testing.mock_data(num_examples=12):
    raw = data.load_dataset("tfds:cifar10")
  assert raw.train_images.shape == (12, 32, 32, 3)


def test_tfds_unknown_name():
  with pytest.raises(DataError, match="no dataset"):
    data.load_dataset("tfds:surely_not_a_dataset_xyz")


def test_tfds_not_image_classification():
  with pytest.raises(DataError, match="image-classification|supervised"):
    data.load_dataset("tfds:imdb_reviews")
