"""Shared plumbing for the absl entry points in ``experiments/``."""

import faulthandler
import os
import signal
import sys
import threading
from typing import Callable

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from dreamjax import errors
from dreamjax.errors import (DiskFullError, DreamjaxError, Terminated, disk_full_path,
                             is_disk_full)


_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Join a multi-host job through jax.distributed.initialize() first"
    " (default: the DREAMJAX_DISTRIBUTED environment variable). Run the same command in every"
    " process; outside Cloud TPU set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and"
    " JAX_PROCESS_ID. The script then works over every host's devices and process 0 writes"
    " the workdir, which must be storage every host sees.")


def _flag_error_message(error: Exception) -> str:
  """The user-facing part of a flag error, without any embedded traceback.

  ``ml_collections`` wraps an exception raised by ``get_config`` (an unknown
  preset, say) into the flag error together with its traceback; only the
  exception's own last line says what is wrong.
  """
  text = str(error).strip()
  if "Traceback (most recent call last)" in text:
    head = text.split("Traceback (most recent call last)")[0].strip().rstrip(":")
    tail = [line.strip() for line in text.splitlines() if line.strip()][-1]
    text = f"{head}: {tail}" if head else tail
  return text


def _exit_with_flag_error(message: str) -> None:
  print(f"dreamjax error: {message}\n"
        "Fix the flag and rerun; --helpshort lists the flags.", file=sys.stderr)
  sys.exit(2)


_CONFIG_FLAGS: list[tuple[str, flags.FlagHolder]] = []


def define_config(default_file: str, help_text: str, name: str = "config") -> flags.FlagHolder:
  """``config_flags.DEFINE_config_file`` whose mistakes end in a clear message.

  When ``--config`` is not given, ml_collections loads the default file and
  applies the ``--config.FIELD=VALUE`` overrides right here, at import time,
  so an override naming no field fails before ``app.run`` could catch it.
  """
  try:
    holder = config_flags.DEFINE_config_file(name, default_file, help_text)
  except (AttributeError, KeyError) as e:  # ml_collections' lookup of a missing field
    _exit_with_flag_error(f"a --{name}.FIELD override names no field of the config:"
                          f" {str(e).strip(chr(34))}")
  except (TypeError, ValueError, flags.Error) as e:
    _exit_with_flag_error(f"a --{name}.FIELD override does not fit the config: {e}")
  _CONFIG_FLAGS.append((name, holder))
  return holder


def _check_configs_loaded() -> None:
  """A config file that failed to load (missing, broken) fails here, not mid-run."""
  for name, holder in _CONFIG_FLAGS:
    try:
      holder.value.keys()
    except OSError as e:
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      _exit_with_flag_error(f"cannot load --{name}: " + " ".join(lines))


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config ending in one clear line.

  absl's help flags (``--help``, ``--helpshort``, ``--helpfull``) print their
  text while being parsed and then exit with status 1, which reads as a
  failure to a shell or a script; asking for help is not one, so they exit 0.
  Nothing else in the parse exits.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _exit_with_flag_error(_flag_error_message(e))
  except SystemExit as e:
    sys.exit(0 if e.code == 1 else e.code)


# Where every command's own flags are defined (commands.py, and --config and
# --distributed here): what ``--helpshort`` lists.
_COMMAND_FLAG_MODULES = ("dreamjax.cli", "dreamjax.commands")


def _adopt_command_flags() -> None:
  """Makes the command's flags key flags of the main module, so ``--helpshort`` lists them.

  absl's ``--helpshort`` lists only the key flags of the main module, the one
  named ``sys.argv[0]`` (``experiments/study.py``, or ``dreamjax study`` for
  the console command); the flags themselves are defined in the modules above.
  ``flags.adopt_module_key_flags`` would adopt them for its caller (this
  module), hence the explicit registration under the main module's name.
  """
  for module in _COMMAND_FLAG_MODULES:
    for flag in flags.FLAGS.get_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def _log_workdir() -> None:
  """Names the folder the command writes, as an absolute path, before anything else.

  A relative ``--workdir`` is the caller's working directory's, as for any
  command line tool; the absolute path says which folder that was. In a
  multi-host job every process names its own.
  """
  if "workdir" in flags.FLAGS and flags.FLAGS.workdir:
    logging.info("workdir: %s", os.path.abspath(flags.FLAGS.workdir))


def run(main: Callable[[list[str]], None]) -> None:
  """Like ``absl.app.run``, but a :class:`DreamjaxError` ends in its message.

  The message says what is wrong and what to do; a traceback would only hide
  it. So does a full disk, whichever code was writing. Exit status 2 marks a
  usage or data error, as absl does for bad flags. With ``--distributed``
  every process of the job runs ``main`` on the same data; process 0 alone
  writes files (:mod:`dreamjax.plumbing.fileio`) and logs progress, the others only
  warnings and errors. ``kill -USR1 PID`` prints
  every thread's Python stack to stderr and lets the job go on: the first
  thing to look at when a multi-host job seems stuck. ``kill PID`` (SIGTERM)
  stops it as Ctrl-C does (exit status 143): a study records the run as
  stopped, and its finished cells are kept.
  """

  def wrapped(argv):
    if hasattr(signal, "SIGUSR1"):
      faulthandler.register(signal.SIGUSR1, all_threads=True)
    if threading.current_thread() is threading.main_thread():  # where signals are handled
      signal.signal(signal.SIGTERM, errors.terminate)
    use_compilation_cache()
    try:
      _check_configs_loaded()
      _log_workdir()
      # JAX loads once a command runs, not when its flags are parsed (commands.py).
      from dreamjax.plumbing import sharding  # pylint: disable=g-import-not-at-top
      sharding.initialize(_DISTRIBUTED.value)
      if not sharding.is_primary():
        logging.set_verbosity(logging.WARNING)  # process 0 reports the job's progress
      return main(argv)
    except DreamjaxError as e:
      logging.flush()
      print(f"\ndreamjax error: {e}", file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt as e:
      e = errors.as_raised(e)
      print(f"\n{'terminated' if isinstance(e, Terminated) else 'interrupted'}: finished work"
            " is saved; rerun the same command to resume.", file=sys.stderr)
      sys.exit(128 + signal.SIGTERM if isinstance(e, Terminated) else 130)
    except Exception as e:  # noqa: BLE001 - only a full disk is handled; the rest re-raised
      # A write that no dreamjax code wrapped (a library's own file, say) can
      # still find the disk full: it ends in the same one line.
      if not is_disk_full(e):
        raise
      logging.flush()
      print(f"\ndreamjax error: {DiskFullError(disk_full_path(e))}", file=sys.stderr)
      sys.exit(2)

  _adopt_command_flags()
  app.run(wrapped, flags_parser=_parse_flags)


def use_compilation_cache() -> None:
  """Commands keep XLA's compiled programs in a user cache folder across runs.

  A rerun, a resumed study or a study extended with more budgets loads the
  programs an earlier run compiled instead of compiling them again. A cache
  the user configured (``JAX_COMPILATION_CACHE_DIR``) wins;
  ``DREAMJAX_XLA_CACHE=0`` turns it off.
  """
  if os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.environ.get("DREAMJAX_XLA_CACHE") == "0":
    return
  # As in run(): JAX loads once a command runs, not when its flags are parsed.
  import jax  # pylint: disable=g-import-not-at-top
  root = os.environ.get("DREAMJAX_CACHE_DIR") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dreamjax")
  try:
    os.makedirs(os.path.join(root, "xla"), exist_ok=True)
  except OSError:
    return  # no writable cache folder: every program compiles, as without one
  jax.config.update("jax_compilation_cache_dir", os.path.join(root, "xla"))
