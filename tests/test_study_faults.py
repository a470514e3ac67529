"""Faults a long, unattended study meets: each ends in one clear line or a clean resume.

One small study (baseline + classical on the tiny preset, conftest's
``small_study``) is run once per session; each test copies its workdir and
damages the copy.
"""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, small_study_cmd
from dreamjax.plumbing import fileio, lock
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError, DiskFullError
from dreamjax.study import records
from dreamjax.study.report import report
from dreamjax.study.run import recheck, runner

SCRIPT = os.path.join(REPO, "experiments", "study.py")
_cmd = small_study_cmd  # the conftest's small_study fixture ran it to the end


def _config():
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "classical")
  return cfg


def _cells(workdir):
  return {r["cell"]: r for r in fileio.read_jsonl(os.path.join(workdir, "results.jsonl"),
                                                   repair=False)}


def _copy(small_study, tmp_path):
  dst = str(tmp_path / "copy")
  shutil.copytree(small_study, dst)
  return dst


def test_second_study_on_a_busy_workdir_refuses_at_once(small_study, tmp_path):
  workdir = _copy(small_study, tmp_path)
  with lock.workdir_lock(workdir):  # this process plays the first study
    out = subprocess.run(_cmd(workdir), capture_output=True, text=True, cwd=REPO, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "is in use: another study runs there" in out.stderr
  assert f"pid {os.getpid()}" in out.stderr and "Traceback" not in out.stderr
  assert "oracle" not in out.stderr  # refused before any compute


def test_torn_last_line_is_set_aside_and_its_cell_rerun(small_study, tmp_path):
  workdir = _copy(small_study, tmp_path)
  path = os.path.join(workdir, "results.jsonl")
  before = _cells(workdir)
  with open(path) as f:
    text = f.read()
  last = text.rstrip("\n").rsplit("\n", 1)[-1]
  with open(path, "w") as f:  # a crash in the middle of writing the last line
    f.write(text[:len(text) - len(last) // 2 - 1])
  out = subprocess.run(_cmd(workdir), capture_output=True, text=True, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "JSONDecodeError" not in out.stderr
  torn = [f for f in os.listdir(workdir) if f.startswith("results.jsonl.torn-")]
  assert len(torn) == 1  # the damaged file is kept for inspection
  after = _cells(workdir)
  assert set(after) == set(before)
  rerun = json.loads(last)["cell"]
  assert after[rerun]["test_accuracy"] == before[rerun]["test_accuracy"]


def test_full_disk_ends_the_study_and_a_rerun_resumes(small_study, tmp_path, monkeypatch):
  workdir = str(tmp_path / "full")
  real_append = fileio._append  # pylint: disable=protected-access
  calls = []

  def append_until_full(path, data):
    calls.append(path)
    if len(calls) == 2:  # the oracle's line is written, the baseline's is not
      raise OSError(errno.ENOSPC, "No space left on device")
    real_append(path, data)

  monkeypatch.setattr(fileio, "_append", append_until_full)
  with pytest.raises(DiskFullError, match="disk full.*rerun the same command to resume"):
    runner.run_study(_config(), workdir, log=lambda m: None)
  assert set(_cells(workdir)) == {"oracle"}  # never recorded as a failed cell
  assert not os.path.exists(os.path.join(workdir, lock.LOCK_FILE))
  monkeypatch.setattr(fileio, "_append", real_append)
  runner.run_study(_config(), workdir, log=lambda m: None)
  cells = _cells(workdir)
  assert all(r["status"] == "ok" for r in cells.values())
  assert cells["N100/classical"]["test_accuracy"] == _cells(small_study)["N100/classical"][
      "test_accuracy"]


def test_other_versions_or_data_are_refused(small_study, tmp_path):
  workdir = _copy(small_study, tmp_path)
  path = os.path.join(workdir, runner.CONFIG_FILE)
  with open(path) as f:
    record = json.load(f)
  assert record["versions"]["jaxlib"] and len(record["data"]["digest"]) == 64
  record["versions"]["jaxlib"] = "0.4.30"
  with open(path, "w") as f:
    json.dump(record, f)
  out = subprocess.run(_cmd(workdir), capture_output=True, text=True, cwd=REPO, timeout=300)
  assert out.returncode == 2 and "other versions" in out.stderr and "jaxlib" in out.stderr
  record["versions"]["jaxlib"] = json.load(open(os.path.join(small_study, runner.CONFIG_FILE)))[
      "versions"]["jaxlib"]
  record["data"]["digest"] = "0" * 64
  with open(path, "w") as f:
    json.dump(record, f)
  out = subprocess.run(_cmd(workdir), capture_output=True, text=True, cwd=REPO, timeout=300)
  assert out.returncode == 2 and "other data" in out.stderr


def test_report_only_with_another_config_is_refused(small_study):
  before = open(os.path.join(small_study, "REPORT.md")).read()
  out = subprocess.run(_cmd(small_study, "--report_only", "--config.num_seeds=3"),
                       capture_output=True, text=True, cwd=REPO, timeout=300)
  assert out.returncode == 2 and "another config" in out.stderr and "num_seeds" in out.stderr
  assert open(os.path.join(small_study, "REPORT.md")).read() == before


def test_a_wider_config_extends_a_finished_study_in_place(small_study, tmp_path):
  """More budgets (or arms, or exchange values) add cells; finished cells are kept."""
  workdir = _copy(small_study, tmp_path)
  before = _cells(workdir)
  # The new arm builds on N100's finished baseline: its checkpoint must be restored, not
  # refused as "another config" because the config grew.
  # The new budget trains longer than the finished one (its own length extends the study;
  # not N200's: the finished exchange-rate cell N200/baseline trained the default length).
  config_file = tmp_path / "longer_at_300.py"
  config_file.write_text("from dreamjax.configs import study\n\n\ndef get_config(preset):\n"
                         "  c = study.get_config(preset)\n  c.train_steps_by_budget.N300 = 40\n"
                         "  return c\n")
  wider = [sys.executable, SCRIPT, "--config", f"{config_file}:tiny",
           f"--workdir={workdir}", "--config.arms=('baseline','classical','dream_subtle')",
           "--config.budgets=(100,300)"]
  out = subprocess.run(wider, capture_output=True, text=True, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  after = _cells(workdir)
  assert {"N300/classical", "N100/dream_subtle"} <= set(after) - set(before)
  assert all(r["status"] == "ok" for r in after.values()), {
      k: r.get("error") for k, r in after.items() if r["status"] != "ok"}
  assert "N100/baseline: resumed from step" in out.stderr, out.stderr[-3000:]
  assert after["N300/classical"]["history"][-1]["step"] == 40
  assert after["N300/classical"]["cost"]["train_image_steps"] == 40 * 32
  assert after["N100/dream_subtle"]["cost"]["train_image_steps"] == 30 * 32
  assert all(after[k]["test_accuracy"] == r["test_accuracy"] for k, r in before.items()
             if "test_accuracy" in r)
  out = subprocess.run(wider + ["--config.train.steps=31"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
  assert out.returncode == 2 and "another config" in out.stderr and "train.steps" in out.stderr
  runs = records.read_sessions(workdir)  # the first run, then the extension
  assert [r["status"] for r in runs] == ["finished", "finished"]
  assert runs[1]["cells_before"] == len(before) - 1 and runs[1]["cells_run"] >= 1  # - oracle
  assert "Wall time of all runs:" in open(os.path.join(workdir, "REPORT.md")).read()


def test_recheck_recomputes_a_cell_bit_for_bit(small_study, tmp_path):
  """A recorded cell recomputed from nothing equals its record, except where it was changed."""
  workdir = str(tmp_path / "tampered")
  os.makedirs(workdir)
  for name in ("study_config.json", "results.jsonl"):
    shutil.copyfile(os.path.join(small_study, name), os.path.join(workdir, name))
  lines = fileio.read_jsonl(os.path.join(workdir, "results.jsonl"))
  for r in lines:
    if r["cell"] == "N100/classical":
      r["test_accuracy"][0] += 0.25
  with open(os.path.join(workdir, "results.jsonl"), "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in lines))
  out = subprocess.run(_cmd(workdir, "--recheck=N100/classical"), capture_output=True,
                       text=True, cwd=REPO, timeout=600)
  assert out.returncode == 2, out.stderr[-3000:]
  got = json.load(open(os.path.join(workdir, "recheck", "N100__classical", "recheck.json")))
  assert got["compared"] == ["N100/classical", "oracle"]
  assert [d[0] for d in got["differences"]] == ["N100/classical/test_accuracy[0]"]
  assert "N100/classical/test_accuracy[0]:" in out.stderr


def test_recheck_refuses_an_unknown_or_unfinished_cell(small_study, tmp_path):
  workdir = _copy(small_study, tmp_path)
  with pytest.raises(ConfigError, match="no such cell"):
    recheck.recheck_cell(_config(), workdir, "N100/bogus", log=lambda m: None)
  kept = [r for r in fileio.read_jsonl(os.path.join(workdir, "results.jsonl"))
          if r["cell"] != "N100/classical"]
  with open(os.path.join(workdir, "results.jsonl"), "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in kept))
  with pytest.raises(ConfigError, match="no finished record"):
    recheck.recheck_cell(_config(), workdir, "N100/classical", log=lambda m: None)


def test_record_differences_skips_wall_clock_and_names_paths():
  a = {"cell": "x", "test_accuracy": [0.5, 0.6], "timing": {"s": 1}, "gen_seconds": 3,
       "generation": {"images_per_s": 9.0, "l2": [1.0, {"k": 2}], "reused_copies": 2.0}}
  b = {"cell": "x", "test_accuracy": [0.5, 0.7], "timing": {"s": 2}, "gen_seconds": 4,
       "generation": {"images_per_s": 7.0, "l2": [1.0, {"k": 3}], "reused_copies": 0.0},
       "extra": None}
  assert recheck.record_differences(a, b) == [("/generation/l2[1]/k", 2, 3),
                                              ("/test_accuracy[1]", 0.6, 0.7)]
  assert recheck.record_differences(a, a) == []
  assert recheck.record_differences([1], [1, 2]) == [("/", [1], [1, 2])]


def test_publish_copies_report_records_and_figures_only(small_study, tmp_path):
  dest = str(tmp_path / "published")
  copied = report.publish(small_study, dest)
  assert {"REPORT.md", "claims.json", "summary.csv", "results.jsonl",
          "study_config.json", "sessions.jsonl"} <= set(copied)
  assert any(c.startswith("figures/") for c in copied)
  on_disk = {os.path.relpath(os.path.join(d, f), dest) for d, _, fs in os.walk(dest) for f in fs}
  assert on_disk == set(copied)  # no checkpoints, generated sets or logs
  out = subprocess.run(_cmd(small_study, f"--publish={dest}"), capture_output=True, text=True,
                       cwd=REPO, timeout=300)
  assert out.returncode == 2 and "--report_only" in out.stderr


def test_a_study_stopped_while_a_generator_trains_goes_on_from_where_it_was_kept(
    tmp_path, monkeypatch, real_data_dir):
  """Each generator training (a small arm's seeds as one program, each pool generator)
  is stopped right after it is first kept, as a kill would stop it; every rerun goes
  on from there, and the cells end as an uninterrupted study's, to the bit."""
  from dreamjax.generators import common
  from dreamjax.plumbing import checkpoint
  from dreamjax.training import loop
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "vae_small", "vae_pool")
  cfg.exchange.copies = ()
  cfg.exchange.label_factors = ()
  whole = str(tmp_path / "whole")
  runner.run_study(cfg, whole, log=lambda m: None)
  monkeypatch.setattr(common, "CHECKPOINT_SECONDS", 0.0)  # kept at every logged step
  real_hook, stopped = loop.checkpoint_hook, []

  def hook(where, *args, **kwargs):
    save = real_hook(where, *args, **kwargs)

    def save_then_stop(state, step, history):
      save(state, step, history)
      if where not in stopped and checkpoint.exists(where):
        stopped.append(where)
        raise KeyboardInterrupt(where)
    return save_then_stop

  monkeypatch.setattr(loop, "checkpoint_hook", hook)
  workdir, lines = str(tmp_path / "stopped"), []
  for _ in range(4):
    try:
      runner.run_study(cfg, workdir, log=lines.append)
      break
    except KeyboardInterrupt:
      pass
  # vae_small's two seeds as one program, then the arm's two pool models.
  assert [os.path.basename(w) for w in stopped] == [
      "generator_training_seed0_1", "vae_pool.training", "vae_pool_g1.training"], stopped
  assert not any(os.path.exists(w) for w in stopped)  # removed once the model was kept
  assert sum("resumed from step 10" in line for line in lines) == 3, lines
  done, want = _cells(workdir), _cells(whole)
  assert set(done) == set(want)
  for cell in ("N100/vae_small", "N100/vae_pool"):
    assert done[cell]["status"] == "ok"
    assert not recheck.record_differences(done[cell], want[cell]), cell
