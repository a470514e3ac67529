"""A study's wall time on a cluster of N nodes, on paper, from a finished study's cell times.

  python benchmarks/cluster_scaling.py docs/results/conclusions --nodes 1,2,8,64 --cores 2
  python benchmarks/cluster_scaling.py WORKDIR --worker_speed 0.67 --startup_s 20

Reads a study folder's ``results.jsonl`` (each job's measured seconds,
``progress.record_seconds``) and ``study_config.json`` (its plan), builds the
task graph the study runs on Ray (``dreamjax.study.run.tasks.graph``: the oracle,
shared pool models, baselines, the cells that need them) and schedules it on
``nodes × cores`` one-thread workers as Ray would: a task starts on a free
worker as soon as its inputs exist, in the order the driver submits it (longest
predicted chain first, ``tasks.by_priority``; the column "plan order" schedules
the tasks in the plan's order, as the driver submitted them before 2026-12-07).

The cost of a job on a one-thread worker is its recorded seconds divided by
``--worker_speed``: a one-thread worker's speed relative to the process that
recorded the times (for a study run in one process on 2 cores, measure it with
``benchmarks/engines.py --only study``). A shared model (pool generator,
pretrained trunk, pool dreamer) becomes its own task, costed at the training
seconds its first cell recorded; that cell's cost loses them. ``--startup_s``
adds, once per worker, the time a worker takes before its first job (JAX, the
data, the oracle restored, its first compilations). Nothing else (the
driver, file traffic on shared storage) is modelled. Prints a table, then one
JSON object.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402

from dreamjax.configs import arms as arms_lib  # noqa: E402
from dreamjax.study import records  # noqa: E402
from dreamjax.study.run import progress, runner, tasks  # noqa: E402


def job_seconds(folder: str) -> tuple[list[tasks.Task], dict[str, float]]:
  """The study's tasks and each one's recorded seconds (in the recording process)."""
  with open(os.path.join(folder, "study_config.json")) as f:
    recorded = json.load(f)
  config = ml_collections.ConfigDict(records.upgrade_config(recorded["config"]))
  config.arms = tuple(a for a in config.arms if arms_lib.base_name(a) in arms_lib.REGISTRY)
  by_key = {}
  with open(os.path.join(folder, "results.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      by_key[r["cell"]] = r
  arms = arms_lib.resolve(config)
  jobs = runner.job_order(config, runner.plan(config, arms), runner.has_alignment(arms))
  missing = [c.key for c in jobs if c.key not in by_key]  # jobs its version did not have
  if missing:
    print(f"{folder}: no record of {len(missing)} jobs of today's plan, left out: {missing}")
  graph = tasks.graph(config, [c for c in jobs if c.key in by_key], arms, {})
  cost = {}
  oracle = by_key.get("oracle", {}).get("timing", {})
  cost[tasks.ORACLE] = float(oracle.get("train_seconds", 0.0))
  trained, untimed = set(), []
  for task in graph:
    if task.cell is None:
      continue
    r = by_key[task.key]
    seconds = progress.record_seconds(r)
    if seconds is None:  # a failed job, or one that recorded no time (older C3 alignments)
      untimed.append(task.key)
      seconds = 0.0
    models = (tasks.shared_models(config, arms[task.cell.arm])
              if task.cell.job != "alignment" else [])
    new = [m for m in models if m.name not in trained]
    if new:  # in one process, this cell trained them
      trained.update(m.name for m in new)
      gen, timing = r.get("generation") or {}, r.get("timing") or {}
      each = timing.get("pool_generator_seconds")
      if isinstance(each, dict):  # a study of G pool generators: each one's own time
        shared = {m.name: float(each.get(str(m.index), 0.0)) for m in new}
      else:
        total = float(each or gen.get("generator_train_seconds")
                      or gen.get("dreamer_pretrain_seconds") or timing.get("gen_seconds", 0.0))
        shared = {m.name: total / len(new) for m in new}
      scale = min(1.0, seconds / max(sum(shared.values()), 1e-9))  # never more than the cell
      for name, s in shared.items():
        cost[tasks.ARTEFACT + name] = s * scale
      seconds -= sum(shared.values()) * scale
    cost[task.key] = seconds
  for task in graph:
    cost.setdefault(task.key, 0.0)
  if untimed:
    print(f"{folder}: {len(untimed)} jobs recorded no time, costed 0: {untimed}")
  return graph, cost


def schedule(graph: list[tasks.Task], cost: dict[str, float], workers: int,
             speed: float, startup: float) -> dict[str, float]:
  """Makespan of ``graph`` on ``workers`` one-thread workers of ``speed``
  (:func:`dreamjax.study.run.tasks.schedule`, the estimate the study itself makes),
  and the critical path (infinitely many workers)."""
  return tasks.schedule(graph, {k: v / speed for k, v in cost.items()}, workers, startup)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("folder", help="a finished study's folder (results.jsonl, study_config.json)")
  p.add_argument("--nodes", default="1,2,8,64", help="comma list of node counts")
  p.add_argument("--cores", type=int, default=2, help="one-thread workers per node")
  p.add_argument("--worker_speed", type=float, default=1.0,
                 help="a one-thread worker's speed over the process that recorded the times")
  p.add_argument("--startup_s", type=float, default=0.0,
                 help="seconds before a worker's first job")
  args = p.parse_args()
  graph, cost = job_seconds(args.folder)
  cells = sum(t.cell is not None for t in graph)
  out = {"folder": args.folder, "cells": cells, "tasks": len(graph),
         "work_s": sum(cost.values()) / args.worker_speed, "cores_per_node": args.cores,
         "worker_speed": args.worker_speed, "startup_s": args.startup_s, "nodes": {}}
  print(f"{args.folder}: {cells} jobs (cells, alignments), {len(graph)} tasks, {out['work_s'] / 60:.1f} worker-min"
        f" of work; {args.cores} one-thread workers per node")
  print(f"{'nodes':>6} {'workers':>8} {'wall':>10} {'cells/min':>10} {'busy':>6} {'plan order':>10}")
  for n in (int(x) for x in args.nodes.split(",")):
    s = schedule(tasks.by_priority(graph, cost), cost, n * args.cores, args.worker_speed,
                 args.startup_s)
    s["cells_per_min"] = cells / (s["makespan_s"] / 60)
    s["plan_order_makespan_s"] = schedule(graph, cost, n * args.cores, args.worker_speed,
                                          args.startup_s)["makespan_s"]
    out["nodes"][n] = s
    print(f"{n:>6} {n * args.cores:>8} {s['makespan_s'] / 60:>8.1f} m {s['cells_per_min']:>10.2f}"
          f" {s['busy_fraction']:>6.0%} {s['plan_order_makespan_s'] / 60:>8.1f} m")
  print(f"critical path (unlimited workers): {s['critical_path_s'] / 60:.1f} min: " + " → ".join(
      f"{k} {v / 60:.1f}" for k, v in s["critical_path"]))
  print(json.dumps(out))


if __name__ == "__main__":
  main()
