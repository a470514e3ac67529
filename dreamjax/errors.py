"""User-facing errors.

Every error a user can cause (bad data, bad flag, diverging run, broken
checkpoint) is one of these, with a message that says what is wrong and what
to do. Entry points print the message and exit with status 2 instead of
showing a traceback (see :mod:`dreamjax.cli`).
"""

import errno
import os
import re


class DreamjaxError(Exception):
  """Base class for errors that a user can fix."""


class DataError(DreamjaxError):
  """A dataset or augmented-dataset file is missing, corrupt or inconsistent."""


class ConfigError(DreamjaxError, ValueError):
  """A config field or flag is outside its valid range."""


class DivergenceError(DreamjaxError, FloatingPointError):
  """A loss became NaN or Inf during training."""

  def __init__(self, message: str, *, step: int | None = None):
    super().__init__(message)
    self.step = step


class CheckpointError(DreamjaxError):
  """A checkpoint could not be read: missing, corrupt or from another config.

  The message is ``fault`` (what is wrong) then ``advice`` (what the user can
  do). A caller that recovers by itself (a training run that trains again
  when its checkpoint is damaged) says what it does after ``fault`` instead.
  """

  def __init__(self, fault: str, advice: str = ""):
    super().__init__(f"{fault} {advice}".strip())
    self.fault = fault
    self.advice = advice

  def __reduce__(self):  # Exception's would pass the whole message as ``fault``
    return type(self), (self.fault, self.advice)


class ReproductionError(DreamjaxError):
  """A recomputed result differs from its record (``dreamjax study --recheck``)."""


class DistributedError(DreamjaxError):
  """The processes of a multi-host job fell out of step: one did not reach a barrier.

  It ends the whole job (a study does not record it as one failed cell and go
  on), since the processes can no longer agree on what comes next.
  """


class Terminated(KeyboardInterrupt):
  """SIGTERM (``kill PID``, a scheduler, a machine shutting down): the job stops as on
  Ctrl-C, so a study records its run as stopped and keeps every finished cell."""


_terminated = False  # set by terminate(): a SIGTERM arrived


def terminate(signum, frame):  # pylint: disable=unused-argument
  """SIGTERM's handler (:func:`dreamjax.cli.run` installs it): raises :class:`Terminated`."""
  global _terminated
  _terminated = True
  raise Terminated()


def as_raised(e: BaseException) -> BaseException:
  """``e``, or :class:`Terminated` where a SIGTERM's exception reached the caller as a
  plain KeyboardInterrupt: Ray's wait for a task checks signals in its own code, and
  turns whatever exception a handler raises there into a KeyboardInterrupt."""
  if _terminated and isinstance(e, KeyboardInterrupt) and not isinstance(e, Terminated):
    return Terminated()
  return e


class DiskFullError(DreamjaxError, OSError):
  """The disk (or the user's quota) filled up while dreamjax wrote a file.

  Raised instead of a bare ``OSError: [Errno 28]`` (or the ``ValueError`` that
  Orbax and tensorstore wrap it in) so that a full disk ends in one line
  saying where, and that a rerun after freeing space resumes. It is also an
  ``OSError`` with ``errno`` set, for callers that handle file errors alike.
  """

  def __init__(self, path: str | None, detail: str = ""):
    where = f"while writing {path}" if path else "while writing a file"
    folder = os.path.dirname(os.path.abspath(path)) if path else "the --workdir"
    super().__init__(
        errno.ENOSPC,
        f"disk full: no space left on the device {where}"
        f"{f' ({detail})' if detail else ''}. Finished work (checkpoints and results"
        " written before) is safe and nothing half-written was kept: free space on"
        f" that disk (`df -h {folder}` shows it) and rerun the same command to resume.")
    self.path = path
    self.detail = detail

  def __reduce__(self):  # OSError's would call __init__ with (errno, message)
    return type(self), (self.path, self.detail)

  def __str__(self) -> str:
    return self.strerror


# What tensorstore (under Orbax) says when the OS reports ENOSPC or EDQUOT: it
# raises ValueError("RESOURCE_EXHAUSTED: ... No space left on device
# [os_error_code='28']"), which carries no errno.
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded",
                   f"os_error_code='{errno.ENOSPC}'", f"os_error_code='{errno.EDQUOT}'")


def is_disk_full(error: BaseException | None) -> bool:
  """True if ``error``, or an exception it was raised from, means a full disk or quota."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if isinstance(error, (OSError, ValueError, RuntimeError)) and any(
        text in str(error) for text in _DISK_FULL_TEXT):
      return True
    error = error.__cause__ or error.__context__
  return False


def disk_full_path(error: BaseException) -> str | None:
  """The file a disk-full ``error`` names, if it names one (best effort)."""
  if isinstance(error, DiskFullError):
    return error.path
  if isinstance(error, OSError) and error.filename:
    return str(error.filename)
  quoted = re.findall(r'"(/[^"]+)"', str(error))  # tensorstore quotes the files it writes
  return quoted[-1] if quoted else None
