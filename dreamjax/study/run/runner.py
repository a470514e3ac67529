"""Runs the study: cells in dependency order, resumable, one failure at a time.

A *cell* is one arm at one label budget, trained over every seed at once
(:mod:`dreamjax.study.run.cells`). A finished cell is one line of
``results.jsonl``; a rerun with the same workdir skips it. Inside a cell,
generated sets and training checkpoints are kept on disk, so a kill mid-cell
loses at most the work since the last checkpoint. Everything is keyed by seed
and arm, so a resumed study ends with the same numbers as an uninterrupted one
(timings aside, which live under each record's ``timing``).

The mesh is made here, once, and handed down through the per-budget
:class:`dreamjax.study.run.context.Context`.
"""

import contextlib
import dataclasses
import os
import time
import traceback
from typing import Any, Callable

import jax
from jax._src import xla_bridge

from dreamjax import _xla
from dreamjax.methods import dreamer
from dreamjax.plumbing import fileio, lock, provenance, sharding
from dreamjax.training import metrics, models, train
from dreamjax import data as data_lib
from dreamjax import errors
from dreamjax.errors import ConfigError, DiskFullError, DistributedError, DreamjaxError
from dreamjax.configs import arms as arms_lib
from dreamjax.study import claims
from dreamjax.study.run import artefacts
from dreamjax.study.run import context as context_lib
from dreamjax.study import spec as spec_lib
from dreamjax.study.run import engine as engine_lib
from dreamjax.study import records
from dreamjax.study.report import report
from dreamjax.study.run import progress
from dreamjax.study.run import tasks as tasks_lib
from dreamjax.study import plan as plan_lib
from dreamjax.study.run.cells import ALIGNMENT, Cell, alignment_cell, jsonable, run_cell

RESULTS = context_lib.RESULTS
CONFIG_FILE = records.CONFIG_FILE
check_workdir = records.check_workdir


def validate_config(config) -> dict[str, arms_lib.Resolved]:
  """Refuses a config a study cannot run, in one ``ConfigError``; returns its arms,
  resolved (:func:`dreamjax.configs.arms.resolve`)."""
  unknown = [a for a in config.arms if arms_lib.base_name(a) not in arms_lib.REGISTRY]
  if unknown:
    raise ConfigError(f"arms: unknown arm(s) {unknown}; choose from {list(arms_lib.names())}.")
  if "baseline" not in config.arms:
    raise ConfigError("arms must include 'baseline': every other arm is compared with it"
                      " (and dreams, attacks and pseudo-labels use its models).")
  arms = arms_lib.resolve(config)
  claims_asked = tuple(config.get("claims", claims.CLAIMS))
  if not claims_asked or any(c not in claims.CLAIMS for c in claims_asked):
    raise ConfigError(f"claims={claims_asked}: name one or more of {tuple(claims.CLAIMS)}.")
  smallest = min((int(b) for b in config.budgets), default=0)
  checks = [
      ("num_seeds", config.num_seeds, config.num_seeds >= 2, ">= 2 (confidence intervals)"),
      ("first_seed", config.get("first_seed", 0), int(config.get("first_seed", 0)) >= 0, ">= 0"),
      ("protocol_version", config.get("protocol_version", 1),
       config.get("protocol_version", 1) in (1, 2), "1 or 2"),
      ("copies", config.copies, config.copies >= 1, ">= 1"),
      ("budgets", tuple(config.budgets), len(config.budgets) >= 1 and all(b > 0 for b in config.budgets),
       "a non-empty list of positive label budgets"),
      ("primary_budget", config.primary_budget, config.primary_budget in tuple(config.budgets),
       f"one of budgets {tuple(config.budgets)}"),
      ("eval.robust_eps", tuple(config.eval.robust_eps),
       len(config.eval.robust_eps) >= 1 and all(e > 0 for e in config.eval.robust_eps),
       "a non-empty list of radii > 0"),
      ("online_fraction", config.online_fraction, 0 <= config.online_fraction <= 1, "in [0, 1]"),
      ("exchange.copies", tuple(config.exchange.copies),
       all(int(m) == m and m >= 1 for m in config.exchange.copies), "whole numbers >= 1"),
      ("exchange.label_factors", tuple(config.exchange.label_factors),
       all(f > 1 for f in config.exchange.label_factors), "factors > 1"),
      ("pool_budget", config.get("pool_budget", 0), int(config.get("pool_budget", 0)) >= 0,
       ">= 0 (0: the largest budget)"),
      ("quality_gate", config.quality_gate, 0 <= config.quality_gate <= 1, "in [0, 1]"),
      ("pool_generators", config.get("pool_generators", 1),
       _whole(config.get("pool_generators", 1)) and config.get("pool_generators", 1) >= 1,
       "a whole number >= 1 (pool generators per pool generator arm, each from its own"
       " seed; 3 or more put generator variance in those arms' intervals)"),
      ("self_training.threshold", config.self_training.threshold,
       0 <= config.self_training.threshold <= 1, "in [0, 1]"),
      ("self_training.max_images", config.self_training.max_images,
       config.self_training.max_images >= 1, ">= 1"),
      ("eval.robust_steps", config.eval.robust_steps, config.eval.robust_steps >= 1, ">= 1"),
      ("eval.robust_num_test", config.eval.robust_num_test, config.eval.robust_num_test >= 1, ">= 1"),
      ("eval.frechet_num_test", config.eval.frechet_num_test, config.eval.frechet_num_test >= 2, ">= 2"),
      ("eval.frechet_num_images", config.eval.get("frechet_num_images", 0),
       int(config.eval.get("frechet_num_images", 0)) == config.eval.get("frechet_num_images", 0)
       and (config.eval.get("frechet_num_images", 0) == 0
            or 2 <= config.eval.get("frechet_num_images", 0) <= smallest),
       f"0 (every image of a set) or a whole number in [2, {smallest}] (the"
       " smallest budget, whose real labeled set is the Fréchet reference)"),
      ("eval.frechet_draws", config.eval.get("frechet_draws", 1),
       int(config.eval.get("frechet_draws", 1)) == config.eval.get("frechet_draws", 1)
       and config.eval.get("frechet_draws", 1) >= 1, "a whole number >= 1"),
      ("oracle.augment", config.oracle.get("augment", "none"),
       config.oracle.get("augment", "none") in ("none", "classical"), "none or classical"),
      ("oracle.augment_fraction", config.oracle.get("augment_fraction", 0.0),
       0 <= (config.oracle.get("augment_fraction") or 0.0) <= 1, "in [0, 1]"),
      ("oracle.shift_pixels", tuple(config.oracle.get("shift_pixels", ())),
       all(int(d) == d and d >= 1 for d in config.oracle.get("shift_pixels", ())),
       "whole numbers of pixels >= 1"),
      ("attack.eps", config.attack.eps, config.attack.eps >= 0, ">= 0"),
      ("attack.pgd_steps", config.attack.pgd_steps, config.attack.pgd_steps >= 1, ">= 1"),
      ("attack.train_steps", config.attack.train_steps, config.attack.train_steps >= 1, ">= 1"),
      ("attack.train_fraction", config.attack.train_fraction,
       0 <= config.attack.train_fraction <= 1, "in [0, 1]"),
      ("pseudo_label_threshold", config.pseudo_label_threshold,
       0 <= config.pseudo_label_threshold <= 1, "in [0, 1]"),
      ("verdict_margin", config.verdict_margin, 0 <= config.verdict_margin < 1, "in [0, 1)"),
      ("dream_chunk", config.dream_chunk, config.dream_chunk >= 1, ">= 1"),
      ("dream_steps", config.dream_steps,
       int(config.dream_steps) == config.dream_steps and config.dream_steps >= 0,
       "an integer >= 0 (0: the presets' own steps)"),
  ]
  for name, value, ok, valid in checks:
    if not ok:
      raise ConfigError(f"{name}={value} is invalid: must be {valid}.")
  missing = [a for a in config.exchange.arms if arms_lib.base_name(a) not in arms_lib.REGISTRY
             or not arms_lib.get(a).stores_images]
  if missing:
    raise ConfigError(f"exchange.arms: {missing} store no images; choose arms that do.")
  train.validate_train_config(config.train)
  for key, steps in (config.get("train_steps_by_budget") or {}).items():
    if not (key.startswith("N") and key[1:].isdigit()) or int(steps) != steps or steps < 1:
      raise ConfigError(f"train_steps_by_budget.{key}={steps} is invalid: keys are label budgets"
                        " written N<budget> (e.g. N5000), values whole numbers of steps >= 1.")
    try:
      train.validate_train_config(spec_lib.train_config(config, int(key[1:])))
    except ConfigError as e:
      raise ConfigError(f"train_steps_by_budget.{key}: {e}") from None
  train.validate_train_config(config.oracle.train)
  models.check_config(config.model)
  models.check_config(config.oracle.model, "oracle.model")
  if any(a.dreams_through_pool_dreamer for a in arms.values() if a.of):
    dreamer.check_study(config.pool_dreamer)  # its checkpoint meets the data in run_study
  return arms


def _whole(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


# The plan is dreamjax.study.plan, below running and reporting a study; its names are
# handed on here.
plan, has_alignment, job_order = plan_lib.plan, plan_lib.has_alignment, plan_lib.job_order
exchange_budgets = plan_lib.exchange_budgets


def estimate_seconds(config, raw, cells: list[Cell], mesh,
                     arms: dict[str, arms_lib.Resolved], workers: int = 0) -> progress.Estimate:
  """Wall time: a timed burst of the train step, scaled by each job's cost, on ``workers``
  local workers (progress.py)."""
  return progress.estimate(config, job_order(config, cells, has_alignment(arms)), arms,
                           progress.timed_train_step(config, raw, mesh), raw, workers)


def _dry_run(config, workdir, raw, cells, with_alignment, mesh, log, arms,
             workers: int = 0) -> dict[str, Any]:
  for n in sorted({c.budget for c in cells}):  # a budget the data cannot give fails here
    for seed in spec_lib.seeds_of(config):
      data_lib.make_splits(raw, num_labeled=n, val_size=config.val_size, seed=seed)
  fileio.check_writable(workdir, create=False)  # a dry run leaves nothing on disk
  est = estimate_seconds(config, raw, cells, mesh, arms, workers)
  lines = [f"dataset {raw.name}: {len(raw.train_labels)} train / {len(raw.test_labels)} test,"
           f" {raw.num_classes} classes, images {raw.image_shape}",
           f"budgets {tuple(config.budgets)}, seeds {list(spec_lib.seeds_of(config))},"
           f" {spec_lib.steps_text(config)} per arm",
           f"{len(cells)} cells (+ oracle{', + C3 alignment' if with_alignment else ''}):"]
  lines += [f"  {c.key:<28} ~{progress.format_duration(est.jobs[c.key])}" for c in cells]
  pools = [a.name for a in arms.values() if a.of and progress.arm_kind(a) == "pool_generator"]
  if pools:
    lines.append(f"pool generators: {progress.pool_generators_trained(config)} trained per arm"
                 f" ({', '.join(pools)}; pool_generators={config.get('pool_generators', 1)},"
                 f" {config.num_seeds} seeds), charged to each arm's first cell")
  lines += est.lines(config)
  log("\n".join(lines))
  return {"cells": [c.key for c in cells], "estimated_seconds": est.wall,
          "work_seconds": est.total,
          "job_seconds": est.jobs, "budget_seconds": est.budgets}


def run_study(config, workdir: str, *, dry_run: bool = False, retry_failed: bool = False,
              log: Callable[[str], None] = print, workers: int = 0,
              address: str | None = None, engine=None,
              engine_options: dict[str, Any] | None = None) -> dict[str, Any]:
  """Runs (or resumes) every cell, then writes the report. Returns a summary.

  ``workers=0`` and no ``address``: every job in this process, in turn. Else
  the jobs are tasks of a distributed engine (:mod:`dreamjax.study.run.tasks`), on
  ``workers`` local worker processes of one XLA:CPU thread each, or on the
  cluster at ``address``; this process only writes the records. ``engine``:
  the engine's adapter class (default :class:`dreamjax.study.run.engine.RayEngine`),
  made with ``engine_options``.
  """
  arms = validate_config(config)
  compute = None
  if workers or address:
    engine = engine or engine_lib.RayEngine
    compute = {"engine": engine.name, "xla_cpu_threads": tasks_lib.WORKER_THREADS}
    if not dry_run:
      _driver_on_cpu()
  mesh = sharding.make_mesh() if compute is None or dry_run else None
  raw = context_lib.load_data(config)
  if any(a.dreams_through_pool_dreamer for a in arms.values() if a.of):
    dreamer.check_fits(config.pool_dreamer, raw.image_shape)  # a user's must fit this data
  cells = plan(config, arms, raw.num_classes)
  with_alignment = has_alignment(arms)
  contexts = {"pool": context_lib.shared_pool(config, raw)}  # a bad pool_budget fails here
  if dry_run:
    # Local workers; a cluster's are not counted before it is reached: its work is given.
    return _dry_run(config, workdir, raw, cells, with_alignment, mesh, log, arms,
                    int(workers) if workers and not address else 0)

  # A run refused before it wrote anything leaves no folder behind that it made.
  with fileio.writable_workdir(workdir), lock.workdir_lock(workdir, what="study"):
    check_workdir(config, workdir, raw)
    records.check_compute(workdir, compute or {"engine": "", "xla_cpu_threads":
                                               _xla.cpu_threads()})
    if compute is not None:
      tasks_lib.wait_for_workers(workdir, log)
      return _run_tasks(config, workdir, raw, cells, with_alignment, retry_failed, log,
                        compute, engine(workers, address, log, **(engine_options or {})), arms)
    return _run(config, workdir, raw, cells, with_alignment, mesh, retry_failed, log, contexts,
                arms)


def run_job(cell: Cell, get_context: Callable[[], Any],
            train_labels: Any = None) -> dict[str, Any]:
  """One job's results.jsonl record; a failure of the cell (not of the job) is recorded.

  ``get_context`` builds or fetches the budget's context inside the guard, so a
  baseline that fails to train fails the cells that need it, not the study.
  ``train_labels`` (the raw training split's) measure pool pseudo-labels
  (:func:`dreamjax.study.run.cells.run_cell`); no arm receives them.
  """
  counter = metrics.CompileCounter()
  try:
    with counter:
      ctx = get_context()
      if cell.job == ALIGNMENT:
        record = alignment_cell(ctx)
      else:
        record = run_cell(dataclasses.replace(ctx, copies=cell.copies), cell, train_labels)
    record.setdefault("timing", {})["xla"] = counter.to_dict()
  except (KeyboardInterrupt, DistributedError, DiskFullError):
    raise  # the job, not this cell: a rerun resumes here
  except (DreamjaxError, FloatingPointError) as e:
    record = _failed(cell, e)
  except Exception as e:  # noqa: BLE001 - one broken cell must not end the study
    record = _failed(cell, e, tb=traceback.format_exc(limit=6))
  return record


def context_getter(config, raw, workdir, mesh, oracle, contexts: dict[Any, Any],
                   cell: Cell, log, arms: dict[str, arms_lib.Resolved] | None = None
                   ) -> Callable[[], Any]:
  """A function giving ``cell``'s budget context, built once per budget (in ``contexts``)
  and given its baseline when the cell needs it. ``arms``: the study's resolved arms
  (resolved by the context if not given)."""
  def get():
    if cell.budget not in contexts:
      if "pool" not in contexts:  # one shared pool for every budget
        contexts["pool"] = context_lib.shared_pool(config, raw)
      contexts[cell.budget] = context_lib.for_budget(config, raw, cell.budget, workdir, mesh,
                                                     oracle, log, pool=contexts["pool"],
                                                     arms=arms)
    if contexts[cell.budget].baseline is None and _needs_baseline(
        cell, contexts[cell.budget].arms):
      contexts[cell.budget] = context_lib.with_baseline(contexts[cell.budget])
    return contexts[cell.budget]
  return get


def _run(config, workdir, raw, cells, with_alignment, mesh, retry_failed, log, contexts,
         arms):
  done = {r["cell"]: r for r in fileio.read_jsonl(os.path.join(workdir, RESULTS))}
  if retry_failed:
    done = {k: v for k, v in done.items() if v.get("status") == "ok"}
  jobs = job_order(config, cells, with_alignment)
  todo = [c for c in jobs if c.key not in done]
  log(f"study: {len(jobs)} cells, {len(jobs) - len(todo)} already done, workdir {workdir}")
  session = records.Session(workdir, cells_before=len(jobs) - len(todo), cells_total=len(jobs))
  bar = progress.StudyProgress(config, jobs, arms, done, raw=raw, workdir=workdir, log=log)
  log = bar.log  # keeps a terminal's progress bar below the lines
  t0 = time.perf_counter()
  ran = 0
  try:
    oracle = context_lib.oracle(config, raw, workdir, mesh, log, cache=True)
    bar.use_oracle(oracle.record)
    for cell in jobs:
      if cell.key in done:
        continue
      bar.start(cell.key)
      record = run_job(cell, context_getter(config, raw, workdir, mesh, oracle, contexts,
                                            cell, log, arms), raw.train_labels)
      if record["status"] != "ok":
        log(f"{cell.key} FAILED: {record['error']}")
      fileio.append_jsonl(os.path.join(workdir, RESULTS), jsonable(record))
      bar.end(cell.key, record)
      ran += 1
  except BaseException as e:
    bar.close()
    session.close(ran, f"stopped ({type(errors.as_raised(e)).__name__})")
    raise
  bar.close()
  session.close(ran, "finished")
  paths = report.write_report(config, workdir)
  log(f"study finished in {(time.perf_counter() - t0) / 60:.1f} min; report: {paths['report']}")
  return {"report": paths["report"], "seconds": time.perf_counter() - t0}


def auto_workers(workdir: str) -> int:
  """The default ``workers``: how the workdir's cells were computed (0: in one process), or
  for a fresh workdir one worker per CPU."""
  if os.path.exists(os.path.join(workdir, CONFIG_FILE)):
    compute = records.read_compute(workdir)
    computed = (os.path.exists(os.path.join(workdir, "oracle"))
                or os.path.exists(os.path.join(workdir, RESULTS)))
    if compute is not None and not compute.get("engine"):
      return 0
    if compute is None and computed:
      return 0
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _driver_on_cpu() -> None:
  """Keeps this process (which computes nothing) off an accelerator the workers use."""
  if not xla_bridge.backends_are_initialized():
    jax.config.update("jax_platforms", "cpu")


def _run_tasks(config, workdir, raw, cells, with_alignment, retry_failed, log, compute,
               engine, arms):
  """:func:`_run` with every job a task of ``engine``; this process writes the records."""
  results = os.path.join(workdir, RESULTS)
  done = {r["cell"]: r for r in fileio.read_jsonl(results)}
  if retry_failed:
    done = {k: v for k, v in done.items() if v.get("status") == "ok"}
  jobs = job_order(config, cells, with_alignment)
  todo = [c for c in jobs if c.key not in done]
  graph = tasks_lib.graph(config, jobs, arms, done)
  try:  # the longest predicted work first; the plan's order if the cost model fails
    graph = tasks_lib.by_priority(graph, tasks_lib.task_costs(config, graph, arms,
                                                              progress.Sizes.of(raw)))
  except Exception as e:  # noqa: BLE001 - an order, never a reason to stop a study
    log(f"tasks in the plan's order (the cost model failed: {type(e).__name__}: {e})")
  compute = {**compute, "workers": engine.workers, **engine.describe()}
  log(f"study: {len(jobs)} cells, {len(jobs) - len(todo)} already done, workdir {workdir};"
      f" {len(graph)} tasks on {engine.workers} {compute['engine']} workers"
      f" ({compute['xla_cpu_threads']} XLA:CPU thread each)")
  session = records.Session(workdir, cells_before=len(jobs) - len(todo), cells_total=len(jobs),
                            compute=compute)
  bar = progress.StudyProgress(config, jobs, arms, done, raw=raw, workdir=workdir, log=log,
                               parallel=engine.workers, graph=graph,
                               built=artefacts.built(workdir))
  log = bar.log
  spec = tasks_lib.Spec(config, os.path.abspath(workdir), provenance.versions(), raw.digest,
                        compute["xla_cpu_threads"])
  t0 = time.perf_counter()
  ran, nodes = 0, set()

  def on_result(result):
    nonlocal ran
    key, record = result["key"], result["record"]
    nodes.add(result["worker"].get("node") or result["worker"].get("host"))
    if key == tasks_lib.ORACLE:
      if "oracle" not in done:
        fileio.append_jsonl(results, record)
        log(f"oracle test accuracy {record['test_accuracy'][0]:.4f}")
      bar.use_oracle(record)
      return
    if key.startswith(tasks_lib.ARTEFACT):
      if record["status"] != "ok":
        log(f"{key} FAILED: {record['error']}")
      bar.end_shared(key)
      return
    if record["status"] != "ok":
      log(f"{key} FAILED: {record['error']}")
    timing = record.setdefault("timing", {})
    timing["worker"] = result["worker"]  # where it ran
    timing.setdefault("task_seconds", result["seconds"])  # the whole task, in its worker
    fileio.append_jsonl(results, record)
    bar.end(key, record)
    ran += 1

  try:
    engine_lib.run_tasks(engine, spec, graph, done, on_result)
  except BaseException as e:
    bar.close()
    session.close(ran, f"stopped ({type(errors.as_raised(e)).__name__})", nodes=len(nodes))
    engine.close()
    raise
  bar.close()
  session.close(ran, "finished", nodes=len(nodes))
  engine.close()
  with contextlib.suppress(OSError):  # no task works here any more
    os.remove(os.path.join(workdir, tasks_lib.WORKERS_LOCK))
  paths = report.write_report(config, workdir)
  log(f"study finished in {(time.perf_counter() - t0) / 60:.1f} min; report: {paths['report']}")
  return {"report": paths["report"], "seconds": time.perf_counter() - t0}


def _needs_baseline(cell: Cell, arms) -> bool:
  """The baseline cell itself, the C3 alignment and the arms that use its models."""
  return cell.job == ALIGNMENT or cell.arm == "baseline" or arms[cell.arm].needs_baseline


def _failed(cell: Cell, e: BaseException, tb: str | None = None) -> dict[str, Any]:
  rec = {"cell": cell.key, "arm": cell.arm, "base_arm": arms_lib.base_name(cell.arm),
         "status": "failed", "error": f"{type(e).__name__}: {e}", "budget": cell.budget}
  if tb:
    rec["traceback"] = tb
  return rec
