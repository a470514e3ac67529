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


# --- DREAMJAX_DATA_DIR: refused like --config.data_dir, never silently ignored ---------

def _two_of_four(folder):
  os.remove(os.path.join(folder, "t10k-images-idx3-ubyte.gz"))
  os.remove(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))
  return folder


@pytest.mark.parametrize("make, problem", [
    (lambda tmp, syn: str(tmp / "nowhere"), "no such folder"),
    (lambda tmp, syn: os.path.join(syn, "train-images-idx3-ubyte.gz"), "a file, not a folder"),
    (lambda tmp, syn: _two_of_four(syn), "missing t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"),
    (lambda tmp, syn: str(tmp), "holds none of the four IDX files"),
])
@pytest.mark.parametrize("setting", ["DREAMJAX_DATA_DIR", "--config.data_dir"])
def test_bad_data_folder_is_refused_by_name(tmp_path, synthetic_dir, monkeypatch, make, problem,
                                            setting):
  folder = make(tmp_path, synthetic_dir)
  if setting == "DREAMJAX_DATA_DIR":
    monkeypatch.setenv("DREAMJAX_DATA_DIR", folder)
    load = lambda: data.load_dataset("fashion_mnist")  # noqa: E731
  else:
    monkeypatch.delenv("DREAMJAX_DATA_DIR", raising=False)
    load = lambda: data.load_dataset("fashion_mnist", folder)  # noqa: E731
  with pytest.raises(DataError) as e:
    load()  # not a fall back to /usr/share/datasets/fashion-mnist
  message = str(e.value)
  assert message.startswith(f"{setting}={folder}: ") and problem in message
  assert "apt-get install dataset-fashion-mnist" in message
  fix = "unset it" if setting == "DREAMJAX_DATA_DIR" else "--config.data_dir=/the/folder"
  assert fix in message


def test_data_dir_setting_wins_over_environment(synthetic_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("DREAMJAX_DATA_DIR", str(tmp_path / "nowhere"))
  raw = data.load_dataset("fashion_mnist", synthetic_dir)
  assert raw.source == os.path.abspath(synthetic_dir)


def test_environment_folder_is_read_and_recorded(synthetic_dir, monkeypatch):
  monkeypatch.setenv("DREAMJAX_DATA_DIR", synthetic_dir)
  raw = data.load_dataset("fashion_mnist")
  assert raw.train_images.shape == (300, 28, 28, 1)
  assert raw.source == os.path.abspath(synthetic_dir)


def test_digest_names_the_data_not_its_packing(tmp_path):
  from conftest import write_idx_dataset  # pylint: disable=g-import-not-at-top
  gz = data.load_dataset("idx:" + write_idx_dataset(tmp_path / "gz", compress=True))
  plain = data.load_dataset("idx:" + write_idx_dataset(tmp_path / "plain", compress=False))
  assert len(gz.digest) == 64 and gz.digest == plain.digest
  assert gz.source != plain.source
  labels = os.path.join(tmp_path, "plain", "train-labels-idx1-ubyte")
  with open(labels, "r+b") as f:  # one label changed: another dataset
    f.seek(8 + 17)
    value = f.read(1)[0]
    f.seek(8 + 17)
    f.write(bytes([(value + 1) % 10]))
  assert data.load_dataset("idx:" + os.path.dirname(labels)).digest != gz.digest


# sha256 of the four official Fashion-MNIST IDX files, decompressed, as
# dreamjax reads them (Debian's dataset-fashion-mnist ships Zalando's files).
FASHION_MNIST_DIGEST = "4f4a9be377455640fdccf471de649b933245e0e4fc67066499aee0a3d3de5a95"


def test_real_fashion_mnist_provenance(real_data_dir):
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  assert raw.source == os.path.abspath(real_data_dir)
  assert raw.digest == FASHION_MNIST_DIGEST


def test_raw_dataset_without_provenance_still_constructs():
  x = np.zeros((2, 4, 4, 1), np.uint8)
  y = np.zeros(2, np.int32)
  raw = data.RawDataset("custom", x, y, x, y, 1, ("only",))
  assert raw.source == "" and raw.digest == ""
