"""Shared plumbing for the absl entry points in ``experiments/``."""

import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from dreamjax.errors import DreamjaxError


_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Join a multi-host job with jax.distributed.initialize() (TPU pods;"
    " default: the DREAMJAX_DISTRIBUTED environment variable).")


def run(main: Callable[[list[str]], None]) -> None:
  """Like ``absl.app.run``, but a :class:`DreamjaxError` ends in its message.

  The message says what is wrong and what to do; a traceback would only hide
  it. Exit status 2 marks a usage or data error, as absl does for bad flags.
  """

  def wrapped(argv):
    try:
      from dreamjax import sharding  # pylint: disable=g-import-not-at-top
      sharding.initialize(_DISTRIBUTED.value)
      return main(argv)
    except DreamjaxError as e:
      logging.flush()
      print(f"\ndreamjax error: {e}", file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt:
      print("\ninterrupted: finished work is saved; rerun the same command to"
            " resume.", file=sys.stderr)
      sys.exit(130)

  app.run(wrapped)
