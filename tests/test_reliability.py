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

import pytest

from dreamjax import fileio
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
    from dreamjax import fileio
    from dreamjax.errors import ConfigError
    folder, go, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    while not os.path.exists(go):
      time.sleep(0.005)
    try:
      with fileio.workdir_lock(folder):
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
  assert not os.path.exists(folder / fileio.LOCK_FILE)  # a clean release leaves nothing


def test_lock_left_by_a_killed_job_is_taken_over(tmp_path, warnings_logged):
  folder = tmp_path / "workdir"
  (tmp_path / "go").write_text("")
  killed = _locker(tmp_path, folder, hold=120)
  line = killed.stdout.readline()
  assert line.startswith("LOCKED"), killed.stderr.read()
  killed.kill()
  killed.communicate(timeout=60)
  with open(folder / fileio.LOCK_FILE) as f:
    assert json.load(f)["pid"] == killed.pid  # the dead job's record is still there
  with fileio.workdir_lock(str(folder)):
    with open(folder / fileio.LOCK_FILE) as f:
      mine = json.load(f)
    assert mine["pid"] == os.getpid() and mine["argv"] == sys.argv
    assert mine["started"].endswith("+00:00")
    with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
      with fileio.workdir_lock(str(folder)):  # a second lock, even from this process
        pass
  note = warnings_logged()
  assert f"pid {killed.pid}" in note and "took over" in note
  assert not os.path.exists(folder / fileio.LOCK_FILE)


def test_stale_lock_file_without_holder(tmp_path, warnings_logged):
  folder = tmp_path / "workdir"
  folder.mkdir()
  stale = {"pid": 999999, "host": "elsewhere", "started": "2020-01-01T00:00:00+00:00",
           "argv": ["experiments/study.py", "--workdir=x"]}
  (folder / fileio.LOCK_FILE).write_text(json.dumps(stale))
  with fileio.workdir_lock(str(folder), what="study"):
    pass
  note = warnings_logged()
  assert "pid 999999 on host elsewhere" in note and "2020-01-01" in note
  assert "experiments/study.py --workdir=x" in note
