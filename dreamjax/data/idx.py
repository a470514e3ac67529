"""Reader for the IDX format of (Fashion-)MNIST, gzipped or raw.

Format (big-endian): two zero bytes, a type byte (0x08 = uint8), the number of
dimensions, one uint32 per dimension, then the data. Every check below turns a
broken file into a :class:`DataError` that names the file and the fault.
"""

import gzip
import os
import zlib

import numpy as np

from dreamjax.errors import DataError

_UINT8 = 0x08
# What to do about a damaged or empty file.
_FIX = ("Replace it with a good copy, or reinstall the dataset (Fashion-MNIST from Debian:"
        " apt-get install --reinstall dataset-fashion-mnist).")


def parse_idx(raw: bytes, *, name: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
  """Parses IDX bytes into a uint8 array, validating header and length."""
  if not raw:
    raise DataError(f"{name}: empty (0 bytes of IDX data). {_FIX}")
  if len(raw) < 4:
    raise DataError(f"{name}: file is {len(raw)} bytes, too short for an IDX header;"
                    " it is truncated or not an IDX file.")
  if raw[0] != 0 or raw[1] != 0:
    raise DataError(f"{name}: bad IDX magic number {raw[:4].hex()} (expected 0000 08 0N);"
                    " this is not an IDX file.")
  if raw[2] != _UINT8:
    raise DataError(f"{name}: IDX data type 0x{raw[2]:02x} is not uint8 (0x08);"
                    " dreamjax reads only uint8 image and label files.")
  dims = raw[3]
  if ndim is not None and dims != ndim:
    kind = "label" if ndim == 1 else "image"
    raise DataError(f"{name}: IDX file has {dims} dimensions, an {kind} file needs {ndim};"
                    " were image and label files swapped?")
  if dims == 0:
    raise DataError(f"{name}: IDX header declares zero dimensions.")
  header = 4 + 4 * dims
  if len(raw) < header:
    raise DataError(f"{name}: file ends inside the IDX header; it is truncated.")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=dims, offset=4))
  if any(d == 0 for d in shape):
    raise DataError(f"{name}: IDX header declares an empty dimension {shape}.")
  expected = int(np.prod(shape))
  got = len(raw) - header
  if got < expected:
    raise DataError(f"{name}: truncated: header declares shape {shape} ({expected} bytes)"
                    f" but only {got} data bytes follow. Re-download or reinstall the dataset.")
  if got > expected:
    raise DataError(f"{name}: {got - expected} unexpected bytes after the data of shape {shape};"
                    " the file is corrupt.")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def read_idx(path: str, *, ndim: int | None = None) -> np.ndarray:
  """Reads an IDX file (``.gz`` is decompressed) into a uint8 array."""
  return parse_idx(read_idx_bytes(path), name=os.path.basename(path), ndim=ndim)


def read_idx_bytes(path: str) -> bytes:
  """The IDX bytes of a file, decompressed if it is gzip; DataError if unreadable.

  What :func:`read_idx` parses, and what a dataset digest is taken over: the
  same data gives the same bytes whether or not it was stored gzipped.
  """
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise DataError(f"{path}: cannot read ({e.strerror}).") from None
  if not raw:
    raise DataError(f"{path}: the file is empty (0 bytes), so it holds no IDX data (a copy or"
                    f" download cut short?). {_FIX}")
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
      raise DataError(f"{path}: corrupt or truncated gzip data ({e}). Re-download or"
                      " reinstall the dataset.") from None
  elif path.endswith(".gz"):
    raise DataError(f"{path}: named .gz but is not gzip data (first bytes {raw[:4].hex()})."
                    " If it is an uncompressed IDX file, remove .gz from its name; otherwise"
                    f" it is damaged. {_FIX}")
  return raw


def write_idx(path: str, array: np.ndarray, *, compress: bool | None = None) -> None:
  """Writes a uint8 array as IDX (used by tests and by users exporting data)."""
  array = np.ascontiguousarray(array, dtype=np.uint8)
  header = bytes([0, 0, _UINT8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
  raw = header + array.tobytes()
  if compress is None:
    compress = path.endswith(".gz")
  if compress:
    raw = gzip.compress(raw, compresslevel=1)
  with open(path, "wb") as f:
    f.write(raw)
