import gzip
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamjax.data import idx
from dreamjax.errors import DataError


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip(tmp_path, compress):
  a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  path = str(tmp_path / ("a.idx" + (".gz" if compress else "")))
  idx.write_idx(path, a)
  np.testing.assert_array_equal(idx.read_idx(path, ndim=3), a)


def _header(ndim, shape, dtype=0x08):
  return bytes([0, 0, dtype, ndim]) + np.asarray(shape, ">u4").tobytes()


@pytest.mark.parametrize("raw,match", [
    (b"\x00\x00", "too short"),
    (b"\x12\x34\x08\x01" + b"\x00" * 8, "magic"),
    (_header(1, [3], dtype=0x0D) + b"\x00" * 12, "not uint8"),
    (_header(1, [5]) + b"\x01\x02", "truncated"),
    (_header(1, [2]) + b"\x01\x02\x03", "unexpected bytes"),
    (_header(2, [2]), "truncated"),
    (bytes([0, 0, 8, 3]) + b"\x00\x00", "inside the IDX header"),
])
def test_corrupt_bytes_name_the_fault(raw, match):
  with pytest.raises(DataError, match=match):
    idx.parse_idx(raw, name="x")


def test_wrong_dimensions_are_refused(tmp_path):
  path = str(tmp_path / "labels")
  idx.write_idx(path, np.zeros((4, 2, 2), np.uint8))
  with pytest.raises(DataError, match="needs 1"):
    idx.read_idx(path, ndim=1)


def test_truncated_gzip_names_the_file(tmp_path):
  path = str(tmp_path / "train-images-idx3-ubyte.gz")
  idx.write_idx(path, np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8))
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*(corrupt|truncated)"):
    idx.read_idx(path)


def test_gz_name_without_gzip_data(tmp_path):
  path = str(tmp_path / "x.gz")
  with open(path, "wb") as f:
    f.write(b"not gzip at all")
  with pytest.raises(DataError, match="not gzip"):
    idx.read_idx(path)


@pytest.mark.parametrize("name", ["train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"])
def test_empty_file_says_it_is_empty_and_how_to_fix_it(tmp_path, name):
  path = tmp_path / name
  path.write_bytes(b"")
  with pytest.raises(DataError) as e:
    idx.read_idx(str(path))
  message = str(e.value)
  assert f"{path}: the file is empty (0 bytes)" in message
  assert "Replace it with a good copy, or reinstall the dataset" in message
  assert "not gzip" not in message and "first bytes" not in message and "\n" not in message


def test_empty_file_in_a_dataset_folder_is_named(tmp_path):
  from conftest import write_idx_dataset  # pylint: disable=g-import-not-at-top
  from dreamjax.data import sources  # pylint: disable=g-import-not-at-top
  folder = write_idx_dataset(tmp_path / "data")
  empty = os.path.join(folder, "t10k-labels-idx1-ubyte.gz")
  open(empty, "wb").close()
  with pytest.raises(DataError, match=f"{empty}: the file is empty.*reinstall the dataset"):
    sources.load_idx_dataset(folder)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_data_error(raw):
  try:
    out = idx.parse_idx(raw)
  except DataError:
    return
  assert out.dtype == np.uint8
  assert out.size == len(raw) - 4 - 4 * raw[3]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.integers(0, 2**31))
def test_round_trip_any_shape(shape, seed):
  a = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
  header = bytes([0, 0, 8, a.ndim]) + np.asarray(a.shape, ">u4").tobytes()
  np.testing.assert_array_equal(idx.parse_idx(header + a.tobytes()), a)
  np.testing.assert_array_equal(idx.parse_idx(gzip.decompress(gzip.compress(header + a.tobytes()))), a)
