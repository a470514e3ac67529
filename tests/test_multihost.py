"""Multi-host jobs, for real: two processes joined by jax.distributed on this CPU.

Each process simulates 2 CPU devices, so the ``("data",)`` mesh spans 4
devices on 2 "hosts" that talk through JAX's CPU collectives (gloo), as the
hosts of a TPU pod slice do over their interconnect. Every multi-host run is
compared with one process driving 4 local devices: the same numbers must
come out, and only one set of files.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from conftest import REPO


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if k not in ("DREAMJAX_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                      "JAX_PROCESS_ID")}
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                      + f" --xla_force_host_platform_device_count={devices}").strip()
  env.update(extra)
  return env


def _script(name: str) -> str:
  return os.path.join(REPO, "experiments", name)


def _two_hosts(script: str, *flags: str) -> list[subprocess.CompletedProcess]:
  """Runs ``script`` as a 2-process job (2 devices each); returns both outcomes."""
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, _script(script), *flags], cwd=REPO, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env=_env(2, DREAMJAX_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
           for i in range(2)]
  outs = []
  for p in procs:
    try:
      stdout, stderr = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outs.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
  return outs


def _one_host(script: str, *flags: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, _script(script), *flags], cwd=REPO, text=True,
                        capture_output=True, env=_env(4), timeout=600)


def _stray_files(folder) -> list[str]:
  return [os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
          if ".tmp" in f or f.startswith(".")]


def test_attack_on_two_hosts_equals_one_host(tmp_path, synthetic_dir):
  flags = ("--config", "dreamjax/configs/attack.py:tiny", f"--config.dataset=idx:{synthetic_dir}",
           "--config.num_labeled=40", "--config.val_size=20", "--config.num_seeds=1",
           "--config.train.checkpoint_every=10")
  multi = _two_hosts("attack.py", *flags, f"--workdir={tmp_path}/multi")
  for out in multi:
    assert out.returncode == 0, out.stderr[-3000:]
  single = _one_host("attack.py", *flags, f"--workdir={tmp_path}/single")
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
  assert not _stray_files(tmp_path / "multi")  # process 1 wrote nothing there

  # Rerun: both processes resume the finished classifier from process 0's checkpoint.
  again = _two_hosts("attack.py", *flags, f"--workdir={tmp_path}/multi")
  for out in again:
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from step" in out.stderr
  c = json.load(open(tmp_path / "multi" / "results.json"))
  assert c["robust_accuracy_per_seed"] == a["robust_accuracy_per_seed"]


def test_study_on_two_hosts_equals_one_host(tmp_path, real_data_dir):
  """Classifier training, dreams, Fréchet features and a pool VAE, over 2 hosts."""
  flags = ("--config", "dreamjax/configs/study.py:tiny", f"--config.data_dir={real_data_dir}",
           "--config.arms=('baseline','dream_subtle','vae_pool')")
  multi = _two_hosts("study.py", *flags, f"--workdir={tmp_path}/multi")
  for out in multi:
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FAILED" not in out.stderr
  single = _one_host("study.py", *flags, f"--workdir={tmp_path}/single")
  assert single.returncode == 0, single.stderr[-3000:]

  def cells(folder):
    with open(tmp_path / folder / "results.jsonl") as f:
      return {r["cell"]: r for r in map(json.loads, f)}

  a, b = cells("multi"), cells("single")
  assert set(a) == set(b) == {"oracle", "N100/baseline", "N100/dream_subtle", "N100/vae_pool"}
  for key in a:
    assert a[key]["status"] == "ok", a[key]
    # Float summation order differs between the all-reduce over hosts and the
    # one over local devices; nothing else does.
    np.testing.assert_allclose(a[key]["test_accuracy"], b[key]["test_accuracy"], atol=2e-3)
    if "frechet_per_seed" in a[key]:
      np.testing.assert_allclose(a[key]["frechet_per_seed"], b[key]["frechet_per_seed"],
                                 rtol=1e-3)
  assert "dream_subtle" in (tmp_path / "multi" / "REPORT.md").read_text()
  assert not _stray_files(tmp_path / "multi")


def test_distributed_without_a_coordinator_is_a_clear_error(tmp_path):
  out = subprocess.run(
      [sys.executable, _script("train_classifier.py"), "--distributed",
       "--config", "dreamjax/configs/classifier.py:tiny", f"--workdir={tmp_path}"],
      cwd=REPO, text=True, capture_output=True, env=_env(1), timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  assert "cannot join a multi-host job" in out.stderr
  assert "JAX_COORDINATOR_ADDRESS" in out.stderr and "Traceback" not in out.stderr
  assert not os.listdir(tmp_path)


def test_bad_process_id_is_a_clear_error(tmp_path):
  out = subprocess.run(
      [sys.executable, _script("train_classifier.py"), "--config",
       "dreamjax/configs/classifier.py:tiny", f"--workdir={tmp_path}"],
      cwd=REPO, text=True, capture_output=True, timeout=300,
      env=_env(1, DREAMJAX_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS="localhost:1",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="first"))
  assert out.returncode == 2, out.stderr[-3000:]
  assert "JAX_PROCESS_ID='first' is not a whole number" in out.stderr
  assert "Traceback" not in out.stderr
