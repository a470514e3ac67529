"""The ``dreamjax`` console command runs the same commands as experiments/*.py."""

import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO
from dreamjax import commands

DREAMJAX = os.path.join(os.path.dirname(sys.executable), "dreamjax")


def _run(*args):
  return subprocess.run([DREAMJAX, *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_console_command_lists_and_runs_commands(tmp_path, real_data_dir):
  assert os.path.exists(DREAMJAX), "pip install -e . installs the dreamjax command"
  out = _run()
  assert out.returncode == 2 and "study" in out.stdout and "train_generator" in out.stdout
  workdir = tmp_path / "new" / "study"
  out = _run("study", "--dry_run", f"--workdir={workdir}",
             "--config.arms=('baseline','classical')")
  assert out.returncode == 0, out.stderr[-2000:]
  assert "N1000/classical" in out.stderr and "estimated wall time" in out.stderr
  assert os.listdir(tmp_path) == []  # a dry run creates no workdir (nor its parents)
  out = _run("study", "--config.no_such_field=1")
  assert out.returncode == 2 and "names no field" in out.stderr and "Traceback" not in out.stderr
  out = _run("dreams")
  assert out.returncode == 2 and "unknown command 'dreams'" in out.stderr


# Each command's own flags: what --helpshort must list (docs/usage.md sends users there).
OWN_FLAGS = {
    "study": ["config", "workdir", "dry_run", "retry_failed", "report_only", "publish",
              "recheck", "choose_length", "choose_oracle_length", "choose_generator_steps",
              "workers",
              "engine_address", "workers_per_gpu", "distributed"],
    "train_classifier": ["config", "workdir", "distributed"],
    "dream": ["config", "workdir", "distributed"],
    "attack": ["config", "workdir", "distributed"],
    "train_generator": ["config", "workdir", "model", "source", "distributed"],
    "compare": ["a", "b", "out", "name_a", "name_b", "distributed"],
}


def test_every_command_is_a_script_and_has_its_flags_listed_here():
  scripts = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "experiments", "*.py"))}
  assert scripts == set(commands.COMMANDS) == set(OWN_FLAGS)


@pytest.mark.parametrize("name", sorted(OWN_FLAGS))
def test_helpshort_lists_the_commands_own_flags(name):
  script = [sys.executable, os.path.join(REPO, "experiments", f"{name}.py")]
  for argv in (script, [DREAMJAX, name]):
    out = subprocess.run([*argv, "--helpshort"], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 0, (argv, out.stdout[-2000:], out.stderr[-2000:])
    listed = {line.split(":")[0].strip().replace("--[no]", "--")
              for line in out.stdout.splitlines() if line.startswith("  --")}
    assert listed == {f"--{flag}" for flag in OWN_FLAGS[name]}, (argv, out.stdout)


def test_a_sigterm_that_reaches_the_caller_as_a_plain_interrupt_reads_as_sigterm(monkeypatch):
  """Ray's wait for a task runs the signal handler in its own code and raises a plain
  KeyboardInterrupt in place of the handler's exception; the study still records the
  run as terminated (exit 143), not interrupted (130)."""
  from dreamjax import errors
  monkeypatch.setattr(errors, "_terminated", False)
  plain = KeyboardInterrupt()
  assert errors.as_raised(plain) is plain  # Ctrl-C stays Ctrl-C
  with pytest.raises(errors.Terminated):
    errors.terminate(15, None)
  assert isinstance(errors.as_raised(plain), errors.Terminated)
  other = ValueError()
  assert errors.as_raised(other) is other
