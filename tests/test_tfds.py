"""The TFDS path: on TFDS's own mock data, and on a small dataset that TFDS
prepares for real as array_record files (no download, no TensorFlow)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dreamjax import data
from dreamjax.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# --- a real prepared dataset: array_record files that TFDS itself wrote -----------

class DreamjaxTinyDigits(tfds.core.GeneratorBasedBuilder):
  """A 3-class 8x8 grey image dataset, generated, prepared as TFDS prepares any.

  Images go in as PIL images: TFDS encodes those to PNG without TensorFlow
  (a numpy array would need ``tf.image.encode_png``).
  """
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=["bar", "dot", "ring"]),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {"train": self._generate_examples(24, seed=1),
            "test": self._generate_examples(9, seed=2)}

  def _generate_examples(self, n, seed):
    import PIL.Image  # pylint: disable=g-import-not-at-top
    for i, image in enumerate(tiny_digit_images(n, seed)):
      yield i, {"image": PIL.Image.fromarray(image[..., 0]), "label": i % 3}


def tiny_digit_images(n, seed):
  return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  DreamjaxTinyDigits(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


def test_real_array_record_dataset_loads(prepared_dir):
  folder = os.path.join(prepared_dir, "dreamjax_tiny_digits", "1.0.0")
  shards = [f for f in os.listdir(folder) if ".array_record-" in f]
  assert len(shards) == 2 and "dataset_info.json" in os.listdir(folder)
  raw = data.load_dataset("tfds:dreamjax_tiny_digits", prepared_dir)
  assert raw.name == "tfds:dreamjax_tiny_digits"
  assert raw.train_images.shape == (24, 8, 8, 1) and raw.train_images.dtype == np.uint8
  assert raw.test_images.shape == (9, 8, 8, 1)
  assert raw.num_classes == 3 and raw.class_names == ("bar", "dot", "ring")
  assert sorted(np.bincount(raw.train_labels)) == [8, 8, 8]
  # The pixels went through PNG and back unchanged (TFDS stores them shuffled).
  want = {img.tobytes() for img in tiny_digit_images(24, seed=1)}
  assert {img.tobytes() for img in raw.train_images} == want
  assert raw.source == folder and len(raw.digest) == 64
  splits = data.make_splits(raw, num_labeled=-1, val_size=3, seed=0)
  assert splits.labeled_images.shape == (21, 8, 8, 1)


def test_real_dataset_loads_from_its_files_alone(prepared_dir):
  """In a process that never saw the builder class: as a user's prepared dataset."""
  code = ("from dreamjax import data; raw = data.load_dataset('tfds:dreamjax_tiny_digits',"
          f" {prepared_dir!r}); print(raw.train_images.shape, raw.num_classes, raw.digest)")
  run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": REPO})
  assert run.returncode == 0, run.stderr[-3000:]
  digest = data.load_dataset("tfds:dreamjax_tiny_digits", prepared_dir).digest
  assert run.stdout.split() == ["(24,", "8,", "8,", "1)", "3", digest]


def test_unprepared_dataset_says_so_and_downloads_nothing(tmp_path):
  with pytest.raises(DataError) as e:
    data.load_dataset("tfds:mnist", str(tmp_path))
  message = str(e.value)
  assert "'mnist' is not prepared" in message and "tfds build mnist" in message
  assert "importlib_resources" not in message
  assert not list(tmp_path.rglob("*.array_record*"))  # no download was tried


def test_tfrecord_dataset_says_to_rebuild_as_array_record(prepared_dir, tmp_path):
  folder = tmp_path / "dreamjax_tiny_digits" / "1.0.0"
  shutil.copytree(os.path.join(prepared_dir, "dreamjax_tiny_digits", "1.0.0"), folder)
  info = json.loads((folder / "dataset_info.json").read_text())
  info["fileFormat"] = "tfrecord"  # as `tfds build` (with TensorFlow) writes by default
  (folder / "dataset_info.json").write_text(json.dumps(info))
  with pytest.raises(DataError, match="stored as tfrecord.*--file_format=array_record"):
    data.load_dataset("tfds:dreamjax_tiny_digits", str(tmp_path))


def test_open_failure_shows_the_real_cause(prepared_dir, monkeypatch):
  def broken(*args, **kwargs):
    try:
      raise ModuleNotFoundError("No module named 'some_codec'", name="some_codec")
    except ImportError as e:
      raise RuntimeError("Failed to construct dataset") from e

  monkeypatch.setattr(tfds, "data_source", broken)
  with pytest.raises(DataError) as e:
    data.load_dataset("tfds:dreamjax_tiny_digits", prepared_dir)
  message = str(e.value)
  assert "Failed to construct dataset" in message and "No module named 'some_codec'" in message
  assert "pip install some_codec" in message
