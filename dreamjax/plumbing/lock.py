"""The workdir lock: two jobs never write into one workdir at the same time.

Two studies on one workdir would append every cell twice to ``results.jsonl``
and collide on the same checkpoint folders; the second one refuses at once
instead, naming the first (:func:`workdir_lock`).
"""

import contextlib
import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from typing import Any, Iterator

from absl import logging
from jax.experimental import multihost_utils
import numpy as np

from dreamjax.plumbing import sharding
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import translate_disk_full, workdir_error

LOCK_FILE = ".dreamjax.lock"


@contextlib.contextmanager
def workdir_lock(folder: str, what: str = "study") -> Iterator[None]:
  """Holds ``folder``'s lock for the body: a second job on ``folder`` refuses at once.

  An exclusive ``flock`` on ``folder/.dreamjax.lock``, which records the
  holder (pid, host, start time, command line) as JSON. A second process
  gets a :class:`ConfigError` naming the holder. The kernel drops the lock
  when its holder dies however it dies, so a file left by a killed job is
  taken over, with a warning naming that job. On filesystems without
  ``flock`` a warning says the workdir is not locked and the body runs.
  Multi-host: process 0 takes the lock and the others learn whether it did,
  so they all stop or go on together. ``what`` names the job in messages.
  """
  fd, error = None, None
  if sharding.is_primary():
    try:
      fd = _take_lock(folder, what)
    except ConfigError as e:
      error = e
  if sharding.process_count() > 1:
    refused = int(multihost_utils.broadcast_one_to_all(np.asarray(error is not None, np.int32)))
    if refused and error is None:
      raise ConfigError(f"process 0 could not lock workdir {folder!r}: another {what} runs"
                        " there. Its log says which; wait for it or pass another --workdir.")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if fd is not None:
      _release_lock(folder, fd)


def _take_lock(folder: str, what: str) -> int | None:
  """The locked file's descriptor, None where the filesystem has no ``flock``."""
  path = os.path.join(folder, LOCK_FILE)
  for _ in range(10):
    try:
      with translate_disk_full(path):
        os.makedirs(folder, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except (PermissionError, NotADirectoryError, FileExistsError) as e:
      raise workdir_error(folder, e.strerror) from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _wait_for_holder(fd)
      os.close(fd)
      raise ConfigError(
          f"workdir {folder} is in use: another {what} runs there ({_describe(holder)})."
          f" Two jobs in one workdir would mix or overwrite each other's results: wait"
          f" for that one to finish (or stop it), or pass another --workdir.") from None
    except OSError as e:  # NFS without lockd, some FUSE mounts: no flock at all
      os.close(fd)
      logging.warning("cannot lock %s (%s): make sure no other %s uses this workdir"
                      " while this one runs.", path, e.strerror, what)
      return None
    # The previous holder may have removed the file between our open and our
    # flock (a clean release): then we locked a file no one else can see.
    try:
      same = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  else:
    raise ConfigError(f"could not lock {path}: it kept being replaced. Is another {what}"
                      " starting in this workdir? Pass another --workdir.")
  previous = _read_holder(fd)
  if previous:
    logging.warning("took over the lock of workdir %s from %s, which ended without"
                    " releasing it (killed or crashed).", folder, _describe(previous))
  holder = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "argv": list(sys.argv)}
  try:
    with translate_disk_full(path):
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
      os.fsync(fd)
  except BaseException:
    os.close(fd)
    raise
  return fd


def _release_lock(folder: str, fd: int) -> None:
  # Remove the file while still holding the lock, so no one can take over a
  # file with our details in it; _take_lock checks it locked the live file.
  with contextlib.suppress(OSError):
    os.remove(os.path.join(folder, LOCK_FILE))
  os.close(fd)


def _read_holder(fd: int) -> dict[str, Any]:
  try:
    holder = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
  except (OSError, ValueError):
    return {}
  return holder if isinstance(holder, dict) else {}


def _wait_for_holder(fd: int, seconds: float = 2.0) -> dict[str, Any]:
  # The holder writes its details just after it takes the lock: a job that
  # starts at the same moment may look in between, so give it a moment.
  deadline = time.monotonic() + seconds
  holder = _read_holder(fd)
  while not holder and time.monotonic() < deadline:
    time.sleep(0.02)
    holder = _read_holder(fd)
  return holder


def _describe(holder: dict[str, Any]) -> str:
  if not holder:
    return "its details are not written yet"
  argv = holder.get("argv")
  command = shlex.join(map(str, argv)) if isinstance(argv, list) else "?"
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since"
          f" {holder.get('started', '?')}, running `{command}`")
