"""Atomic file writes: a reader sees the old file or the new one, never half.

In a multi-host job only process 0 writes: the others run the same code but
their files go to a private temporary folder and are thrown away, and every
write sits between two barriers (:func:`dreamjax.sharding.sync`), so all
processes decide alike whether to write a file and may read it right after it
was written. Every process must therefore make the same writes in the same
order, which the experiment scripts do by running the same program on the
same data.
"""

import contextlib
import json
import os
import tempfile
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path in ``path``'s folder; renames it over ``path``.

  The rename only happens if the body finishes; on any error the temporary
  file is removed and ``path`` is untouched.
  """
  folder = os.path.dirname(os.path.abspath(path))
  base = os.path.basename(path)
  # Keep the extension last: numpy and matplotlib pick formats by suffix.
  stem, ext = os.path.splitext(base)
  _written(path, "before")  # every process has made its checks before the file appears
  from dreamjax import sharding  # pylint: disable=g-import-not-at-top
  if not sharding.is_primary():
    with tempfile.TemporaryDirectory(prefix="dreamjax-secondary-") as scratch:
      yield os.path.join(scratch, f"{stem}.tmp{ext}")
    _written(path)
    return
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=folder)
  os.close(fd)
  try:
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  _written(path)


def _written(path: str, when: str = "after") -> None:
  """Multi-host: a barrier before and after process 0 renames ``path`` into place.

  Before: no process can still be deciding (``os.path.exists``, say) whether to
  write a file that process 0 has already written. After: every process can
  read it.
  """
  from dreamjax import sharding  # pylint: disable=g-import-not-at-top
  sharding.sync(f"{when} writing {os.path.basename(path)}")


def write_text(path: str, text: str) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "w") as f:
      f.write(text)


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=jsonable) + "\n")


def append_jsonl(path: str, record: dict[str, Any]) -> None:
  """Appends one line by rewriting the file atomically.

  Results files are small (one line per study cell), so a full rewrite costs
  nothing and means a kill can never leave a half-written line behind.
  """
  old = ""
  if os.path.exists(path):
    with open(path) as f:
      old = f.read()
  if old and not old.endswith("\n"):
    old += "\n"
  line = json.dumps(record, sort_keys=True, default=jsonable)
  write_text(path, old + line + "\n")


def read_jsonl(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def check_writable(folder: str) -> None:
  """Raises a clear error now, before compute, if ``folder`` is unwritable.

  In a multi-host job it also checks that every process sees the same folder.
  """
  from dreamjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  try:
    os.makedirs(folder, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ConfigError(
        f"workdir {folder!r} is not writable ({e.strerror}). Pass --workdir "
        "pointing at a folder you can write to.") from None
  _check_shared(folder)


def _check_shared(folder: str) -> None:
  """Multi-host: every process must see the files process 0 writes to ``folder``.

  Process 0 writes a random token there; each process reads it back, and all
  of them learn whether every process saw it, so they stop together.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from dreamjax import sharding  # pylint: disable=g-import-not-at-top
  from dreamjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  token = int(multihost_utils.broadcast_one_to_all(
      np.asarray(np.random.default_rng().integers(1, 2**31 - 1), np.int32)))
  marker = os.path.join(folder, ".dreamjax-shared-check")
  if sharding.is_primary():
    with open(marker, "w") as f:
      f.write(str(token))
  sharding.sync("shared-check-written")
  try:
    with open(marker) as f:
      seen = f.read().strip() == str(token)
  except OSError:
    seen = False
  seen_by = np.asarray(multihost_utils.process_allgather(np.asarray(seen))).reshape(-1)
  if sharding.is_primary():
    os.remove(marker)
  if not seen_by.all():
    missing = [int(i) for i in np.flatnonzero(~seen_by)]
    raise ConfigError(
        f"workdir {folder!r} is not shared by every process of this multi-host job:"
        f" process(es) {missing} do not see the files process 0 writes there. Pass a"
        " --workdir on storage every host mounts (a shared disk or a bucket mount),"
        " as an absolute path.")


def jsonable(x: Any) -> Any:
  """``json.dumps``' ``default=``: numpy scalars and arrays, ConfigDicts, tuples."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  if hasattr(x, "to_dict"):
    return x.to_dict()
  if hasattr(x, "tolist"):
    return x.tolist()
  if isinstance(x, tuple):
    return list(x)
  raise TypeError(f"not JSON serialisable: {type(x)}")
