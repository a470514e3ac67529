"""User-facing errors.

Every error a user can cause (bad data, bad flag, diverging run, broken
checkpoint) is one of these, with a message that says what is wrong and what
to do. Entry points print the message and exit with status 2 instead of
showing a traceback (see :mod:`dreamjax.cli`).
"""


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
  """A checkpoint could not be read: missing, corrupt or from another config."""


class DistributedError(DreamjaxError):
  """The processes of a multi-host job fell out of step: one did not reach a barrier.

  It ends the whole job (a study does not record it as one failed cell and go
  on), since the processes can no longer agree on what comes next.
  """
