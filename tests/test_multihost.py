"""Multi-host jobs, for real: two processes joined by jax.distributed on this CPU.

Each process simulates 2 CPU devices, so the ``("data",)`` mesh spans 4
devices on 2 "hosts" that talk through JAX's CPU collectives (gloo), as the
hosts of a TPU pod slice do over their interconnect (``conftest.run_two_hosts``).
A multi-host run is compared with one process driving 4 local devices: the
same numbers must come out, and only one set of files. The study's own
multi-host test is in test_study.py, next to the one-process run it is
compared with.
"""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, host_env, run_one_host, run_two_hosts, stray_files


def test_attack_on_two_hosts_equals_one_host(tmp_path, synthetic_dir):
  flags = ("--config", "dreamjax/configs/attack.py:tiny", f"--config.dataset=idx:{synthetic_dir}",
           "--config.num_labeled=40", "--config.val_size=20", "--config.num_seeds=1",
           "--config.train.checkpoint_every=10")
  multi = run_two_hosts("attack.py", *flags, f"--workdir={tmp_path}/multi")
  for out in multi:
    assert out.returncode == 0, out.stderr[-3000:]
  single = run_one_host("attack.py", *flags, f"--workdir={tmp_path}/single")
  assert single.returncode == 0, single.stderr[-3000:]

  a = json.load(open(tmp_path / "multi" / "results.json"))
  b = json.load(open(tmp_path / "single" / "results.json"))
  # Training over 2 hosts: the same loss trajectory, hence the same classifier.
  np.testing.assert_allclose(a["clean_accuracy_per_seed"], b["clean_accuracy_per_seed"])
  np.testing.assert_allclose(a["robust_accuracy_per_seed"], b["robust_accuracy_per_seed"])
  assert a["offline"]["success_rate"] == b["offline"]["success_rate"]
  np.testing.assert_allclose(a["alignment"]["layer"]["mean"], b["alignment"]["layer"]["mean"],
                             rtol=1e-4, atol=1e-6)
  adv_a = np.load(tmp_path / "multi" / "adversarial.npz")["images"]
  adv_b = np.load(tmp_path / "single" / "adversarial.npz")["images"]
  np.testing.assert_allclose(adv_a, adv_b, atol=1e-5)
  assert not stray_files(tmp_path / "multi")  # process 1 wrote nothing there

  # Rerun: both processes resume the finished classifier from process 0's checkpoint.
  again = run_two_hosts("attack.py", *flags, f"--workdir={tmp_path}/multi")
  for out in again:
    assert out.returncode == 0, out.stderr[-3000:]
  assert "resumed from step" in again[0].stderr
  # Process 0 alone reports progress; the other keeps to warnings and errors.
  assert "attack: classifier: step" in multi[0].stderr
  assert "classifier: step" not in multi[1].stderr + again[1].stderr
  c = json.load(open(tmp_path / "multi" / "results.json"))
  assert c["robust_accuracy_per_seed"] == a["robust_accuracy_per_seed"]


def test_distributed_without_a_coordinator_is_a_clear_error(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "experiments", "train_classifier.py"), "--distributed",
       "--config", "dreamjax/configs/classifier.py:tiny", f"--workdir={tmp_path}"],
      cwd=REPO, text=True, capture_output=True, env=host_env(1), timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  assert "cannot join a multi-host job" in out.stderr
  assert "JAX_COORDINATOR_ADDRESS" in out.stderr and "Traceback" not in out.stderr
  assert not os.listdir(tmp_path)


def test_bad_process_id_is_a_clear_error(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "experiments", "train_classifier.py"), "--config",
       "dreamjax/configs/classifier.py:tiny", f"--workdir={tmp_path}"],
      cwd=REPO, text=True, capture_output=True, timeout=300,
      env=host_env(1, DREAMJAX_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS="localhost:1",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="first"))
  assert out.returncode == 2, out.stderr[-3000:]
  assert "JAX_PROCESS_ID='first' is not a whole number" in out.stderr
  assert "Traceback" not in out.stderr


def test_workdir_not_shared_by_the_hosts_is_a_clear_error(tmp_path, real_data_dir):
  # A relative --workdir from two working directories: two folders, as when each
  # host of a pod writes to its own local disk.
  cwds = [tmp_path / "host0", tmp_path / "host1"]
  for d in cwds:
    d.mkdir()
  outs = run_two_hosts("train_classifier.py", "--config",
                       os.path.join(REPO, "dreamjax", "configs", "classifier.py") + ":tiny",
                       f"--config.data_dir={real_data_dir}", "--workdir=run", cwds=cwds)
  for out in outs:
    assert out.returncode == 2, out.stderr[-3000:]
    assert "is not shared by every process of this multi-host job" in out.stderr
    assert "process(es) [1]" in out.stderr and "Traceback" not in out.stderr
  for d in cwds:
    assert not os.path.exists(d / "run")  # the refused run left nothing behind


_LONE_BARRIER = """
import sys, time
from dreamjax.plumbing import sharding
from dreamjax.errors import DistributedError
sharding.initialize(True)
if sharding.is_primary():
  try:
    sharding.sync("only process 0 comes here")
  except DistributedError as e:
    print(e)
    sys.exit(3)
else:
  time.sleep(15)  # alive, but never at the barrier
"""


def test_a_process_missing_a_barrier_ends_in_a_clear_error(tmp_path):
  script = tmp_path / "lone_barrier.py"
  script.write_text(_LONE_BARRIER)
  t0 = time.monotonic()
  outs = run_two_hosts(str(script), extra_env={"DREAMJAX_BARRIER_TIMEOUT_S": "3"})
  assert outs[0].returncode == 3, outs[0].stderr[-3000:]
  assert re.search(r"waited [3-9] s \(limit 3 s\) at barrier 'only process 0 comes here'",
                   outs[0].stdout), outs[0].stdout
  assert "DREAMJAX_BARRIER_TIMEOUT_S" in outs[0].stdout
  assert outs[1].returncode == 0, outs[1].stderr[-3000:]
  assert time.monotonic() - t0 < 120


def test_barrier_timeout_must_be_positive(monkeypatch):
  from dreamjax.plumbing import sharding  # pylint: disable=g-import-not-at-top
  from dreamjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("DREAMJAX_BARRIER_TIMEOUT_S", raising=False)
  assert sharding.barrier_timeout_s() == 1800
  monkeypatch.setenv("DREAMJAX_BARRIER_TIMEOUT_S", "90")
  assert sharding.barrier_timeout_s() == 90
  for bad in ("0", "-5", "soon"):
    monkeypatch.setenv("DREAMJAX_BARRIER_TIMEOUT_S", bad)
    with pytest.raises(ConfigError, match="DREAMJAX_BARRIER_TIMEOUT_S"):
      sharding.barrier_timeout_s()


def test_bad_barrier_timeout_stops_a_distributed_job_before_it_starts(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "experiments", "train_classifier.py"), "--config",
       "dreamjax/configs/classifier.py:tiny", f"--workdir={tmp_path}"],
      cwd=REPO, text=True, capture_output=True, timeout=300,
      env=host_env(1, DREAMJAX_DISTRIBUTED="1", DREAMJAX_BARRIER_TIMEOUT_S="soon"))
  assert out.returncode == 2, out.stderr[-3000:]
  assert "DREAMJAX_BARRIER_TIMEOUT_S='soon' must be a number of seconds" in out.stderr
  assert "Traceback" not in out.stderr and not os.listdir(tmp_path)
