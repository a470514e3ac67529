import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def _run(*flags):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", "train_classifier.py"),
                         *flags], capture_output=True, text=True, cwd=REPO, timeout=600)


def test_tiny_run_end_to_end(tmp_path, real_data_dir):
  out = _run("--config", "dreamjax/configs/classifier.py:tiny", f"--workdir={tmp_path}",
             f"--config.data_dir={real_data_dir}", "--config.num_seeds=2")
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.load(open(tmp_path / "results.json"))
  assert 0.2 < res["test_accuracy"] <= 1.0  # well above chance after 30 tiny steps
  assert len(res["test_accuracy_per_seed"]) == 2
  assert res["config"]["num_labeled"] == 100 and res["dreamjax_version"]
  assert "test accuracy:" in out.stdout


def test_bad_flag_is_a_clear_error(tmp_path):
  out = _run("--config", "dreamjax/configs/classifier.py:tiny", f"--workdir={tmp_path}",
             "--config.num_labeled=55")
  assert out.returncode == 2
  assert "num_labeled=55" in out.stderr and "Traceback" not in out.stderr


def test_missing_data_is_a_clear_error(tmp_path):
  out = _run("--config", "dreamjax/configs/classifier.py:tiny", f"--workdir={tmp_path}",
             f"--config.data_dir={tmp_path}/none")
  assert out.returncode == 2
  assert "apt-get install dataset-fashion-mnist" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("flags,expected", [
    (("--config", "dreamjax/configs/classifier.py:bogus"), "unknown preset 'bogus'"),
    (("--config.no_such_field=3",), "no field of the config: 'no_such_field'"),
    (("--config", "dreamjax/configs/no_such_file.py"), "no_such_file.py"),
    (("--config.train.steps=abc",), "train.steps=abc"),
    (("--no_such_flag",), "no_such_flag"),
])
def test_bad_config_flag_is_one_clear_line(tmp_path, flags, expected):
  out = _run(f"--workdir={tmp_path}", *flags)
  assert out.returncode == 2, out.stderr[-2000:]
  assert expected in out.stderr and "dreamjax error:" in out.stderr
  assert "Traceback" not in out.stderr
  assert not os.listdir(tmp_path)  # nothing ran
