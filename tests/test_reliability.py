"""Faults a long run meets: torn result lines, a full disk, two jobs on one
workdir, flipped checkpoint bytes. Each must end in a clear message and a
rerun that resumes, never in silently wrong numbers."""

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap

import chex
import pytest

from dreamjax.plumbing import fileio, lock
from dreamjax.errors import ConfigError, DiskFullError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _enospc(*args, **kwargs):
  raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def warnings_logged(caplog):
  """The text of every warning that dreamjax logs (absl's logger)."""
  caplog.set_level(logging.WARNING)
  return lambda: "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# --- results.jsonl: torn lines and real appends ------------------------------------

def _write(path, text):
  with open(path, "w") as f:
    f.write(text)


def test_torn_last_line_is_set_aside_with_a_copy(tmp_path, warnings_logged):
  path = str(tmp_path / "results.jsonl")
  original = '{"cell": "a", "v": 1}\n{"cell": "b", "v": 2}\n{"cell": "c", "v'
  _write(path, original)
  records = fileio.read_jsonl(path)
  assert [r["cell"] for r in records] == ["a", "b"]
  copies = [f for f in os.listdir(tmp_path) if f.startswith("results.jsonl.torn-")]
  assert len(copies) == 1 and copies[0].endswith("Z")
  with open(tmp_path / copies[0]) as f:
    assert f.read() == original  # the whole original is kept
  with open(path) as f:
    assert f.read() == '{"cell": "a", "v": 1}\n{"cell": "b", "v": 2}\n'
  message = warnings_logged()
  assert path in message and "line 3" in message and copies[0] in message
  assert fileio.read_jsonl(path) == records  # repaired once; the next read is clean
  assert len([f for f in os.listdir(tmp_path) if ".torn-" in f]) == 1


def test_garbage_middle_line_is_set_aside(tmp_path, warnings_logged):
  path = str(tmp_path / "results.jsonl")
  _write(path, '{"cell": "a"}\n\x00\x17garbage}\n[1, 2]\n{"cell": "d"}\n')
  assert [r["cell"] for r in fileio.read_jsonl(path)] == ["a", "d"]
  assert "lines 2, 3 of 4" in warnings_logged()
  with open(path) as f:
    assert f.read() == '{"cell": "a"}\n{"cell": "d"}\n'


def test_read_without_repair_leaves_the_file(tmp_path, warnings_logged):
  path = str(tmp_path / "results.jsonl")
  _write(path, '{"cell": "a"}\n{"cell"')
  assert fileio.read_jsonl(path, repair=False) == [{"cell": "a"}]
  with open(path) as f:
    assert f.read() == '{"cell": "a"}\n{"cell"'
  assert not [f for f in os.listdir(tmp_path) if ".torn-" in f]
  assert "line 2 of 2" in warnings_logged()


def test_append_after_torn_line(tmp_path):
  path = str(tmp_path / "results.jsonl")
  _write(path, '{"cell": "a"}\n{"cell": "b", "acc')
  fileio.append_jsonl(path, {"cell": "b", "acc": 0.5})
  with open(path) as f:
    assert f.read() == '{"cell": "a"}\n{"acc": 0.5, "cell": "b"}\n'
  assert len([f for f in os.listdir(tmp_path) if ".torn-" in f]) == 1


def test_append_after_last_line_without_newline(tmp_path):
  path = str(tmp_path / "results.jsonl")
  _write(path, '{"cell": "a"}')  # whole, but its newline never came
  fileio.append_jsonl(path, {"cell": "b"})
  assert [r["cell"] for r in fileio.read_jsonl(path)] == ["a", "b"]
  assert not [f for f in os.listdir(tmp_path) if ".torn-" in f]


def test_append_is_a_real_append_and_fsyncs(tmp_path, monkeypatch):
  path = str(tmp_path / "results.jsonl")
  fileio.append_jsonl(path, {"cell": "a"})
  inode = os.stat(path).st_ino
  synced = []
  real_fsync = os.fsync

  def fsync(fd):
    synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
    real_fsync(fd)

  monkeypatch.setattr(os, "fsync", fsync)
  fileio.append_jsonl(path, {"cell": "b"})
  assert os.stat(path).st_ino == inode  # appended in place, not rewritten and renamed
  assert synced and (not isinstance(synced[0], str) or synced[0] == path)
  assert [r["cell"] for r in fileio.read_jsonl(path)] == ["a", "b"]


# --- a full disk ------------------------------------------------------------------

def test_append_on_full_disk_leaves_no_torn_line(tmp_path, monkeypatch):
  path = str(tmp_path / "results.jsonl")
  fileio.append_jsonl(path, {"cell": "a"})
  real_write = os.write

  def half_then_full(fd, data):  # the disk fills up in the middle of the line
    real_write(fd, bytes(data[:5]))
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "write", half_then_full)
  with pytest.raises(DiskFullError) as e:
    fileio.append_jsonl(path, {"cell": "b", "payload": "x" * 100})
  monkeypatch.undo()
  message = str(e.value)
  assert "disk full" in message and path in message and "rerun the same command" in message
  assert "\n" not in message
  with open(path) as f:
    assert f.read() == '{"cell": "a"}\n'  # the half line was cut back off
  fileio.append_jsonl(path, {"cell": "b"})  # space again: the rerun appends
  assert [r["cell"] for r in fileio.read_jsonl(path)] == ["a", "b"]


def test_atomic_write_on_full_disk(tmp_path, monkeypatch):
  path = str(tmp_path / "report.md")
  fileio.write_text(path, "old\n")
  monkeypatch.setattr(os, "fsync", _enospc)
  with pytest.raises(DiskFullError, match="disk full.*report.md"):
    fileio.write_text(path, "new\n")
  monkeypatch.undo()
  with open(path) as f:
    assert f.read() == "old\n"
  assert os.listdir(tmp_path) == ["report.md"]  # no temporary file left


def test_atomic_write_body_on_full_disk(tmp_path):
  path = str(tmp_path / "fig.png")
  with pytest.raises(DiskFullError):
    with fileio.atomic_path(path) as tmp:
      with open(tmp, "w") as f:
        f.write("part")
      raise OSError(errno.EDQUOT, "Disk quota exceeded")
  assert os.listdir(tmp_path) == []


def test_other_os_errors_are_not_called_disk_full(tmp_path):
  with pytest.raises(PermissionError):
    with fileio.atomic_path(str(tmp_path / "x.txt")):
      raise PermissionError(errno.EACCES, "Permission denied")


# --- one job per workdir ------------------------------------------------------------

_LOCKER = textwrap.dedent("""
    import os, sys, time
    import jax  # imported before the start signal, so both processes race fairly
    from dreamjax.plumbing import lock
    from dreamjax.errors import ConfigError
    folder, go, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    while not os.path.exists(go):
      time.sleep(0.005)
    try:
      with lock.workdir_lock(folder):
        print("LOCKED", os.getpid(), flush=True)
        time.sleep(hold)
      print("RELEASED", flush=True)
    except ConfigError as e:
      print("REFUSED", e, flush=True)
""")


def _locker(tmp_path, folder, hold):
  script = tmp_path / "locker.py"
  script.write_text(_LOCKER)
  env = {**os.environ, "PYTHONPATH": REPO}
  return subprocess.Popen([sys.executable, str(script), str(folder), str(tmp_path / "go"),
                           str(hold), "--tag=mine"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_processes_race_for_one_workdir(tmp_path):
  folder = tmp_path / "workdir"
  procs = [_locker(tmp_path, folder, hold=4) for _ in range(2)]
  (tmp_path / "go").write_text("")
  outs = [p.communicate(timeout=120)[0] for p in procs]
  winners = [o for o in outs if o.startswith("LOCKED")]
  losers = [o for o in outs if o.startswith("REFUSED")]
  assert len(winners) == 1 and len(losers) == 1, outs
  pid = winners[0].split()[1]
  message = losers[0]
  assert f"pid {pid} on host" in message and "since 20" in message
  assert "locker.py" in message and "--tag=mine" in message  # the holder's command
  assert "another --workdir" in message
  assert "RELEASED" in winners[0]
  assert not os.path.exists(folder / lock.LOCK_FILE)  # a clean release leaves nothing


def test_lock_left_by_a_killed_job_is_taken_over(tmp_path, warnings_logged):
  folder = tmp_path / "workdir"
  (tmp_path / "go").write_text("")
  killed = _locker(tmp_path, folder, hold=120)
  line = killed.stdout.readline()
  assert line.startswith("LOCKED"), killed.stderr.read()
  killed.kill()
  killed.communicate(timeout=60)
  with open(folder / lock.LOCK_FILE) as f:
    assert json.load(f)["pid"] == killed.pid  # the dead job's record is still there
  with lock.workdir_lock(str(folder)):
    with open(folder / lock.LOCK_FILE) as f:
      mine = json.load(f)
    assert mine["pid"] == os.getpid() and mine["argv"] == sys.argv
    assert mine["started"].endswith("+00:00")
    with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
      with lock.workdir_lock(str(folder)):  # a second lock, even from this process
        pass
  note = warnings_logged()
  assert f"pid {killed.pid}" in note and "took over" in note
  assert not os.path.exists(folder / lock.LOCK_FILE)


def test_stale_lock_file_without_holder(tmp_path, warnings_logged):
  folder = tmp_path / "workdir"
  folder.mkdir()
  stale = {"pid": 999999, "host": "elsewhere", "started": "2020-01-01T00:00:00+00:00",
           "argv": ["experiments/study.py", "--workdir=x"]}
  (folder / lock.LOCK_FILE).write_text(json.dumps(stale))
  with lock.workdir_lock(str(folder), what="study"):
    pass
  note = warnings_logged()
  assert "pid 999999 on host elsewhere" in note and "2020-01-01" in note
  assert "experiments/study.py --workdir=x" in note


# --- checkpoints: digests, damage, full disk ---------------------------------------

def _tree(scale=1.0, n=1000):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return {"params": {"w": (np.arange(n, dtype=np.float32) * scale).reshape(-1, 10),
                     "b": np.ones(10, np.float32) * scale},
          "count": np.asarray(7, np.int32)}


def _data_files(ckpt):
  """Orbax's array data files, largest first."""
  folder = os.path.join(ckpt, "tree", "ocdbt.process_0", "d")
  files = [os.path.join(folder, f) for f in os.listdir(folder)]
  assert files, f"no array data under {folder}"
  return sorted(files, key=os.path.getsize, reverse=True)


def test_flipped_byte_in_checkpoint_data_is_refused(tmp_path):
  from dreamjax.plumbing import checkpoint  # pylint: disable=g-import-not-at-top
  from dreamjax.errors import CheckpointError  # pylint: disable=g-import-not-at-top
  ckpt = str(tmp_path / "ckpt")
  tree = _tree()
  checkpoint.save(ckpt, tree, {"step": 3})
  restored, meta = checkpoint.restore(ckpt, tree)
  assert meta["step"] == 3 and len(meta[checkpoint.TREE_DIGEST]) == 64
  data = _data_files(ckpt)[0]
  with open(data, "rb") as f:
    original = f.read()
  messages = []
  # Flip one bit at a few places inside the (compressed) array bytes: without
  # the digest most of these restore as silently different numbers. A restore
  # must either refuse or give back exactly what was saved (a few bytes of
  # the file, such as padding, do not feed the numbers).
  for pos in range(len(original) // 4, len(original), max(1, len(original) // 8)):
    damaged = bytearray(original)
    damaged[pos] ^= 0x10
    with open(data, "wb") as f:
      f.write(bytes(damaged))
    try:
      back, _ = checkpoint.restore(ckpt, tree)
    except CheckpointError as e:
      messages.append(str(e))
    else:
      chex.assert_trees_all_equal(back, tree)
  assert any("is damaged" in m and "digest" in m for m in messages), messages
  with open(data, "wb") as f:
    f.write(original)
  checkpoint.restore(ckpt, tree)  # the undamaged bytes restore again


def test_edited_checkpoint_metadata_is_refused(tmp_path):
  from dreamjax.plumbing import checkpoint  # pylint: disable=g-import-not-at-top
  from dreamjax.errors import CheckpointError  # pylint: disable=g-import-not-at-top
  ckpt = str(tmp_path / "ckpt")
  checkpoint.save(ckpt, _tree(), {"step": 100})
  meta_file = os.path.join(ckpt, "dreamjax.json")
  with open(meta_file) as f:
    text = f.read()
  with open(meta_file, "w") as f:
    f.write(text.replace('"step": 100', '"step": 108'))  # one flipped digit
  with pytest.raises(CheckpointError, match="metadata do not match"):
    checkpoint.read_meta(ckpt)


def test_checkpoint_without_digest_still_loads(tmp_path):
  from dreamjax.plumbing import checkpoint  # pylint: disable=g-import-not-at-top
  ckpt = str(tmp_path / "ckpt")
  checkpoint.save(ckpt, _tree(), {"step": 1})
  meta_file = os.path.join(ckpt, "dreamjax.json")
  with open(meta_file) as f:
    meta = json.load(f)
  del meta[checkpoint.TREE_DIGEST], meta[checkpoint.META_DIGEST]
  with open(meta_file, "w") as f:
    json.dump(meta, f)  # as dreamjax wrote them before digests
  tree, meta = checkpoint.restore(ckpt, _tree())
  assert meta == {"step": 1}


def test_snapshot_with_flipped_byte_is_refused(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top
  from dreamjax.plumbing import checkpoint  # pylint: disable=g-import-not-at-top
  from dreamjax.errors import CheckpointError  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "gen.msgpack")
  tree = _tree()
  checkpoint.save_tree(path, tree, {"seconds": 2.0})
  loaded, meta = checkpoint.load_tree(path)
  np.testing.assert_array_equal(loaded["params"]["w"], tree["params"]["w"])
  assert meta == {"seconds": 2.0}
  with open(path, "rb") as f:
    raw = bytearray(f.read())
  at = bytes(raw).index(tree["params"]["w"].tobytes()[400:440]) + 5
  raw[at] ^= 0x01  # one bit of one weight: msgpack itself reads it without complaint
  with open(path, "wb") as f:
    f.write(bytes(raw))
  with pytest.raises(CheckpointError, match="is damaged"):
    checkpoint.load_tree(path)
  # A snapshot from before digests (no "sha256" entry) still loads.
  old = {"tree": tree, "meta": json.dumps({"seconds": 1.0})}
  with open(path, "wb") as f:
    f.write(serialization.msgpack_serialize(old))
  assert checkpoint.load_tree(path)[1] == {"seconds": 1.0}


_GARBAGE_RESTORE = textwrap.dedent("""
    import os, sys
    import numpy as np
    from dreamjax.plumbing import checkpoint
    from dreamjax.errors import CheckpointError
    ckpt = sys.argv[1]
    tree = {f"layer{i}": np.arange(1000 + i, dtype=np.float32) for i in range(20)}
    checkpoint.save(ckpt, tree, {"step": 1})
    for root, _, files in os.walk(ckpt):
      for name in files:
        if name not in ("dreamjax.json", "_METADATA", "_CHECKPOINT_METADATA"):
          with open(os.path.join(root, name), "wb") as f:
            f.write(b"\\x00garbage")
    refused = 0
    for _ in range(15):  # tensorstore's late callbacks come at random: give them chances
      try:
        checkpoint.restore(ckpt, tree)
      except CheckpointError:
        refused += 1
    class Broken:
      def __del__(self):
        raise ValueError("a real unraisable error")
    Broken()  # still printed: the filter only drops callbacks to a closed loop
    import time
    time.sleep(0.5)
    print("refused", refused)
""")


def test_garbage_checkpoint_prints_no_event_loop_tracebacks(tmp_path):
  script = tmp_path / "garbage.py"
  script.write_text(_GARBAGE_RESTORE)
  run = subprocess.run([sys.executable, str(script), str(tmp_path / "ckpt")], text=True,
                       capture_output=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})
  assert run.returncode == 0, run.stderr[-3000:]
  assert "refused 15" in run.stdout
  assert "Event loop is closed" not in run.stderr, run.stderr[-3000:]
  assert "a real unraisable error" in run.stderr


def _tiny_fit_setup(steps=20):
  """A seconds-long classifier fit that saves a checkpoint every 10 steps."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from conftest import synthetic_images  # pylint: disable=g-import-not-at-top
  from dreamjax.training import models  # pylint: disable=g-import-not-at-top
  from dreamjax.configs import classifier  # pylint: disable=g-import-not-at-top
  cfg = classifier.get_config("tiny")
  cfg.train.steps, cfg.train.eval_every, cfg.train.checkpoint_every = steps, 0, 10
  x, y = synthetic_images(200)
  return cfg.train, models.make_model(cfg.model, 10), x[..., None] / np.float32(255), y.astype(
      np.int32)


def test_save_interrupted_after_the_swap_leaves_no_old_checkpoint(tmp_path, monkeypatch):
  """Ctrl-C while the last save removes ``checkpoint.old``: the resume removes the rest."""
  import shutil  # pylint: disable=g-import-not-at-top
  from dreamjax.training import train  # pylint: disable=g-import-not-at-top
  tcfg, model, x, y = _tiny_fit_setup()
  uninterrupted = train.fit(model, tcfg, x, y, seeds=[0])
  ckpt = str(tmp_path / "checkpoint")
  real_rmtree = shutil.rmtree

  def interrupted_rmtree(path, *args, **kwargs):
    # The step-20 save has renamed the step-10 checkpoint to .old and its own into
    # place; Ctrl-C arrives while .old is being removed.
    if path == ckpt + ".old" and os.path.exists(path) and os.path.exists(ckpt):
      real_rmtree(os.path.join(path, "tree"))
      raise KeyboardInterrupt
    real_rmtree(path, *args, **kwargs)

  monkeypatch.setattr(shutil, "rmtree", interrupted_rmtree)
  with pytest.raises(KeyboardInterrupt):
    train.fit(model, tcfg, x, y, seeds=[0], checkpoint_dir=ckpt)
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path)) == ["checkpoint", "checkpoint.old"]
  resumed = train.fit(model, tcfg, x, y, seeds=[0], checkpoint_dir=ckpt)
  assert os.listdir(tmp_path) == ["checkpoint"]
  assert resumed.steps_run == 0  # resumed from the step-20 checkpoint, the last good one
  chex.assert_trees_all_close(resumed.state.params, uninterrupted.state.params, rtol=1e-6,
                              atol=1e-7)


def test_damaged_checkpoint_warning_says_what_happens_once(tmp_path, caplog):
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  from dreamjax.training import train  # pylint: disable=g-import-not-at-top
  tcfg, model, x, y = _tiny_fit_setup()
  ckpt = str(tmp_path / "checkpoint")
  first = train.fit(model, tcfg, x, y, seeds=[0], checkpoint_dir=ckpt)
  meta_file = os.path.join(ckpt, "dreamjax.json")
  with open(meta_file) as f:
    text = f.read()
  with open(meta_file, "w") as f:
    f.write(text.replace('"step": 20', '"step": 28'))  # bytes changed on disk
  caplog.set_level(logging.INFO)
  # progress=absl's info log, as the commands and the study pass it.
  again = train.fit(model, tcfg, x, y, seeds=[0], checkpoint_dir=ckpt, desc="classifier",
                    progress=absl_logging.info)
  about = [r for r in caplog.records if "dreamjax.json" in r.getMessage()
           or ckpt in r.getMessage()]
  assert len(about) == 1, [r.getMessage() for r in about]
  record = about[0]
  assert record.levelno == logging.WARNING
  assert record.getMessage() == (
      f"classifier: checkpoint {ckpt} is damaged: its metadata do not match the sha256"
      " digest recorded when it was saved (bytes changed on disk since), so its numbers"
      " cannot be trusted. It was removed and this run trains again from step 0 by itself;"
      " nothing to do.")
  assert again.steps_run == 20
  chex.assert_trees_all_close(again.state.params, first.state.params, rtol=1e-6, atol=1e-7)


def test_checkpoint_save_on_full_disk_keeps_the_old_one(tmp_path, monkeypatch):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from dreamjax.plumbing import checkpoint  # pylint: disable=g-import-not-at-top
  ckpt = str(tmp_path / "ckpt")
  checkpoint.save(ckpt, _tree(1.0), {"step": 1})
  real_save = ocp.PyTreeCheckpointer.save

  def full_disk_save(self, directory, *args, **kwargs):
    os.makedirs(os.path.join(directory, "half-written"))  # Orbax got some way first
    raise ValueError('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database: Failed to'
                     " write 880055 bytes to file 14: No space left on device"
                     " [os_error_code='28']")

  monkeypatch.setattr(ocp.PyTreeCheckpointer, "save", full_disk_save)
  with pytest.raises(DiskFullError, match="disk full.*ckpt.*rerun the same command"):
    checkpoint.save(ckpt, _tree(2.0), {"step": 2})
  monkeypatch.setattr(ocp.PyTreeCheckpointer, "save", real_save)
  monkeypatch.setattr(os, "fsync", _enospc)  # now the metadata write finds the disk full
  with pytest.raises(DiskFullError):
    checkpoint.save(ckpt, _tree(2.0), {"step": 2})
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no ckpt.partial, no ckpt.old
  tree, meta = checkpoint.restore(ckpt, _tree())
  assert meta["step"] == 1
  np.testing.assert_array_equal(tree["params"]["b"], np.ones(10, np.float32))


@pytest.fixture
def tiny_tmpfs(tmp_path):
  """A 2 MB tmpfs, where mounting is permitted (root, outside most containers)."""
  mount = tmp_path / "tmpfs"
  mount.mkdir()
  try:
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                         capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.TimeoutExpired) as e:
    pytest.skip(f"cannot mount a tmpfs here ({e})")
  if run.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {run.stderr.strip() or run.returncode}")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


_FULL_DISK_SAVE = textwrap.dedent("""
    import os, sys
    import numpy as np
    from dreamjax.plumbing import checkpoint
    from dreamjax.errors import DiskFullError
    ckpt = os.path.join(sys.argv[1], "ckpt")
    small = {f"w{i}": np.full(1000, i, np.float32) for i in range(8)}
    checkpoint.save(ckpt, small, {"step": 1})
    big = {f"w{i}": np.random.default_rng(i).standard_normal(100_000).astype(np.float32)
           for i in range(8)}  # 3.2 MB of incompressible numbers: more than the disk holds
    try:
      checkpoint.save(ckpt, big, {"step": 2})
    except DiskFullError as e:
      print("ERROR", e)
    print("LEFT", sorted(os.listdir(sys.argv[1])))
    tree, meta = checkpoint.restore(ckpt, small)
    print("RESTORED", meta["step"], float(tree["w3"][0]))
    checkpoint.save(ckpt, {k: v + 1 for k, v in small.items()}, {"step": 3})  # fits: resumes
    print("SAVED", checkpoint.restore(ckpt, small)[1]["step"])
""")


def test_checkpoint_save_on_a_real_full_disk(tiny_tmpfs, tmp_path):
  script = tmp_path / "full.py"
  script.write_text(_FULL_DISK_SAVE)
  run = subprocess.run([sys.executable, str(script), str(tiny_tmpfs)], text=True,
                       capture_output=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})
  assert run.returncode == 0, run.stderr[-3000:]
  out = run.stdout
  assert f"ERROR disk full: no space left on the device while writing {tiny_tmpfs}/ckpt." in out
  assert "LEFT ['ckpt']" in out  # no ckpt.partial
  assert "RESTORED 1 3.0" in out and "SAVED 3" in out
  # One error, raised once: no Orbax thread tracebacks, no asyncio noise.
  assert "Traceback" not in run.stderr and "Event loop is closed" not in run.stderr, run.stderr


_CLI = textwrap.dedent("""
    import errno, sys
    from dreamjax import cli
    from dreamjax.errors import DiskFullError

    def main(argv):
      if argv[1:] == ["stray"]:  # a write no dreamjax code wrapped
        raise OSError(errno.ENOSPC, "No space left on device", "/work/dir/figure.png")
      if argv[1:] == ["orbax"]:
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "a/0": Failed writing:'
                         ' "/work/dir/ckpt.partial/d/1f": No space left on device'
                         " [os_error_code='28']")
      if argv[1:] == ["other"]:
        raise OSError(errno.EACCES, "Permission denied", "/work/dir/x")
      raise DiskFullError("/work/dir/results.jsonl")

    cli.run(main)
""")


@pytest.mark.parametrize("case, path", [("stray", "/work/dir/figure.png"),
                                        ("orbax", "/work/dir/ckpt.partial/d/1f"),
                                        ("wrapped", "/work/dir/results.jsonl")])
def test_cli_ends_a_full_disk_in_one_line(tmp_path, case, path):
  script = tmp_path / "job.py"
  script.write_text(_CLI)
  run = subprocess.run([sys.executable, str(script), case], text=True, capture_output=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": REPO})
  assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
  lines = [line for line in run.stderr.splitlines() if "dreamjax error" in line]
  assert lines == [f"dreamjax error: disk full: no space left on the device while writing"
                   f" {path}. Finished work (checkpoints and results written before) is safe"
                   " and nothing half-written was kept: free space on that disk (`df -h"
                   f" {os.path.dirname(path)}` shows it) and rerun the same command to"
                   " resume."], run.stderr


def test_cli_leaves_other_os_errors_alone(tmp_path):
  script = tmp_path / "job.py"
  script.write_text(_CLI)
  run = subprocess.run([sys.executable, str(script), "other"], text=True, capture_output=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": REPO})
  assert run.returncode == 1 and "PermissionError" in run.stderr


# --- provenance: which versions a workdir was made with ------------------------------

def test_versions_names_the_stack():
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  import dreamjax  # pylint: disable=g-import-not-at-top
  from dreamjax import _xla  # pylint: disable=g-import-not-at-top
  from dreamjax.plumbing import provenance  # pylint: disable=g-import-not-at-top
  v = provenance.versions()
  assert set(v) == {"python", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
                    "chex", "dm-pix", "tensorflow-datasets", "dreamjax", "xla_flags"}
  assert v["jax"] == importlib.metadata.version("jax") and v["dreamjax"] == dreamjax.__version__
  assert v["python"] == ".".join(map(str, sys.version_info[:3]))
  if os.environ.get("DREAMJAX_NO_XLA_FLAGS") or _xla._jaxlib_version() < _xla.MIN_JAXLIB:  # pylint: disable=protected-access
    assert v["xla_flags"] == ""
  else:
    for name in _xla.CPU_FLAGS:
      assert f"--{name}=" in v["xla_flags"]
  assert "device_count" not in v["xla_flags"]  # the user's own flags are not the stack
  json.dumps(v)  # fits a results file


def test_versions_xla_flags_follow_the_environment(monkeypatch):
  from dreamjax import _xla  # pylint: disable=g-import-not-at-top
  from dreamjax.plumbing import provenance  # pylint: disable=g-import-not-at-top
  name = next(iter(_xla.CPU_FLAGS))
  monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=4 --{name}=other")
  assert provenance.versions()["xla_flags"] == f"--{name}=other"
  monkeypatch.setenv("XLA_FLAGS", "")
  assert provenance.versions()["xla_flags"] == ""


def test_check_same_versions():
  from dreamjax.plumbing import provenance  # pylint: disable=g-import-not-at-top
  now = provenance.versions()
  provenance.check_same_versions(dict(now), now)
  provenance.check_same_versions({"jax": now["jax"]}, now)  # an older, shorter record
  then = {**now, "jaxlib": "0.4.30", "numpy": "1.26.4", "xla_flags": ""}
  with pytest.raises(ConfigError) as e:
    provenance.check_same_versions(then, now)
  message = str(e.value)
  assert f"jaxlib: 0.4.30 recorded, {now['jaxlib']} now" in message
  assert f"numpy: 1.26.4 recorded, {now['numpy']} now" in message
  assert "flax" not in message and "optax" not in message
  assert ("finish this workdir with the recorded versions (./launch.sh installs"
          " constraints.txt) or start a fresh --workdir") in message


def test_constraints_pin_every_dependency():
  """constraints.txt pins dreamjax[test]'s direct dependencies, the tested versions."""
  import re  # pylint: disable=g-import-not-at-top
  tomllib = pytest.importorskip("tomllib")  # Python 3.11+
  norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  with open(os.path.join(REPO, "constraints.txt")) as f:
    pins = dict(line.strip().split("==") for line in f if "==" in line)
  pinned = {norm(n) for n in pins}
  assert "dreamjax" not in pinned
  for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
    name = norm(re.split(r"[<>=!~\[; ]", requirement)[0])
    assert name in pinned, f"{name} is in pyproject.toml but not pinned in constraints.txt"
  assert norm("tensorboardX") in pinned


def test_lock_on_an_unusable_workdir_says_so(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(ConfigError, match="not writable.*Pass --workdir"):
    with lock.workdir_lock(str(tmp_path / "file" / "workdir")):
      pass


def test_workdir_that_is_a_file_is_called_a_file(tmp_path):
  path = str(tmp_path / "results")
  (tmp_path / "results").write_text("")
  checks = {"check_writable": fileio.check_writable,
            "dry run": lambda f: fileio.check_writable(f, create=False),
            "lock": lambda f: lock.workdir_lock(f).__enter__()}
  for what, check in checks.items():
    with pytest.raises(ConfigError) as e:
      check(path)
    message = str(e.value)
    assert message == (f"workdir {path!r} is a file, not a folder. Pass --workdir naming a"
                       " folder (one that does not exist yet is created), or move that file"
                       " out of the way."), what
  with pytest.raises(ConfigError, match=f"{path!r} is a file, not a folder, so no folder can"):
    fileio.check_writable(os.path.join(path, "sub"), create=False)
  assert os.listdir(tmp_path) == ["results"]


def test_dry_run_check_creates_nothing(tmp_path):
  workdir = tmp_path / "runs" / "study"
  fileio.check_writable(str(workdir), create=False)
  assert os.listdir(tmp_path) == []
  (tmp_path / "runs").mkdir()
  fileio.check_writable(str(tmp_path / "runs"), create=False)  # an existing folder: probed
  assert os.listdir(tmp_path / "runs") == []
  if os.geteuid() != 0:  # root may write anywhere
    (tmp_path / "runs").chmod(0o500)
    try:
      with pytest.raises(ConfigError, match="not writable.*no folder can be made in"):
        fileio.check_writable(str(workdir), create=False)
    finally:
      (tmp_path / "runs").chmod(0o700)


def test_refused_run_removes_only_the_empty_folders_it_made(tmp_path):
  class Refused(Exception):
    pass

  made = tmp_path / "new" / "deeper" / "workdir"
  with pytest.raises(Refused):
    with fileio.writable_workdir(str(made)):
      assert made.is_dir()
      raise Refused
  assert os.listdir(tmp_path) == []  # the workdir and both parents it made
  existing = tmp_path / "existing"
  existing.mkdir()
  with pytest.raises(Refused):
    with fileio.writable_workdir(str(existing)):
      raise Refused
  assert existing.is_dir()  # it was there before: kept, empty or not
  with pytest.raises(Refused):
    with fileio.writable_workdir(str(made)):
      (made / "results.jsonl").write_text("{}\n")
      raise Refused
  assert (made / "results.jsonl").exists()  # the run wrote something: nothing removed
  with fileio.writable_workdir(str(tmp_path / "ok")):
    pass
  assert (tmp_path / "ok").is_dir()  # a run that was not refused keeps its workdir


def test_command_refused_for_its_budget_or_data_leaves_no_workdir(tmp_path, synthetic_dir):
  from dreamjax.configs import classifier as configs  # pylint: disable=g-import-not-at-top
  from dreamjax.errors import DataError  # pylint: disable=g-import-not-at-top
  from dreamjax.runs import classifier  # pylint: disable=g-import-not-at-top
  cfg = configs.get_config("tiny")
  cfg.data_dir = synthetic_dir
  cfg.num_labeled = 5000  # more labels than the 300 training images hold
  workdir = tmp_path / "runs" / "clf"
  with pytest.raises(ConfigError, match="num_labeled=5000"):
    classifier.train_and_evaluate(cfg, str(workdir))
  assert not (tmp_path / "runs").exists()
  cfg.num_labeled = 100
  open(os.path.join(synthetic_dir, "train-labels-idx1-ubyte.gz"), "wb").close()
  with pytest.raises(DataError, match="is empty"):
    classifier.train_and_evaluate(cfg, str(workdir))
  assert not (tmp_path / "runs").exists()


def test_disk_full_error_survives_pickling():
  import pickle  # pylint: disable=g-import-not-at-top
  error = pickle.loads(pickle.dumps(DiskFullError("/w/results.jsonl")))
  assert error.path == "/w/results.jsonl" and error.errno == errno.ENOSPC
  assert str(error) == str(DiskFullError("/w/results.jsonl"))
