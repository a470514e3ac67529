import json
import os

import numpy as np
import pytest

import dreamjax
from dreamjax.data import augfile
from dreamjax.errors import DataError


def _arrays(n=6):
  rng = np.random.default_rng(0)
  return (rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n),
          np.arange(n) - 1)


def test_round_trip(tmp_path):
  path = str(tmp_path / "aug.npz")
  x, y, s = _arrays()
  augfile.save(path, x, y, s, {"method": "dream", "seed": 3, "config": {"steps": 5}})
  got = augfile.load(path, num_classes=10, image_shape=(28, 28, 1))
  np.testing.assert_array_equal(got.images, x)
  np.testing.assert_array_equal(got.labels, y)
  np.testing.assert_array_equal(got.source_index, s)
  assert got.metadata["method"] == "dream" and got.metadata["config"] == {"steps": 5}
  assert got.metadata["dreamjax_version"] == dreamjax.__version__
  assert os.listdir(tmp_path) == ["aug.npz"]  # no temporary files left


def _write_raw(path, **arrays):
  base = dict(zip(("images", "labels", "source_index"), _arrays()))
  base["metadata"] = np.asarray(json.dumps({"method": "x"}))
  base.update(arrays)
  np.savez(path, **base)


@pytest.mark.parametrize("override,match", [
    ({"images": np.zeros((6, 28, 28), np.float32)}, "shape"),
    ({"images": np.zeros((6, 28, 28, 1), np.float64)}, "float32"),
    ({"images": np.full((6, 28, 28, 1), np.nan, np.float32)}, "NaN"),
    ({"images": np.full((6, 28, 28, 1), 2.0, np.float32)}, r"\[0, 1\]"),
    ({"labels": np.array([0, 1, 2, 3, 4, 10])}, "labels span"),
    ({"labels": np.zeros(5, np.int64)}, "one entry per image"),
    ({"labels": np.zeros(6, np.float32)}, "integer"),
    ({"labels": np.array([0, "a", None, 1, 2, 3], dtype=object)}, "unpickl"),
    ({"metadata": np.asarray("[1, 2]")}, "JSON object"),
])
def test_bad_files_are_refused(tmp_path, override, match):
  path = str(tmp_path / "bad.npz")
  _write_raw(path, **override)
  with pytest.raises(DataError, match=match):
    augfile.load(path, num_classes=10)


def test_wrong_image_shape_for_dataset(tmp_path):
  path = str(tmp_path / "a.npz")
  augfile.save(path, *_arrays(), {})
  with pytest.raises(DataError, match="dataset's are"):
    augfile.load(path, image_shape=(32, 32, 3))


def test_missing_keys_and_corrupt_file(tmp_path):
  path = str(tmp_path / "a.npz")
  np.savez(path, images=np.zeros((1, 2, 2, 1), np.float32))
  with pytest.raises(DataError, match="missing labels"):
    augfile.load(path)
  with open(path, "wb") as f:
    f.write(b"PK\x03\x04garbage")
  with pytest.raises(DataError, match="corrupt"):
    augfile.load(path)
  with pytest.raises(DataError, match="does not exist"):
    augfile.load(str(tmp_path / "none.npz"))


def test_failed_save_leaves_old_file(tmp_path):
  path = str(tmp_path / "a.npz")
  augfile.save(path, *_arrays(), {"method": "first"})
  x, y, s = _arrays()
  x[0, 0, 0, 0] = np.nan
  with pytest.raises(DataError):
    augfile.save(path, x, y, s, {"method": "second"})
  assert augfile.load(path).metadata["method"] == "first"


@pytest.mark.parametrize("content, kind", [
    (b"images,labels\n0.1,3\n", "a text file (it starts 'images,labels"),
    (b"", "empty"),
    (b"\x00\x01\x02\x03garbage", "not a zip archive"),
])
def test_a_file_that_is_not_an_npz_is_named_as_such(tmp_path, content, kind):
  path = str(tmp_path / "dreams.npz")
  with open(path, "wb") as f:
    f.write(content)
  with pytest.raises(DataError) as e:
    augfile.load(path)
  message = str(e.value)
  assert "not an .npz file" in message and kind in message
  assert "object arrays" not in message  # the wrong fault, reported before
  assert "augfile.save" in message  # what the file should be


def test_a_single_npy_array_is_named_as_such(tmp_path):
  path = str(tmp_path / "images.npz")
  with open(path, "wb") as f:
    np.save(f, np.zeros((2, 4, 4, 1), np.float32))
  with pytest.raises(DataError, match="not an .npz file: a single-array .npy file"):
    augfile.load(path)


def test_a_kept_set_is_read_and_a_missing_or_damaged_one_is_made_again(tmp_path):
  path = str(tmp_path / "kept.npz")
  heard = []
  kept = lambda: augfile.load_kept(path, num_classes=10, image_shape=(28, 28, 1),
                                   log=heard.append, again="seed 3: making it again")
  assert kept() is None and not heard  # none yet: nothing to say
  x, y, s = _arrays()
  augfile.save(path, x, y, s, {"method": "dream"})
  np.testing.assert_array_equal(kept().images, x)
  assert not heard
  with open(path, "wb") as f:
    f.write(b"PK\x03\x04garbage")
  assert kept() is None
  assert len(heard) == 1 and heard[0].startswith("seed 3: making it again (")
  assert "corrupt" in heard[0]
