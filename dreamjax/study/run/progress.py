"""How far a study has come and how long the rest will take.

:mod:`dreamjax.study.cost` prices each job of the plan in image-steps and
calibrates the prices on the jobs that finished (a resumed study's finished cells
count too, from their records); before anything has finished, the oracle's
recorded training speed stands in for the timed step.

:class:`StudyProgress` turns this into the study's progress line: on a
terminal, a bar redrawn in place; in a log, one plain line per job start and
end. Nothing in it may stop a study: if the model fails, time left is the
mean time of the finished jobs times the jobs left.
"""

import dataclasses
import datetime
import shutil
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from dreamjax import data as data_lib
from dreamjax.configs import arms as arms_lib
from dreamjax.study import cost, records
from dreamjax.study.run import taskgraph
from dreamjax.training import models, train

# The cost model's names, handed on to the callers that read them here.
(DREAMER_STEP, ONLINE_PIXEL_OPS, Sizes, arm_kind, average_left, calibration_ratio, dream_steps,
 dreamer_factor, dreamer_work, format_duration, generator_work, job_costs,
 pool_generators_trained, record_seconds, sample_work, time_left, transform_factor) = (
     cost.DREAMER_STEP, cost.ONLINE_PIXEL_OPS, cost.Sizes, cost.arm_kind, cost.average_left,
     cost.calibration_ratio, cost.dream_steps, cost.dreamer_factor, cost.dreamer_work,
     cost.format_duration, cost.generator_work, cost.job_costs, cost.pool_generators_trained,
     cost.record_seconds, cost.sample_work, cost.time_left, cost.transform_factor)

def format_clock(when: float, now: float) -> str:
  """Local time of day of ``when``; with the day when it is not ``now``'s day."""
  t, today = datetime.datetime.fromtimestamp(when), datetime.datetime.fromtimestamp(now)
  return t.strftime("%H:%M") if t.date() == today.date() else t.strftime("%a %d %b %H:%M")


def status_text(done: int, total: int, spent: float, left: float | None, now: float,
                note: str = "") -> str:
  """``2/12 cells done, 4.1 min spent, ~12 min left, finish ~14:32``."""
  text = f"{done}/{total} cells done, {cost.format_duration(spent)} spent"
  if left is None:
    return text + ", time left unknown"
  return (text + f", ~{cost.format_duration(left)} left{note}, finish ~{format_clock(now + left, now)}")


def bar(fraction: float, width: int = 20) -> str:
  """``[#####---------------]``."""
  filled = int(round(min(max(fraction, 0.0), 1.0) * width))
  return "[" + "#" * filled + "-" * (width - filled) + "]"


@dataclasses.dataclass
class Estimate:
  """A study's predicted wall time on this machine (``--dry_run``)."""
  jobs: dict[str, float]       # seconds per job key
  budgets: dict[int, float]    # seconds per label budget (its cells and alignment)
  oracle: float
  workers: int = 0             # the study's one-thread workers (0: in one process)
  wall_on_workers: float | None = None  # its tasks scheduled on them (taskgraph.wall_seconds)

  @property
  def total(self) -> float:
    """Seconds of work: every job and the oracle, one after another."""
    return self.oracle + sum(self.jobs.values())

  @property
  def wall(self) -> float:
    """Predicted wall time: on the workers where there are several, else the work."""
    return self.total if self.wall_on_workers is None else self.wall_on_workers

  def lines(self, config=None) -> list[str]:
    main = set(int(b) for b in config.budgets) if config is not None else set(self.budgets)
    parts = [f"oracle ~{cost.format_duration(self.oracle)}"]
    parts += [f"N{b}{'' if b in main else ' (exchange rate)'} ~{cost.format_duration(s)}"
              for b, s in sorted(self.budgets.items())]
    if self.wall_on_workers is not None:
      return [f"estimated wall time on this machine: ~{cost.format_duration(self.wall)} on"
              f" {self.workers} workers, {cost.format_duration(self.total)} of work"
              f" ({'; '.join(parts)}), longest first",
              "  from a timed training step and each job's cost model (dreamjax/study/"
              "progress.py), the tasks scheduled on the workers as the engine runs them"
              " (taskgraph.py); the running study recalibrates it on the cells it finishes"]
    return [f"estimated wall time on this machine: ~{cost.format_duration(self.total)}"
            f" ({'; '.join(parts)})",
            "  from a timed training step and each job's cost model (dreamjax/study/"
            "progress.py); the running study recalibrates it on the cells it finishes"]


def timed_train_step(config, raw, mesh) -> float:
  """Seconds of one training step of every seed at once on this machine: a short burst of
  the study's classifier on the first budget's labeled set, timed after it compiled
  (what :func:`estimate` scales by each job's cost)."""
  s = data_lib.make_splits(raw, num_labeled=config.budgets[0], val_size=config.val_size, seed=0)
  k = config.num_seeds
  images, labels, counts = train.pad_to_common([(s.labeled_images, s.labeled_labels)] * k)
  probe = config.train.copy_and_resolve_references()
  probe.steps, probe.warmup_steps, probe.log_every, probe.eval_every = 12, 1, 6, 0
  probe.checkpoint_every = 0
  model = models.make_model(config.model, raw.num_classes)
  kwargs = dict(counts=counts, seeds=range(k), mesh=mesh, progress=lambda m: None)
  train.fit(model, probe, images, labels, **kwargs)  # compile
  t0 = time.perf_counter()
  train.fit(model, probe, images, labels, **kwargs)
  return (time.perf_counter() - t0) / probe.steps


def estimate(config, jobs: Sequence[Any], arms: Mapping[str, arms_lib.Resolved],
             seconds_per_train_step: float, raw=None, workers: int = 0) -> Estimate:
  """Every job's predicted seconds from a timed training step of all seeds at once, and
  with ``workers`` > 1 the wall time of the study's tasks on that many workers.

  ``arms``: the study's resolved arms (:func:`dreamjax.configs.arms.resolve`). A
  one-thread worker is priced like the timed step of this process, as the sums of
  the cells agreed on this project's 2-core VM (docs/performance.md)."""
  sizes = cost.Sizes.of(raw)
  rate = cost.seconds_per_image_step(config, seconds_per_train_step)
  per_job = {key: c * rate for key, c in cost.job_costs(config, jobs, arms, sizes).items()}
  budgets: dict[int, float] = {}
  for cell in jobs:
    budgets[int(cell.budget)] = budgets.get(int(cell.budget), 0.0) + per_job[cell.key]
  wall = (taskgraph.wall_seconds(config, jobs, arms, (), rate, workers, sizes)
          if int(workers) > 1 else None)
  return Estimate(per_job, budgets, cost.oracle_cost(config, sizes) * rate, int(workers), wall)


class StudyProgress:
  """The progress line of one run of a study. Its methods never raise (the log
  function's own errors aside): a failing estimate falls back to averages, a
  failing line to the bare ``[i/n] KEY``.

  ``jobs``: the plan's jobs (cells) in order; ``arms``: the study's resolved
  arms, which the cost model prices; ``done``: the results.jsonl records
  already there, by key (they calibrate the estimate).
  ``graph``: on workers, the engine's tasks (:func:`dreamjax.study.run.taskgraph.graph`):
  each cell is then priced without the shared models it reads, each shared model not
  ``built`` (names kept in the workdir) as a task of its own until its result
  arrives (:meth:`end_shared`), and the time left is the remaining tasks scheduled
  on the workers (:func:`~dreamjax.study.run.taskgraph.schedule`), so a chain of
  long tasks counts in full.
  ``log``: where plain lines go; ``stream`` (default ``sys.stderr``): where the
  bar is drawn when it is a terminal. ``spent_before``: seconds the earlier
  runs on the workdir took (default: their ``sessions.jsonl`` lines when
  ``workdir`` is given). ``clock`` and ``wall``: elapsed seconds and the time
  of day, replaceable in tests.
  """

  def __init__(self, config, jobs: Sequence[Any], arms: Mapping[str, arms_lib.Resolved],
               done: dict[str, Any], *, raw=None, workdir: str | None = None,
               log: Callable[[str], None] = print, stream=None,
               spent_before: float | None = None,
               clock: Callable[[], float] = time.perf_counter,
               wall: Callable[[], float] = time.time, parallel: int = 1,
               graph: Sequence[taskgraph.Task] | None = None, built: Iterable[str] = ()):
    self._log, self._clock, self._wall = log, clock, wall
    self.parallel = max(int(parallel), 1)  # jobs running at once (a study's workers)
    self.stream = sys.stderr if stream is None else stream
    self.keys = [cell.key for cell in jobs]
    self.total = len(self.keys)
    self.finished = {key for key in self.keys if key in done}
    self.actual: dict[str, float] = {}  # seconds of each finished job that knows them
    self.rate: float | None = None  # seconds per image-step before calibration
    self.current: str | None = None
    self.position = 0
    self._started = 0.0
    self._expected: float | None = None  # the running job's calibrated prediction
    self._drawn = False
    self.t0 = clock()
    self.tty = bool(_safe(lambda: self.stream.isatty()))
    self.graph = list(graph) if graph is not None else None
    # A cell's price: with its shared models where it trains them (one process), without
    # them where they are tasks of their own (workers).
    self.costs: dict[str, float] | None = _safe(job_costs, config, jobs, arms, Sizes.of(raw),
                                                self.graph is None)
    self.shared: dict[str, float] = {}  # image-steps of each shared model's task still to run
    if self.graph is not None:
      built = set(built)
      every = _safe(taskgraph.task_costs, config, self.graph, arms, Sizes.of(raw)) or {}
      self.shared = {t.key: every[t.key] for t in self.graph
                     if t.model is not None and t.model.name not in built and t.key in every}
    self._config = config
    for key in self.finished:
      seconds = _safe(cost.record_seconds, done[key])
      if seconds is not None:
        self.actual[key] = seconds
    if spent_before is None:
      spent_before = _safe(_sessions_seconds, workdir) if workdir else 0.0
    self.spent_before = spent_before or 0.0

  def use_oracle(self, oracle_record: dict[str, Any] | None) -> None:
    """Prices an image-step at the oracle's recorded training speed (until calibrated)."""
    self.rate = _safe(cost.oracle_rate, self._config, oracle_record)

  def ratio(self) -> float | None:
    """Actual over predicted seconds of the finished jobs (None before any).

    Without a price (:attr:`rate`), predictions are in image-steps and the
    ratio is itself the price.
    """
    if self.costs is None:
      return None
    rate = self.rate or 1.0
    return cost.calibration_ratio((self.costs[k] * rate, a) for k, a in self.actual.items()
                             if k in self.costs)

  def expected(self, key: str) -> float | None:
    """The job's calibrated predicted seconds (None while there is no price)."""
    if self.costs is None:
      return None
    ratio = self.ratio()
    if ratio is None and not self.rate:
      return None
    return self.costs[key] * (self.rate or 1.0) * (1.0 if ratio is None else ratio)

  def left(self) -> tuple[float | None, str]:
    """(seconds left, a note on how they were estimated) at this moment."""
    elapsed = self._clock() - self._started if self.current else 0.0
    todo = [k for k in self.keys if k not in self.finished and k != self.current]
    try:
      ratio = self.ratio()
      if self.costs is not None and (ratio is not None or self.rate):
        rate, ratio_ = self.rate or 1.0, 1.0 if ratio is None else ratio
        note = "" if ratio is not None else " (uncalibrated)"
        if self.graph is not None:
          return self._scheduled(todo, rate * ratio_), note
        running = self.costs[self.current] * rate if self.current else 0.0
        work = cost.time_left([self.costs[k] * rate for k in todo], ratio_, running, elapsed)
        # On several workers, the work shared among them, but never less than the longest
        # job left (a worker's tasks report when they end, so theirs count in full).
        longest = max([ratio_ * self.costs[k] * rate for k in todo], default=0.0)
        return max(work / self._share(todo), longest if self.parallel > 1 else 0.0), note
    except Exception:  # noqa: BLE001 - fall back to the mean of the finished jobs
      pass
    left = cost.average_left(list(self.actual.values()), len(todo) + bool(self.current), elapsed)
    return (None if left is None else left / self._share(todo),
            " (mean of finished cells)" if left is not None else "")

  def _scheduled(self, todo: Sequence[str], price: float) -> float:
    """Seconds until the cells ``todo`` and the shared models left are done: their
    calibrated predictions scheduled on the workers with their inputs first. A task a
    worker is running counts in full (the engine reports a task when it ends)."""
    seconds = {k: self.costs[k] * price for k in todo}
    seconds.update({k: c * price for k, c in self.shared.items()})
    left = [t for t in self.graph if t.key in seconds]
    return taskgraph.schedule(left, seconds, self.parallel)["makespan_s"]

  def end_shared(self, key: str) -> None:
    """A shared model's task ended (trained, restored or failed): it costs nothing more."""
    self.shared.pop(key, None)

  def _share(self, todo) -> int:
    """How many of the jobs left run at once (a rough division: dependencies aside)."""
    return max(min(self.parallel, len(todo) + bool(self.current)), 1)

  def spent(self) -> float:
    """Seconds of every run on the study so far, this one included."""
    return self.spent_before + self._clock() - self.t0

  def status(self) -> str:
    left, note = self.left()
    return status_text(len(self.finished), self.total, self.spent(), left, self._wall(), note)

  def start(self, key: str) -> None:
    """A job starts: its plain line, or the bar redrawn."""
    self.current, self._started = key, self._clock()
    self.position = len(self.finished) + 1
    self._expected = _safe(self.expected, key)
    head = f"[{self.position}/{self.total}] {key}"
    self._show(_safe(lambda: f"{head}, {self.status()}") or head)

  def end(self, key: str, record: dict[str, Any] | None = None) -> None:
    """A job ended (``record``: its results.jsonl line): its plain line, or the bar redrawn.

    A failed job counts as done but calibrates nothing.
    """
    seconds = (self._clock() - self._started if self.current == key
               else _safe(cost.record_seconds, record or {}))  # a worker's job: its own timing
    if self.current != key:
      self.position, self._expected = len(self.finished) + 1, _safe(self.expected, key)
    self.finished.add(key)
    self.current = None
    ok = record is None or record.get("status") == "ok"
    if ok and seconds is not None:
      self.actual[key] = seconds
    head = f"[{self.position}/{self.total}] {key}"

    def line():
      took = "" if seconds is None else f" {'in' if ok else 'after'} {cost.format_duration(seconds)}"
      guess = (f" (predicted {cost.format_duration(self._expected)})"
               if ok and seconds is not None and self._expected is not None else "")
      return f"{head} {'done' if ok else 'failed'}{took}{guess}; {self.status()}"
    self._show(_safe(line) or f"{head} {'done' if ok else 'failed'}")

  def log(self, message: str) -> None:
    """``log(message)``, keeping the bar below the message on a terminal."""
    if not self.tty:
      self._log(message)
      return
    shown = self._drawn
    self._clear()
    self._log(message)
    if shown:
      self._show("")

  def close(self) -> None:
    """Clears the bar: call it before the study's last lines, or when it stops."""
    self._clear()

  def _show(self, line: str) -> None:
    """A plain line to the log, or on a terminal the bar (``line`` if the bar fails)."""
    if not self.tty:
      self._log(line)
      return
    width = max(_safe(lambda: shutil.get_terminal_size((100, 24)).columns) or 100, 21) - 1
    self._draw((_safe(self.bar_line, width) or line)[:width])

  def bar_line(self, width: int = 1000) -> str:
    """``[3/12] N100/classical [###---] 2/12 cells done, ...``; without the bar where the
    line would be wider than ``width``."""
    head = (f"[{self.position}/{self.total}] {self.current}" if self.current
            else f"[{len(self.finished)}/{self.total}]")
    status = self.status()
    line = f"{head} {bar(len(self.finished) / max(self.total, 1), 12)} {status}"
    return line if len(line) <= width else f"{head} {status}"

  def _draw(self, line: str) -> None:
    try:
      self.stream.write("\r\x1b[K" + line)
      self.stream.flush()
      self._drawn = True
    except Exception:  # noqa: BLE001 - a closed terminal must not stop the study
      pass

  def _clear(self) -> None:
    if not self._drawn:
      return
    self._drawn = False
    try:
      self.stream.write("\r\x1b[K")
      self.stream.flush()
    except Exception:  # noqa: BLE001
      pass


def _sessions_seconds(workdir: str) -> float:
  return float(sum(s.get("seconds", 0.0) for s in records.read_sessions(workdir)))


def _safe(fn, *args):
  """``fn(*args)``, or None if it raises: the progress line never stops a study."""
  try:
    return fn(*args)
  except Exception:  # noqa: BLE001
    return None
