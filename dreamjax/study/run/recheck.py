"""Recomputes one finished cell of a study from nothing and compares it with its record.

A published number is only as good as its reproduction. ``dreamjax study
--recheck N1000/dream_subtle`` reruns that cell in ``WORKDIR/recheck/<cell>``
with nothing reused from the study (its own oracle, baseline and generated
sets; a pool generator from the user cache is the one exception, and it is
keyed by its data and config) and compares every recorded number with the
study's ``results.jsonl``. Only wall-clock fields (``timing``, seconds, rates)
may differ; on the same machine and software everything else should be
bit-identical. The comparison is written to ``recheck.json`` in that folder.
"""

import os
import shutil
import time
from typing import Any, Callable

from dreamjax import _xla
from dreamjax.plumbing import fileio, lock, provenance, sharding
from dreamjax.configs import arms as arms_lib
from dreamjax.errors import ConfigError
from dreamjax.study.run import context as context_lib
from dreamjax.study import plan as plan_lib
from dreamjax.study import records
from dreamjax.study.run import runner
from dreamjax.study.run.cells import jsonable

FOLDER = "recheck"


def record_differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
  """``(path, a value, b value)`` for every leaf where two records differ.

  Fields that measure wall-clock time (``timing``, and any key naming seconds
  or a rate per second) are skipped: they differ between any two runs. So is
  ``reused_copies``: how many copies a set took from a smaller M's cell says
  how it was made, not what it is (a recheck makes every copy anew).
  """
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      if k in ("timing", "reused_copies") or "seconds" in k or "per_s" in k:
        continue
      out += record_differences(a.get(k), b.get(k), f"{path}/{k}")
    return out
  if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
    out = []
    for i, (x, y) in enumerate(zip(a, b)):
      out += record_differences(x, y, f"{path}[{i}]")
    return out
  return [] if a == b else [(path or "/", a, b)]


def recheck_cell(config, workdir: str, key: str, log: Callable[[str], None] = print
                 ) -> dict[str, Any]:
  """Recomputes cell ``key`` of the study in ``workdir``; returns what ``recheck.json`` holds."""
  records.check_workdir(config, workdir)  # the config must be the one the study ran with
  compute = records.read_compute(workdir)
  if compute and compute.get("engine"):  # computed by workers: their XLA thread count
    _xla.fix_cpu_threads(int(compute["xla_cpu_threads"]))
  done = {r["cell"]: r for r in fileio.read_jsonl(os.path.join(workdir, runner.RESULTS),
                                                 repair=False)}
  raw = context_lib.load_data(config)
  arms = arms_lib.resolve(config)
  jobs = {c.key: c for c in plan_lib.jobs(config, arms, raw.num_classes)}
  if key not in jobs:
    raise ConfigError(f"--recheck {key}: the study has no such cell; its cells are"
                      f" {', '.join(jobs)}.")
  if done.get(key, {}).get("status") != "ok":
    raise ConfigError(f"--recheck {key}: the cell has no finished record in"
                      f" {workdir}/{runner.RESULTS}; run the study first.")
  where = os.path.join(workdir, FOLDER, key.replace("/", "__"))
  os.makedirs(where, exist_ok=True)
  with lock.workdir_lock(where, what="recheck"):  # one recheck of a cell at a time
    return _recheck(config, raw, arms, done, key, jobs[key], where, log)


def _recheck(config, raw, arms, done, key, cell, where, log) -> dict[str, Any]:
  for name in os.listdir(where):  # from nothing: an earlier recheck's files go
    if name != lock.LOCK_FILE:
      path = os.path.join(where, name)
      if os.path.isdir(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
  t0 = time.perf_counter()
  mesh = sharding.make_mesh()
  oracle = context_lib.oracle(config, raw, where, mesh, log)
  record = jsonable(runner.run_job(cell, runner.context_getter(
      config, raw, where, mesh, oracle, {}, cell, log, arms), raw.train_labels))
  fileio.append_jsonl(os.path.join(where, runner.RESULTS), record)
  diffs = [(f"{key}{p}", x, y) for p, x, y in record_differences(done[key], record)]
  if "oracle" in done:
    diffs += [(f"oracle{p}", x, y) for p, x, y in record_differences(done["oracle"], oracle.record)]
  out = {"cell": key, "compared": [key] + (["oracle"] if "oracle" in done else []),
         "identical": not diffs, "differences": [list(d) for d in diffs],
         "seconds": round(time.perf_counter() - t0, 1), "machine": provenance.machine(),
         "versions": provenance.versions()}
  fileio.write_json(os.path.join(where, "recheck.json"), jsonable(out))
  return out
