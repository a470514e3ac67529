"""Shared fixtures: tiny synthetic IDX datasets and tiny configs on real data."""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings

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


# --- multi-host jobs: two processes joined by jax.distributed on this CPU ---------

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def host_env(devices: int, **extra) -> dict[str, str]:
  """This environment with ``devices`` simulated CPU devices and no multi-host settings."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("DREAMJAX_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                      "JAX_PROCESS_ID")}
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                      + f" --xla_force_host_platform_device_count={devices}").strip()
  env.update(extra)
  return env


def _script(name: str) -> str:
  return os.path.join(REPO, "experiments", name)  # an absolute name stays as it is


def run_two_hosts(script: str, *flags: str, cwds=(REPO, REPO), timeout: float = 300,
                  extra_env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
  """Runs ``script`` as a 2-process job (2 devices each); returns both outcomes.

  ``script``: a name in ``experiments/`` or a path. ``cwds``: each process's
  working directory. ``extra_env``: more environment variables for both.

  XLA:CPU's cross-process collectives (gloo) between simulated devices have
  been seen to stall, rarely (1 run in 36 of the two-host tiny study on
  this 2-core machine), inside a train step that both processes had reached
  alike. A job that runs past ``timeout`` is therefore run once more from an
  empty workdir, after a warning that carries both processes' Python stacks;
  a second stall fails the test with them.
  """
  for attempt in range(2):
    procs = _start_two_hosts(script, flags, cwds, extra_env)
    try:
      return [_finish(p, timeout) for p in procs]
    except subprocess.TimeoutExpired:
      report = _stuck_report(procs)
    if attempt == 0:
      warnings.warn(f"the 2-process job ran past {timeout} s and is run again; each"
                    f" process's stderr, ending in its Python stacks:\n{report}")
      for flag in flags:
        if flag.startswith("--workdir="):
          for cwd in cwds:
            shutil.rmtree(os.path.join(cwd, flag.split("=", 1)[1]), ignore_errors=True)
  pytest.fail(f"the 2-process job ran past {timeout} s twice; each process's stderr,"
              f" ending in its Python stacks:\n{report}", pytrace=False)


def _start_two_hosts(script, flags, cwds, extra_env) -> list[subprocess.Popen]:
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, _script(script), *flags], cwd=cwds[i], text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env=host_env(2, DREAMJAX_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i), **(extra_env or {})))
          for i in range(2)]


def _finish(p: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
  stdout, stderr = p.communicate(timeout=timeout)
  return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


def _stuck_report(procs) -> str:
  """Every thread's stack of each still-running process (``cli.run``'s SIGUSR1), then kills."""
  for p in procs:
    if p.poll() is None:
      p.send_signal(signal.SIGUSR1)
  time.sleep(3)
  for p in procs:
    p.kill()
  report = []
  for i, p in enumerate(procs):
    _, stderr = p.communicate()
    report.append(f"--- process {i} (exit {p.returncode}) ---\n{stderr[-6000:]}")
  return "\n".join(report)


def run_one_host(script: str, *flags: str) -> subprocess.CompletedProcess:
  """Runs ``script`` as one process with 4 simulated devices."""
  return subprocess.run([sys.executable, _script(script), *flags], cwd=REPO, text=True,
                        capture_output=True, env=host_env(4), timeout=600)


def on_mesh(tree):
  """``tree`` replicated on the mesh of every device, as the library places a train state.

  A jitted step that constrains its batch to the mesh returns its state on the
  mesh; inputs placed there too keep the step to one trace.
  """
  from dreamjax.plumbing import sharding  # pylint: disable=g-import-not-at-top
  return sharding.replicate(sharding.make_mesh(), tree)


def stray_files(folder) -> list[str]:
  """Temporary or hidden files left under ``folder`` (none after a clean run)."""
  return [os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
          if ".tmp" in f or f.startswith(".")]


def finished_run(tmp_path_factory, name: str, make_cmd, timeout: float) -> str:
  """A workdir in which ``make_cmd(workdir)`` ran to the end (a module fixture's study)."""
  workdir = str(tmp_path_factory.mktemp(name))
  out = subprocess.run(make_cmd(workdir), capture_output=True, text=True, cwd=REPO,
                       timeout=timeout)
  assert out.returncode == 0, out.stderr[-4000:]
  return workdir


# --- the tiny study: every arm of the tiny preset, run once per test session -------

def tiny_study_cmd(workdir, *extra) -> list[str]:
  """The tiny study's command in one process (``--workers=0``, the in-process path;
  tests/test_engine.py runs the workers), more flags after."""
  return [sys.executable, _script("study.py"), "--config", "dreamjax/configs/study.py:tiny",
          f"--workdir={workdir}", "--workers=0", *extra]


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory, real_data_dir):
  """The workdir of a finished tiny study of every registered arm (read only).

  Every module that checks what an arm's cells record reads this one study
  instead of running its arms again; a test that changes a workdir copies it.
  """
  del real_data_dir  # the study reads it
  # The first study of a session compiles most of the tiny programs (617 s on the
  # 2-core AMD VM with an empty compilation cache): the limit guards against a hang.
  return finished_run(tmp_path_factory, "study", tiny_study_cmd, timeout=1800)


# --- the small study: one finished tiny study that every module may read ----------

SMALL_STUDY_ARMS = "--config.arms=('baseline','classical')"


def small_study_cmd(workdir, *extra) -> list[str]:
  """The small study's command (baseline + classical on the tiny preset), more flags after:
  every job in the one process (``--workers=0``), as the tests that resume or extend
  its workdir in process run it (tests/test_engine.py runs the workers)."""
  return [sys.executable, _script("study.py"), "--config", "dreamjax/configs/study.py:tiny",
          f"--workdir={workdir}", SMALL_STUDY_ARMS, "--workers=0", *extra]


@pytest.fixture(scope="session")
def small_study(tmp_path_factory, real_data_dir):
  """The workdir of a finished small study, run once per test session.

  Shared by every module that needs a finished study to read or copy: a test
  that changes a workdir copies this one first.
  """
  del real_data_dir  # the study reads it
  return finished_run(tmp_path_factory, "small", small_study_cmd, timeout=600)
