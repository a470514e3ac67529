import os

import numpy as np
import pytest

from dreamjax import data
from dreamjax.data import idx
from dreamjax.errors import ConfigError, DataError


def test_real_fashion_mnist_loads(real_data_dir):
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  assert raw.train_images.shape == (60000, 28, 28, 1)
  assert raw.test_images.shape == (10000, 28, 28, 1)
  assert raw.train_images.dtype == np.uint8
  assert raw.num_classes == 10 and raw.class_names[9] == "Ankle boot"
  np.testing.assert_array_equal(np.bincount(raw.train_labels), np.full(10, 6000))


def test_missing_dataset_names_paths_and_fixes(tmp_path):
  with pytest.raises(DataError) as e:
    data.load_dataset("fashion_mnist", str(tmp_path / "nowhere"))
  msg = str(e.value)
  assert str(tmp_path / "nowhere") in msg
  assert "apt-get install dataset-fashion-mnist" in msg and "data_dir" in msg


def test_partial_dataset_names_missing_files(synthetic_dir):
  os.remove(os.path.join(synthetic_dir, "t10k-labels-idx1-ubyte.gz"))
  with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
    data.load_dataset("idx:" + synthetic_dir)


def test_image_label_count_mismatch(synthetic_dir):
  idx.write_idx(os.path.join(synthetic_dir, "train-labels-idx1-ubyte.gz"),
                np.zeros(7, np.uint8))
  with pytest.raises(DataError, match="300 images but 7 labels"):
    data.load_dataset("idx:" + synthetic_dir)


def test_unknown_dataset_name():
  with pytest.raises(DataError, match="unknown dataset"):
    data.load_dataset("cifar_from_nowhere")


def test_splits_stratified_disjoint_deterministic(synthetic_dir):
  raw = data.load_dataset("idx:" + synthetic_dir)
  a = data.make_splits(raw, num_labeled=50, val_size=40, seed=3)
  b = data.make_splits(raw, num_labeled=50, val_size=40, seed=3)
  c = data.make_splits(raw, num_labeled=50, val_size=40, seed=4)
  np.testing.assert_array_equal(a.labeled_index, b.labeled_index)
  np.testing.assert_array_equal(a.labeled_images, b.labeled_images)
  assert not np.array_equal(a.labeled_index, c.labeled_index)
  np.testing.assert_array_equal(np.bincount(a.labeled_labels, minlength=10), np.full(10, 5))
  _, _, val_idx = data.split_indices(raw.train_labels, 10, 50, 40, 3)
  sets = [set(a.labeled_index), set(a.pool_index), set(val_idx)]
  assert len(sets[0] | sets[1] | sets[2]) == 300
  assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
  assert a.labeled_images.dtype == np.float32 and a.labeled_images.max() <= 1.0
  assert not hasattr(a, "pool_labels")  # the pool is unlabeled by construction
  assert len(a.test_labels) == 100


@pytest.mark.parametrize("n,match", [(55, "multiple"), (0, "multiple"), (-5, "multiple"),
                                     (300, "only")])
def test_bad_label_budget(synthetic_dir, n, match):
  raw = data.load_dataset("idx:" + synthetic_dir)
  with pytest.raises(ConfigError, match=match):
    data.make_splits(raw, num_labeled=n, val_size=40, seed=0)


def test_all_labels(synthetic_dir):
  raw = data.load_dataset("idx:" + synthetic_dir)
  s = data.make_splits(raw, num_labeled=-1, val_size=40, seed=0)
  assert len(s.labeled_labels) == 260 and len(s.pool_index) == 0
