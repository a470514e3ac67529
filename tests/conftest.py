"""Shared fixtures: tiny synthetic IDX datasets and tiny configs on real data."""

import atexit
import os
import shutil
import sys
import tempfile

# One persistent XLA compilation cache per test session, set before JAX starts
# and inherited by the experiment scripts the tests run as subprocesses: each
# program is compiled for real once per session, and the many short runs of the
# same tiny configs (kill and resume, reruns) load it instead of compiling again.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="dreamjax-test-xla-cache-")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import dreamjax  # noqa: E402,F401  (XLA flags first)
from dreamjax.data import idx, sources  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def fmnist_dir() -> str:
  """The real Fashion-MNIST folder; ``./launch.sh test`` installs it."""
  for d in [os.environ.get("DREAMJAX_DATA_DIR"), *sources.DEFAULT_IDX_DIRS]:
    if d and os.path.exists(os.path.join(d, "train-images-idx3-ubyte.gz")) or (
        d and os.path.exists(os.path.join(d, "train-images-idx3-ubyte"))):
      return d
  pytest.fail("Fashion-MNIST is not installed; run the tests through ./launch.sh test,"
              " which installs Debian's dataset-fashion-mnist.")


def synthetic_images(n: int, num_classes: int = 10, size: int = 28, seed: int = 0):
  """Learnable uint8 images: each class is a bright bar at its own position."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % num_classes
  rng.shuffle(labels)
  images = rng.integers(0, 60, (n, size, size), dtype=np.uint8)
  for i, c in enumerate(labels):
    row = 2 + (c * (size - 6)) // max(num_classes - 1, 1)
    images[i, row:row + 3, 3:size - 3] = 230
  return images, labels.astype(np.uint8)


def write_idx_dataset(folder, n_train=300, n_test=100, num_classes=10, compress=True):
  os.makedirs(folder, exist_ok=True)
  ext = ".gz" if compress else ""
  x, y = synthetic_images(n_train, num_classes, seed=1)
  xt, yt = synthetic_images(n_test, num_classes, seed=2)
  idx.write_idx(os.path.join(folder, "train-images-idx3-ubyte" + ext), x)
  idx.write_idx(os.path.join(folder, "train-labels-idx1-ubyte" + ext), y)
  idx.write_idx(os.path.join(folder, "t10k-images-idx3-ubyte" + ext), xt)
  idx.write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte" + ext), yt)
  return str(folder)


@pytest.fixture
def synthetic_dir(tmp_path):
  return write_idx_dataset(tmp_path / "synthetic")


@pytest.fixture(scope="session")
def real_data_dir():
  return fmnist_dir()
