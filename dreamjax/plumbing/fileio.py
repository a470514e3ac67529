"""Atomic file writes: a reader sees the old file or the new one, never half.

In a multi-host job only process 0 writes: the others run the same code but
their files go to a private temporary folder and are thrown away, and every
write sits between two barriers (:func:`dreamjax.plumbing.sharding.sync`), so all
processes decide alike whether to write a file and may read it right after it
was written. Every process must therefore make the same writes in the same
order, which the experiment scripts do by running the same program on the
same data.

A full disk (or quota) ends every write here in a
:class:`~dreamjax.errors.DiskFullError` that names the file; nothing
half-written is left behind, so a rerun after freeing space resumes.
"""

import contextlib
import json
import os
import tempfile
import time
from typing import Any, Iterator

from absl import logging
from jax.experimental import multihost_utils
import numpy as np

from dreamjax.plumbing import sharding
from dreamjax.errors import ConfigError, DiskFullError, is_disk_full


@contextlib.contextmanager
def translate_disk_full(path: str) -> Iterator[None]:
  """Turns an error that means "disk full" inside the body into :class:`DiskFullError`.

  Catches plain ``OSError`` (ENOSPC, EDQUOT) and the ``ValueError`` that
  tensorstore (under Orbax) raises for the same fault; ``path`` is the file or
  folder being written, named in the message.
  """
  try:
    yield
  except DiskFullError:
    raise
  except Exception as e:  # noqa: BLE001 - only a full disk is translated; the rest re-raised
    if is_disk_full(e):
      raise DiskFullError(path) from None
    raise


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path in ``path``'s folder; renames it over ``path``.

  The rename only happens if the body finishes; on any error the temporary
  file is removed and ``path`` is untouched. A full disk raises
  :class:`DiskFullError`.
  """
  folder = os.path.dirname(os.path.abspath(path))
  base = os.path.basename(path)
  # Keep the extension last: numpy and matplotlib pick formats by suffix.
  stem, ext = os.path.splitext(base)
  _written(path, "before")  # every process has made its checks before the file appears
  if not sharding.is_primary():
    with tempfile.TemporaryDirectory(prefix="dreamjax-secondary-") as scratch:
      with translate_disk_full(path):
        yield os.path.join(scratch, f"{stem}.tmp{ext}")
    _written(path)
    return
  with translate_disk_full(path):
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
  try:
    with translate_disk_full(path):
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
  sharding.sync(f"{when} writing {os.path.basename(path)}")


def write_text(path: str, text: str) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "w") as f:
      f.write(text)


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=jsonable) + "\n")


def append_jsonl(path: str, record: dict[str, Any]) -> None:
  """Appends ``record`` as one JSON line, on disk (fsync) when this returns.

  A real append (``O_APPEND``, one ``write`` of the whole line, then
  ``fsync``), so the cost does not grow with the file. A write that fails
  part-way (full disk) is cut back off, and a torn last line that an earlier
  crash left is set aside first (:func:`read_jsonl`), so every line stays a
  whole record. Multi-host: only process 0 writes, between two barriers.
  """
  line = (json.dumps(record, sort_keys=True, default=jsonable) + "\n").encode()
  # Every process looks alike: the file only changes between barriers.
  if _last_byte(path) not in (None, b"\n"):
    read_jsonl(path, repair=True)
  _written(path, "before")
  if sharding.is_primary():
    with translate_disk_full(path):
      _append(path, line)
  _written(path)


def _last_byte(path: str) -> bytes | None:
  """The file's last byte; None if it is missing or empty."""
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      if f.tell() == 0:
        return None
      f.seek(-1, os.SEEK_END)
      return f.read(1)
  except FileNotFoundError:
    return None


def _append(path: str, data: bytes) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  created = not os.path.exists(path)
  fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
      data = b"\n" + data  # a last line complete but for its newline
    try:
      view = memoryview(data)
      while view:  # os.write may write less than asked (signals, some filesystems)
        view = view[os.write(fd, view):]
      os.fsync(fd)
    except BaseException:
      # Never leave part of a line behind (full disk, interrupt): cut back.
      with contextlib.suppress(OSError):
        os.ftruncate(fd, size)
      raise
  finally:
    os.close(fd)
  if created:
    _fsync_dir(folder)  # the new file's name survives a power cut too


def _fsync_dir(folder: str) -> None:
  with contextlib.suppress(OSError):  # some filesystems cannot fsync a folder
    fd = os.open(folder, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def read_jsonl(path: str, repair: bool = True) -> list[dict[str, Any]]:
  """Every whole record of a JSON-lines file; [] if it does not exist.

  A line that is not a JSON object (torn by a crash or a full disk mid-write,
  or damaged) is left out with a warning naming the file and line. With
  ``repair`` (the default) it is also set aside: the whole original file is
  copied to ``<path>.torn-<UTC time of its last write>`` and ``path`` is
  rewritten without the bad lines (atomically), so a study rerun recomputes
  the cells they held. Without ``repair`` the file is left as it is.
  Multi-host: every process must call it alike; process 0 writes.
  """
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    raw = f.read()
  lines = raw.split(b"\n")
  records, bad = [], []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
      record = None
    if not isinstance(record, dict):
      bad.append(number)
      continue
    records.append(record)
  if bad:
    _set_aside(path, raw, lines, bad, repair)
  return records


def _set_aside(path: str, raw: bytes, lines: list[bytes], bad: list[int], repair: bool) -> None:
  """Keeps a copy of ``path`` and rewrites it without the lines numbered ``bad``."""
  total = len(lines) - (lines[-1] == b"")  # a file ending in a newline splits into a last ""
  where = f"{path}: line{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} of {total}"
  if not repair:
    if sharding.is_primary():
      logging.warning("%s unreadable (a write cut short by a crash or a full disk?); skipped"
                      " them and left the file as it is.", where)
    return
  # The copy is named by the file's last write (about when it was torn), which
  # every process of a multi-host job sees alike: they must agree on the name.
  stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(os.stat(path).st_mtime))
  copy = f"{path}.torn-{stamp}"
  n = 1
  while os.path.exists(copy) and _read_bytes(copy) != raw:
    n += 1
    copy = f"{path}.torn-{stamp}-{n}"
  with atomic_path(copy) as tmp:
    with open(tmp, "wb") as f:
      f.write(raw)
  kept = b"".join(line + b"\n" for number, line in enumerate(lines, 1)
                  if number not in bad and line.strip())
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(kept)
  if sharding.is_primary():
    logging.warning("%s unreadable (a write cut short by a crash or a full disk?); set"
                    " them aside: the original file is kept as %s and %s was rewritten"
                    " without them, so a rerun recomputes what they held.", where, copy, path)


def _read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


# --- one study per workdir -----------------------------------------------------

def check_writable(folder: str, create: bool = True) -> None:
  """Raises a clear error now, before compute, if ``folder`` is unwritable.

  With ``create`` (the default) a missing ``folder`` is made, with its missing
  parents. Without it nothing stays on disk (``--dry_run``): a folder that
  does not exist yet is judged by the nearest existing folder above it, the
  one the run would make it in. In a multi-host job it also checks that every
  process sees the same folder (where the folder exists).
  """
  if not create and not os.path.isdir(folder):
    _check_creatable(folder)
    return
  try:
    os.makedirs(folder, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise workdir_error(folder, e.strerror) from None
  _check_shared(folder)


def _check_creatable(folder: str) -> None:
  """Whether ``folder`` (missing, or not a folder) could be made, without making it."""
  above = _nearest_existing(folder)
  if not os.path.isdir(above) or not os.access(above, os.W_OK | os.X_OK):
    raise workdir_error(folder, f"no folder can be made in {above!r}")


def _nearest_existing(folder: str) -> str:
  """``folder`` if it exists (as anything), else the nearest path above it that does."""
  path = os.path.abspath(folder)
  while not os.path.lexists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return path


def workdir_error(folder: str, reason: str | None) -> ConfigError:
  """The error for a workdir that cannot be made or written; a file in the way is named.

  ``reason`` says why (an ``OSError``'s ``strerror``) when no file is in the way.
  """
  blocker = _nearest_existing(folder)
  if os.path.exists(blocker) and not os.path.isdir(blocker):
    if blocker == os.path.abspath(folder):
      return ConfigError(
          f"workdir {folder!r} is a file, not a folder. Pass --workdir naming a folder (one"
          " that does not exist yet is created), or move that file out of the way.")
    return ConfigError(
        f"workdir {folder!r} is not writable: {blocker!r} is a file, not a folder, so no"
        " folder can be made under it. Pass --workdir naming a folder elsewhere, or move"
        " that file out of the way.")
  return ConfigError(f"workdir {folder!r} is not writable ({reason}). Pass --workdir"
                     " pointing at a folder you can write to.")


@contextlib.contextmanager
def writable_workdir(folder: str) -> Iterator[None]:
  """:func:`check_writable` for a run in ``folder`` (the body); a refused run leaves nothing.

  If the body raises while the folders this call made (``folder`` and any
  missing parents) are still empty, the run was refused before it wrote
  anything (bad data, a label budget the data cannot give, a bad file
  named in the config): they are removed again, deepest first. A folder that
  existed before, or that holds anything, is never removed.
  """
  made, path, top = [], os.path.abspath(folder), _nearest_existing(folder)
  while path != top:  # the folders check_writable will make, deepest first
    made.append(path)
    path = os.path.dirname(path)
  try:
    check_writable(folder)
    yield
  except BaseException:
    for path in made:
      try:
        os.rmdir(path)  # only ever removes an empty folder
      except OSError:
        break
    raise


def _check_shared(folder: str) -> None:
  """Multi-host: every process must see the files process 0 writes to ``folder``.

  Process 0 writes a random token there; each process reads it back, and all
  of them learn whether every process saw it, so they stop together.
  """
  if sharding.process_count() == 1:
    return
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
