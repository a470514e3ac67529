"""The study's jobs as tasks of a distributed engine: their work in a worker.

The tasks, their inputs and the order they are handed to the engine are
:mod:`dreamjax.study.run.taskgraph`'s (its names are re-exported here).

:func:`run` is a task's work in a worker process. Workers share the workdir
(a local folder, or storage every node mounts at the same path): each task
writes its own files there (checkpoints, generated sets, a shared model's
``artefacts/`` file) and reads those of the tasks it depends on, and returns
its results.jsonl record, which the driver alone writes. A worker builds what
a budget's cells share (data, splits, the oracle, the baselines) once, from
the workdir, and keeps it for its next tasks.
"""

import contextlib
import dataclasses
import fcntl
import os
import socket
import sys
import time
import traceback
from typing import Any, Iterator

from dreamjax import _xla, cli
from dreamjax.plumbing import provenance, sharding
from dreamjax.configs import arms as arms_lib
from dreamjax.errors import ConfigError, DreamjaxError
from dreamjax.study.run import artefacts
from dreamjax.study.run import context as context_lib
from dreamjax.study.run.cells import Cell, jsonable
# The task graph, and the names the engine and the runner take from here.
from dreamjax.study.run.taskgraph import (  # noqa: F401 - re-exported
    ARTEFACT, ORACLE, SharedModel, Task, by_priority, graph, needs_baseline, schedule,
    shared_models, task_costs, wall_seconds)

# XLA:CPU intra-op threads of every worker process: one, so that a worker's numbers are the
# same on any machine and with any number of workers, and W workers fill W cores.
WORKER_THREADS = 1


@dataclasses.dataclass(frozen=True)
class Spec:
  """What every task of one study run shares: sent to each worker once."""
  config: Any             # the study's ConfigDict
  workdir: str            # absolute: the same path on every node
  versions: dict[str, str]  # the driver's provenance.versions(); a worker with others refuses
  data_digest: str        # of the data the driver read; a worker reading other data refuses
  threads: int            # XLA:CPU intra-op threads of every worker (_xla.fix_cpu_threads)


def inputs_of(task: Task, futures: dict[str, Any], done: dict[str, Any]) -> list[Any]:
  """The task's inputs in order: an engine's future for each input task, the record of
  each input ``done`` before this run."""
  return [futures[k] if k in futures else done[k] for k in task.inputs]


# --- the worker side ------------------------------------------------------------------

_STATE: dict[str, Any] = {}  # this worker's data, mesh, oracle and budget contexts


def worker_info(threads: int | None = None) -> dict[str, Any]:
  """Where a task ran: host, process, the engine's node (set by the engine), XLA threads."""
  out = {"host": socket.gethostname(), "pid": os.getpid(),
         "node": os.environ.get("DREAMJAX_NODE", ""),
         "xla_cpu_threads": _xla.cpu_threads() if threads is None else threads}
  for key, var in (("gpus", "CUDA_VISIBLE_DEVICES"),
                   ("gpu_memory_fraction", "XLA_PYTHON_CLIENT_MEM_FRACTION")):
    if os.environ.get(var):  # set by the engine for a worker given a share of a GPU
      out[key] = os.environ[var]
  return out


def run(spec: Spec, task: Task, *inputs) -> dict[str, Any]:
  """A task's work in a worker: ``{"key", "record" (None for a shared model), "worker"}``.

  A job whose ``needs`` failed is recorded as failed without running (its
  baseline or shared model would fail again, the same way). Errors of the
  worker itself (other software or data than the driver's) raise.
  """
  if not _STATE:  # this process's first task
    cli.use_compilation_cache()  # programs compiled by any worker (or run) on this machine
  _xla.fix_cpu_threads(spec.threads)  # before this process's first JAX computation
  with working_in(spec.workdir):
    return _run(spec, task, inputs)


WORKERS_LOCK = ".dreamjax-workers.lock"


@contextlib.contextmanager
def working_in(workdir: str) -> Iterator[None]:
  """Holds a shared lock on the workdir's workers' lock file while a task works there.

  A killed driver's workers may go on for a few seconds; :func:`wait_for_workers`
  lets a new driver wait for them before its own start. Where the filesystem
  has no ``flock`` the task runs without it.
  """
  fd = os.open(os.path.join(workdir, WORKERS_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
      pass
    yield
  finally:
    os.close(fd)


def wait_for_workers(workdir: str, log, seconds: float = 120.0) -> None:
  """Waits until no task of an earlier run on ``workdir`` still works there (a driver
  killed a moment ago leaves its local workers a few seconds)."""
  path = os.path.join(workdir, WORKERS_LOCK)
  if not os.path.exists(path):
    return
  fd = os.open(path, os.O_RDWR)
  try:
    deadline, said = time.monotonic() + seconds, False
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        if time.monotonic() > deadline:
          raise ConfigError(f"workers of an earlier run still work in {workdir} after"
                            f" {seconds:.0f} s (they hold {path}). Stop them (ray stop on"
                            " their nodes), then rerun.") from None
        if not said:
          log("waiting for the workers of the previous run on this workdir to stop")
          said = True
        time.sleep(0.5)
      except OSError:  # no flock on this filesystem
        break
  finally:
    os.close(fd)


def _run(spec: Spec, task: Task, inputs) -> dict[str, Any]:
  state = _state(spec)
  where = worker_info()
  state["log"](f"{task.key}: started (pid {where['pid']} on {where['host']})")
  t0 = time.perf_counter()
  by_key = {k: _record_of(x) for k, x in zip(task.inputs, inputs)}
  failed = [k for k in task.needs if (by_key[k] or {}).get("status") == "failed"]
  if task.key == ORACLE:
    record = state["oracle"](train=True).record
  elif task.model:
    record = _shared_model(state, task)
  elif failed:
    record = _failed(task.cell, f"needs {failed[0]}, which failed:"
                     f" {by_key[failed[0]].get('error')}")
  else:
    # Here, not at the top: the runner imports this module to plan the tasks.
    from dreamjax.study.run import runner  # pylint: disable=g-import-not-at-top
    getter = runner.context_getter(spec.config, state["raw"], spec.workdir, state["mesh"],
                                   state["oracle"](by_key.get(ORACLE)), state["contexts"],
                                   task.cell, state["log"])
    record = runner.run_job(task.cell, getter, state["raw"].train_labels)
  return {"key": task.key, "record": jsonable(record), "worker": worker_info(),
          "seconds": time.perf_counter() - t0}


def _record_of(result):
  """A record from an input: a task's result (:func:`run`) or a record done before."""
  return result.get("record") if isinstance(result, dict) and "worker" in result else result


def _state(spec: Spec) -> dict[str, Any]:
  """This worker's state for ``spec``'s study, made on its first task and kept."""
  ident = (spec.workdir, spec.config.to_json())
  if _STATE.get("ident") == ident:
    return _STATE
  mine = provenance.versions()
  differ = [f"{k}: {spec.versions[k]!r} on the driver, {mine.get(k)!r} here"
            for k in sorted(spec.versions) if str(spec.versions[k]) != str(mine.get(k))]
  where = worker_info(spec.threads)
  if differ:
    raise ConfigError(f"worker {where['host']} (pid {where['pid']}) runs other software than"
                      f" the driver ({'; '.join(differ)}). Install the same versions on every"
                      " node (./launch.sh installs constraints.txt).")
  if not os.path.isdir(spec.workdir):
    raise ConfigError(f"worker {where['host']} (pid {where['pid']}) does not see the workdir"
                      f" {spec.workdir}: every node must mount it at the same path"
                      " (docs/cluster.md).")
  raw = context_lib.load_data(spec.config)
  if spec.data_digest and raw.digest and raw.digest != spec.data_digest:
    raise ConfigError(f"worker {where['host']} reads other data ({raw.source}, digest"
                      f" {raw.digest[:12]}…) than the driver ({spec.data_digest[:12]}…): put"
                      " the same files at the same path on every node, or set"
                      " DREAMJAX_DATA_DIR there.")
  mesh = sharding.make_mesh()
  log = _log
  oracle: list[Any] = []

  def get_oracle(record=None, train=False):
    if not oracle:  # trained by the oracle task; every other task restores its checkpoint
      oracle.append(context_lib.oracle(spec.config, raw, spec.workdir, mesh, log,
                                       record=record, write_record=False, cache=train))
    return oracle[0]

  _STATE.clear()
  _STATE.update(ident=ident, config=spec.config, workdir=spec.workdir, raw=raw, mesh=mesh,
                log=log, oracle=get_oracle, contexts={})
  return _STATE


def _shared_model(state: dict[str, Any], task: Task) -> dict[str, Any]:
  """Trains (or loads) a shared model into ``artefacts/``; a record that says how it went."""
  config = state["config"]
  model = task.model
  try:
    ctx = context_lib.for_budget(config, state["raw"], int(config.budgets[0]),
                                 state["workdir"], state["mesh"], None, state["log"])
    if model.kind == "pool_dreamer":
      artefacts.pool_dreamer(ctx)
    elif model.kind == "pretrained":
      artefacts.pretrained(ctx, model.arm)
    else:  # generator g is the one the study's seed number g reads (and g + G, ...)
      artefacts.pool_generator(ctx, model.arm, ctx.seeds[model.index])
  except (DreamjaxError, FloatingPointError) as e:
    return {"cell": task.key, "status": "failed", "error": f"{type(e).__name__}: {e}"}
  except Exception as e:  # noqa: BLE001 - its cells record the failure, as they would train it
    return {"cell": task.key, "status": "failed", "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(limit=6)}
  return {"cell": task.key, "status": "ok"}


def _failed(cell: Cell, error: str) -> dict[str, Any]:
  return {"cell": cell.key, "arm": cell.arm, "base_arm": arms_lib.base_name(cell.arm),
          "status": "failed", "error": error, "budget": cell.budget}


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)
