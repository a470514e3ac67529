"""The study's jobs as a graph of tasks, the order they go to an engine, and the time
they take on W workers.

:func:`graph` turns the jobs left to run into tasks, each naming the tasks
whose results it takes as inputs: the oracle before everything; a budget's
baseline before the cells that read its models; a model shared by several
cells (a pool generator, a pretrained trunk, the pool dreamer) as a task of
its own before the cells that use it; a stored-copy arm's exchange cell
after the same arm's cells with fewer copies, whose images it reuses; and a
fresh-sample arm's cell after its stored twin's, whose small-set generators
it reads back (:func:`small_generator_cell`). An engine runs a task once its inputs exist. :func:`by_priority` only chooses the
order in which the tasks are handed to it (the longest predicted work first),
which changes when a task runs, never what it computes; :func:`schedule` and
:func:`wall_seconds` predict how long they take on W workers. The work of a
task in a worker is :mod:`dreamjax.study.run.tasks`'.
"""

import dataclasses
import heapq
from typing import Any, Collection, Mapping, Sequence

from dreamjax.configs import arms as arms_lib
from dreamjax.study import cost
from dreamjax.study.plan import ALIGNMENT, MORE_COPIES, Cell
from dreamjax.study.run import artefacts

ORACLE = "oracle"
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
  position = {c.key: i for i, c in enumerate(jobs)}
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
      # The class-conditional generators another cell trains first (and keeps) are read
      # back; in a plan where that cell comes later, this one trains and keeps them.
      small = small_generator_cell(cell, arms[cell.arm], main_copies)
      if small is not None and position.get(small, len(jobs)) < position[cell.key]:
        after.append(small)
    tasks.append(Task(cell.key, cell=cell, needs=tuple(needs), after=tuple(after)))
  return tasks


def small_generator_cell(cell: Cell, arm: arms_lib.Resolved, main_copies: int) -> str | None:
  """The key of the cell that trains (and keeps) the class-conditional generators ``cell``
  samples, where that is another cell: the stored twin's main cell for a fresh-sample
  arm (``N1000/vae_small`` for ``N1000/vae_small_online``), the arm's main cell for an
  exchange cell of a stored one. None for any other cell."""
  if arm.generator_arm is None or arm.source.data == "pool":
    return None
  main = Cell.of(cell.budget, arm.generator_arm, main_copies, main_copies).key
  return None if main == cell.key else main


def task_costs(config, graph: Sequence[Task], arms: Mapping[str, arms_lib.Resolved],
               sizes: cost.Sizes = cost.Sizes()) -> dict[str, float]:
  """Each task's predicted image-steps (:mod:`dreamjax.study.cost`): the oracle, each
  shared model on its own, each job without the shared models it reads."""
  jobs = [t.cell for t in graph if t.cell is not None]
  out = cost.job_costs(config, jobs, arms, sizes, charge_shared=False)
  out[ORACLE] = cost.oracle_cost(config, sizes)
  for t in graph:
    if t.model is None:
      continue
    if t.model.kind == "pool_dreamer":
      reader = next(arms[c.arm] for c in jobs if c.job != ALIGNMENT
                    and arms[c.arm].dreams_through_pool_dreamer)
      out[t.key] = cost.dreamer_work(config, reader)
    else:
      out[t.key] = cost.generator_work(arms[t.model.arm])
  return out


def by_priority(graph: Sequence[Task], costs: Mapping[str, float]) -> list[Task]:
  """``graph`` in the order to hand it to an engine: the inputs of each task still
  before it, and among the tasks free to go first, the one with the longest chain of
  predicted work ahead of it (its own and that of the tasks waiting on it) first, so
  that a long job does not start last while the other workers idle. Ties keep the
  plan's order. Only the submission order changes, never what a task computes."""
  position = {t.key: i for i, t in enumerate(graph)}
  users: dict[str, list[str]] = {t.key: [] for t in graph}
  for t in graph:
    for k in t.inputs:
      if k in users:
        users[k].append(t.key)
  chain: dict[str, float] = {}
  for t in reversed(graph):  # inputs come first, so users are costed before them
    chain[t.key] = float(costs.get(t.key, 0.0)) + max((chain[u] for u in users[t.key]),
                                                       default=0.0)
  waiting = {t.key: sum(k in users for k in t.inputs) for t in graph}
  free = [(-chain[k], position[k], k) for k, n in waiting.items() if n == 0]
  heapq.heapify(free)
  order = []
  while free:
    _, _, key = heapq.heappop(free)
    order.append(graph[position[key]])
    for u in users[key]:
      waiting[u] -= 1
      if waiting[u] == 0:
        heapq.heappush(free, (-chain[u], position[u], u))
  return order


def schedule(graph: Sequence[Task], seconds: Mapping[str, float], workers: int,
             startup: float = 0.0) -> dict[str, Any]:
  """How ``graph`` (in submission order) runs on ``workers`` one-thread workers, each task
  taking ``seconds[key]``, as the engine runs it: a worker that frees up takes the first
  submitted task whose inputs are done, else the one whose inputs are done first.
  ``startup``: seconds before a worker's first task. Returns the makespan, the critical
  path (infinitely many workers) and the fraction of worker time busy."""
  order = {t.key: i for i, t in enumerate(graph)}
  deps = {t.key: set(t.inputs) & set(order) for t in graph}
  users: dict[str, list[str]] = {k: [] for k in order}
  for k, ds in deps.items():
    for d in ds:
      users[d].append(k)
  finish: dict[str, float] = {}
  waiting = {k: len(ds) for k, ds in deps.items()}
  ready = [(0.0, order[k], k) for k, n in waiting.items() if n == 0]  # (ready at, order, key)
  heapq.heapify(ready)
  free = [(startup, w) for w in range(max(int(workers), 1))]  # (free at, worker)
  heapq.heapify(free)
  busy, pending = 0.0, []
  while ready or pending:
    while ready:
      pending.append(heapq.heappop(ready))
    pending.sort(key=lambda x: (x[0], x[1]))
    t_free, w = heapq.heappop(free)
    now = [p for p in pending if p[0] <= t_free]
    chosen = min(now, key=lambda p: p[1]) if now else pending[0]
    pending.remove(chosen)
    start = max(t_free, chosen[0])
    took = float(seconds.get(chosen[2], 0.0))
    finish[chosen[2]] = start + took
    busy += took
    heapq.heappush(free, (start + took, w))
    for u in users[chosen[2]]:
      waiting[u] -= 1
      if waiting[u] == 0:
        heapq.heappush(ready, (max(finish[d] for d in deps[u]), order[u], u))
  makespan = max(finish.values(), default=startup)
  critical: dict[str, float] = {}
  before: dict[str, str | None] = {}
  for t in graph:  # every input is submitted before its users
    first = max(deps[t.key], key=lambda d: critical[d], default=None)
    before[t.key] = first
    critical[t.key] = (critical[first] if first else startup) + float(seconds.get(t.key, 0.0))
  path, key = [], max(critical, key=critical.get, default=None)
  while key:
    path.append(key)
    key = before[key]
  return {"makespan_s": makespan, "critical_path_s": max(critical.values(), default=0.0),
          "critical_path": [(k, float(seconds.get(k, 0.0))) for k in reversed(path)],
          "busy_fraction": busy / (makespan * max(int(workers), 1)) if makespan else 0.0}


def wall_seconds(config, jobs: Sequence[Cell], arms: Mapping[str, arms_lib.Resolved],
                 done: Collection[str], seconds_per_image_step: float, workers: int,
                 sizes: cost.Sizes = cost.Sizes(), built: Collection[str] = ()) -> float:
  """Predicted wall time of the jobs not ``done`` (keys) on ``workers`` one-thread
  workers (``workers`` ≤ 1: in turn, the sum): the cost model's image-steps of each task
  at ``seconds_per_image_step``, scheduled as :func:`schedule` does in
  :func:`by_priority`'s order. An oracle ``done`` and the shared models ``built`` (by
  name) are restored, not trained: they cost nothing here."""
  tasks = graph(config, jobs, arms, {key: None for key in done})
  steps = task_costs(config, tasks, arms, sizes)
  free = {ORACLE} if ORACLE in done else set()
  free |= {t.key for t in tasks if t.model is not None and t.model.name in built}
  seconds = {k: 0.0 if k in free else v * seconds_per_image_step for k, v in steps.items()}
  if int(workers) <= 1:
    return sum(seconds.values())
  return schedule(by_priority(tasks, seconds), seconds, int(workers))["makespan_s"]
