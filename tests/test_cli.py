"""The ``dreamjax`` console command runs the same commands as experiments/*.py."""

import os
import subprocess
import sys

from conftest import REPO

DREAMJAX = os.path.join(os.path.dirname(sys.executable), "dreamjax")


def _run(*args):
  return subprocess.run([DREAMJAX, *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_console_command_lists_and_runs_commands(tmp_path, real_data_dir):
  assert os.path.exists(DREAMJAX), "pip install -e . installs the dreamjax command"
  out = _run()
  assert out.returncode == 2 and "study" in out.stdout and "train_generator" in out.stdout
  out = _run("study", "--dry_run", f"--workdir={tmp_path}",
             "--config.arms=('baseline','classical')")
  assert out.returncode == 0, out.stderr[-2000:]
  assert "N1000/classical" in out.stderr and "estimated wall time" in out.stderr
  out = _run("study", "--config.no_such_field=1")
  assert out.returncode == 2 and "names no field" in out.stderr and "Traceback" not in out.stderr
  out = _run("dreams")
  assert out.returncode == 2 and "unknown command 'dreams'" in out.stderr
