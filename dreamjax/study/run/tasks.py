"""The study's jobs as tasks of a distributed engine: what each takes, and its work.

:func:`graph` turns the jobs left to run into tasks, each naming the tasks
whose results it takes as inputs: the oracle before everything; a budget's
baseline before the cells that read its models; a model shared by several
cells (a pool generator, a pretrained trunk, the pool dreamer) as a task of
its own before the cells that use it; and a stored-copy arm's exchange cell
after the same arm's cells with fewer copies, whose images it reuses. An
engine runs a task once its inputs exist; no code here orders anything by
hand.

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
from typing import Any, Iterator, Mapping, Sequence

from dreamjax import _xla, cli
from dreamjax.plumbing import provenance, sharding
from dreamjax.configs import arms as arms_lib
from dreamjax.errors import ConfigError, DreamjaxError
from dreamjax.study.run import artefacts
from dreamjax.study.run import context as context_lib
from dreamjax.study.run.cells import ALIGNMENT, MORE_COPIES, Cell, jsonable

ORACLE = "oracle"
# XLA:CPU intra-op threads of every worker process: one, so that a worker's numbers are the
# same on any machine and with any number of workers, and W workers fill W cores.
WORKER_THREADS = 1
ARTEFACT = "artefact/"  # key prefix of a shared model's task


@dataclasses.dataclass(frozen=True)
class SharedModel:
  """A model several cells read, trained once per study into ``artefacts/<name>``."""
  name: str     # its artefacts/ file name, and its task's key after ARTEFACT
  kind: str     # "pool_generator", "pretrained" or "pool_dreamer"
  arm: str = ""  # the arm that trains it (a pool generator's stored arm)
  index: int = 0  # a pool generator's number among its arm's G


@dataclasses.dataclass(frozen=True)
class Task:
  """One task: the oracle, a shared model, or a job of the plan (a cell or an alignment).

  ``needs``: keys whose results this task uses (a failed one fails it);
  ``after``: keys it only runs after (their files make it cheaper, never other).
  """
  key: str
  cell: Cell | None = None
  model: SharedModel | None = None  # what an ARTEFACT task trains
  needs: tuple[str, ...] = ()
  after: tuple[str, ...] = ()

  @property
  def inputs(self) -> tuple[str, ...]:
    return self.needs + self.after


@dataclasses.dataclass(frozen=True)
class Spec:
  """What every task of one study run shares: sent to each worker once."""
  config: Any             # the study's ConfigDict
  workdir: str            # absolute: the same path on every node
  versions: dict[str, str]  # the driver's provenance.versions(); a worker with others refuses
  data_digest: str        # of the data the driver read; a worker reading other data refuses
  threads: int            # XLA:CPU intra-op threads of every worker (_xla.fix_cpu_threads)


def shared_models(config, arm: arms_lib.Resolved) -> list[SharedModel]:
  """The models shared by several cells that ``arm``'s cells read: a pool generator
  arm's G generators (:mod:`dreamjax.study.run.artefacts`; a fresh-sample arm reads its
  stored twin's), a pretrained trunk (its arm's own), the pool dreamer (every deep
  dream arm's). ``arm``: the arm as the study resolved it."""
  source = arm.source
  if isinstance(source, arms_lib.Attack):
    source = source.model
  if isinstance(source, arms_lib.Generator) and source.data == "pool":
    twin = arm.generator_arm
    used = min(artefacts.pool_generators(config), int(config.num_seeds))  # seed i reads i mod G
    return [SharedModel(artefacts.pool_generator_name(twin, g), "pool_generator", twin, g)
            for g in range(used)]
  if isinstance(source, arms_lib.Pretrained):
    return [SharedModel(arm.base, "pretrained", arm.base)]
  if source == arms_lib.Classifier("pool_dreamer"):
    return [SharedModel("pool_dreamer", "pool_dreamer")]
  return []


def needs_baseline(cell: Cell, arms: Mapping[str, arms_lib.Resolved]) -> bool:
  """The C3 alignment and the arms that use the baseline's models (not the baseline)."""
  return cell.job == ALIGNMENT or (cell.arm != "baseline" and arms[cell.arm].needs_baseline)


def graph(config, jobs: Sequence[Cell], arms: Mapping[str, arms_lib.Resolved],
          done: dict[str, Any]) -> list[Task]:
  """Tasks for the jobs not ``done`` (results.jsonl's records by key), inputs before users.

  ``arms``: the study's resolved arms (:func:`dreamjax.configs.arms.resolve`). An
  input already in ``done`` is no task: :func:`inputs_of` passes its record.
  """
  todo = [c for c in jobs if c.key not in done]
  keys = {c.key for c in jobs}
  tasks: list[Task] = [Task(ORACLE)]
  models: list[SharedModel] = []
  for cell in todo:
    if cell.job != ALIGNMENT:
      models += [m for m in shared_models(config, arms[cell.arm]) if m not in models]
  tasks += [Task(ARTEFACT + m.name, model=m) for m in models]
  main_copies = int(config.copies)
  for cell in todo:
    needs = [ORACLE]
    baseline = f"N{cell.budget}/baseline"
    if needs_baseline(cell, arms) and baseline in keys:
      needs.append(baseline)
    after = []
    if cell.job != ALIGNMENT:
      needs += [ARTEFACT + m.name for m in shared_models(config, arms[cell.arm])]
      if cell.exchange == MORE_COPIES and arms[cell.arm].per_copy:
        # Copy m of an image is the same in every cell of the arm; the copies the arm's
        # cells with fewer copies made are read back, as when the cells run in turn.
        smaller = sorted({main_copies, *(int(m) for m in config.exchange.copies)})
        after = [Cell.of(cell.budget, cell.arm, m, main_copies).key for m in smaller
                 if m < cell.copies]
        after = [k for k in after if k in keys]
    tasks.append(Task(cell.key, cell=cell, needs=tuple(needs), after=tuple(after)))
  return tasks


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
    record = state["oracle"]().record
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

  def get_oracle(record=None):
    if not oracle:  # trained by the oracle task; every other task restores its checkpoint
      oracle.append(context_lib.oracle(spec.config, raw, spec.workdir, mesh, log,
                                       record=record, write_record=False))
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
