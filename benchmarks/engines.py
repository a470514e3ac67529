"""Ray against Dask distributed as the engine of a study's tasks (docs/design.md).

  python benchmarks/engines.py                         # both engines, every measurement
  python benchmarks/engines.py --only overhead,faults  # some of them
  python benchmarks/engines.py --only study --workers 1,2 --study_arms baseline,classical

Needs both engines in the environment (``pip install ray "dask[distributed]"``);
dreamjax itself depends only on the one chosen. Each measurement runs in a
fresh process. Prints a table, then one JSON object (last line).

* ``startup``: import time; a local cluster of W one-thread workers, from the
  call to the first task's result; its shutdown.
* ``overhead``: 200 independent no-op tasks (wall time per task) and a chain of
  50 tasks each taking the last one's result as its input (latency per link).
* ``memory``: resident memory of the driver and every process the engine
  started, once each worker ran a task that starts JAX and imports the study.
* ``arrays``: a 188 MB float32 array (Fashion-MNIST's training images) shipped
  to a task: put into the engine once, then read by a task; and passed as an
  argument directly.
* ``faults``: a worker SIGKILLed mid-task (is the task rerun, how long it takes);
  the driver SIGKILLed (which of the engine's processes are left, 10 s later).
* ``nodes``: the engine's own way to run several nodes on one machine, three
  one-CPU nodes, six tasks: how long it takes to start and where tasks ran.
* ``study``: the tiny preset's cells (``--study_arms``) as tasks on W local
  workers, wall time and peak memory of the process tree; W = 0 is one process.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ALL = ("startup", "overhead", "memory", "arrays", "faults", "nodes", "study")


def _noop(x=None):
  return x


def _sleep_and_pid(path, seconds):
  with open(path, "a") as f:
    f.write(f"{os.getpid()}\n")
  time.sleep(seconds)
  return os.getpid()


def _use_study():
  """A worker's first study task: JAX started, the study's modules imported."""
  import jax  # pylint: disable=g-import-not-at-top
  import dreamjax.study.run.runner  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return float(jnp.ones(8).sum()) + len(jax.devices())


def _sum(x):
  return float(x.sum())


class Ray:
  name = "ray"

  def __init__(self, workers=None, address=None):
    import ray  # pylint: disable=g-import-not-at-top
    self.ray = ray
    self._remote = {}
    if address:
      ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
      ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)

  def submit(self, fn, *args, retries=3):
    if (fn, retries) not in self._remote:  # one remote function each, as a study has
      self._remote[(fn, retries)] = self.ray.remote(num_cpus=1, max_retries=retries)(fn)
    return self._remote[(fn, retries)].remote(*args)

  def put(self, x):
    return self.ray.put(x)

  def get(self, futures):
    return self.ray.get(futures)

  def node(self):
    return self.ray.get_runtime_context().get_node_id()

  def close(self):
    self.ray.shutdown()


class Dask:
  name = "dask"

  def __init__(self, workers=None, address=None):
    import distributed  # pylint: disable=g-import-not-at-top
    self.cluster = None
    if address:
      self.client = distributed.Client(address)
    else:
      self.cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                              processes=True, dashboard_address=None)
      self.client = distributed.Client(self.cluster)

  def submit(self, fn, *args, retries=3):
    del retries  # a task on a worker that died is rescheduled (distributed.scheduler.allowed-failures)
    return self.client.submit(fn, *args, pure=False)

  def put(self, x):
    return self.client.scatter(x)

  def get(self, futures):
    return self.client.gather(futures)

  def node(self):
    import distributed  # pylint: disable=g-import-not-at-top
    return distributed.get_worker().address

  def close(self):
    self.client.close()
    if self.cluster is not None:
      self.cluster.close()


ENGINES = {"ray": Ray, "dask": Dask}


class DaskStudyEngine:
  """Dask distributed as the study's engine: the adapter of dreamjax.study.run.engine.RayEngine
  (start, submit, as completed, cancel, close) over a LocalCluster of one-thread worker
  processes, kept here to measure it against Ray on the study."""
  name = "dask"

  def __init__(self, workers, address=None, log=print, **unused):
    import distributed  # pylint: disable=g-import-not-at-top
    self.distributed = distributed
    self.cluster = None
    if address:
      self.client = distributed.Client(address)
    else:
      self.cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                              processes=True, dashboard_address=None)
      self.client = distributed.Client(self.cluster)
    self.workers = len(self.client.scheduler_info()["workers"]) or workers

  def describe(self):
    return {}

  def share(self, value):
    return self.client.scatter(value, broadcast=True)

  def submit(self, key, *args):
    return self.client.submit(_dask_study_task, *args, key=key, pure=False)

  def as_completed(self, futures):
    for f in self.distributed.as_completed(futures):
      yield f.result()

  def cancel(self, futures):
    self.client.cancel(futures, force=True)

  def close(self):
    self.client.close()
    if self.cluster is not None:
      self.cluster.close()


def _dask_study_task(spec, task, *inputs):
  import distributed  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import tasks  # pylint: disable=g-import-not-at-top
  os.environ["DREAMJAX_NODE"] = distributed.get_worker().address
  return tasks.run(spec, task, *inputs)


def _tree_rss_mb(pid=None) -> float:
  import psutil  # pylint: disable=g-import-not-at-top
  root = psutil.Process(pid)
  total = 0
  for p in [root, *root.children(recursive=True)]:
    try:
      total += p.memory_info().rss
    except psutil.Error:
      pass
  return total / 2**20


# --- measurements, each in its own process (the --_child flag) ------------------------

def child_startup(engine, workers):
  t0 = time.perf_counter()
  e = ENGINES[engine](workers)
  e.get(e.submit(_noop, 1))
  started = time.perf_counter() - t0
  t0 = time.perf_counter()
  e.close()
  return {"startup_s": started, "shutdown_s": time.perf_counter() - t0}


def child_overhead(engine, workers):
  e = ENGINES[engine](workers)
  e.get([e.submit(_noop, i) for i in range(4 * workers)])  # workers up
  out = {}
  for n in (200,):
    t0 = time.perf_counter()
    e.get([e.submit(_noop, i) for i in range(n)])
    out["independent_ms_per_task"] = (time.perf_counter() - t0) / n * 1000
  t0 = time.perf_counter()
  f = e.submit(_noop, 0)
  for _ in range(49):
    f = e.submit(_noop, f)
  e.get(f)
  out["chain_ms_per_link"] = (time.perf_counter() - t0) / 50 * 1000
  e.close()
  return out


def child_memory(engine, workers):
  before = _tree_rss_mb()
  e = ENGINES[engine](workers)
  e.get([e.submit(_noop, i) for i in range(4 * workers)])
  idle = _tree_rss_mb()
  # One study-like task per worker: each worker then holds JAX and the study's modules.
  e.get([e.submit(_use_study) for _ in range(workers)])
  time.sleep(1)
  used = _tree_rss_mb()
  e.close()
  return {"driver_alone_mb": before, "started_mb": idle, "after_jax_tasks_mb": used}


def child_arrays(engine, workers):
  import numpy as np  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).random((60000, 28, 28, 1), dtype=np.float32)
  e = ENGINES[engine](workers)
  e.get(e.submit(_noop, 1))
  t0 = time.perf_counter()
  ref = e.put(x)
  put_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  e.get(e.submit(_sum, ref))
  first_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  e.get(e.submit(_sum, ref))
  again_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  e.get(e.submit(_sum, x))
  direct_s = time.perf_counter() - t0
  e.close()
  return {"mb": x.nbytes / 2**20, "put_s": put_s, "first_task_s": first_s,
          "second_task_s": again_s, "as_argument_s": direct_s}


def child_killed_worker(engine, workers):
  e = ENGINES[engine](workers)
  e.get([e.submit(_noop, i) for i in range(2 * workers)])
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "pids")
    f = e.submit(_sleep_and_pid, path, 3.0)
    while not os.path.exists(path):
      time.sleep(0.05)
    first = int(open(path).read().split()[0])
    t0 = time.perf_counter()
    os.kill(first, signal.SIGKILL)
    try:
      pid = e.get(f)
      ok = True
    except Exception as ex:  # noqa: BLE001
      pid, ok = repr(ex)[:200], False
    took = time.perf_counter() - t0
    runs = open(path).read().split()
  e.close()
  return {"finished": ok, "runs": len(runs), "rerun_elsewhere": ok and pid != first,
          "seconds_after_kill": took}


def child_driver_for_kill(engine, workers, pidfile):
  e = ENGINES[engine](workers)
  f = [e.submit(_sleep_and_pid, pidfile, 120.0) for _ in range(workers)]
  e.get(f)


def child_killed_driver(engine, workers):
  import psutil  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as d:
    pidfile = os.path.join(d, "pids")
    p = subprocess.Popen([sys.executable, __file__, "--_child", "driver_for_kill", engine,
                          str(workers), pidfile], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    while not os.path.exists(pidfile) or len(open(pidfile).read().split()) < workers:
      time.sleep(0.1)
    tree = [c.pid for c in psutil.Process(p.pid).children(recursive=True)]
    task_pids = [int(x) for x in open(pidfile).read().split()]
    p.kill()
    p.wait()
    out = {"processes_started": len(tree)}
    waited = 0
    for after in (2, 10, 75):
      time.sleep(after - waited)
      waited = after
      alive = [q for q in tree if psutil.pid_exists(q)
               and psutil.Process(q).status() != psutil.STATUS_ZOMBIE]
      out[f"left_after_{after}s"] = sorted(_name(q) for q in alive)
      out[f"task_workers_left_after_{after}s"] = sum(q in alive for q in task_pids)
    for q in tree:  # what the engine left behind, ended here
      try:
        os.kill(q, signal.SIGKILL)
      except OSError:
        pass
  return out


def _name(pid) -> str:
  import psutil  # pylint: disable=g-import-not-at-top
  try:
    cmd = psutil.Process(pid).cmdline()
  except psutil.Error:
    return "?"
  return " ".join(os.path.basename(c) for c in cmd[:2])[:60]


def child_nodes(engine):
  t0 = time.perf_counter()
  if engine == "ray":
    from ray.cluster_utils import Cluster  # pylint: disable=g-import-not-at-top
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                             "include_dashboard": False})
    for _ in range(2):
      cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    e = Ray(address=cluster.address)
    stop = cluster.shutdown
  else:
    # Dask has no node of its own: a "node" is a `dask worker` process on some host.
    port = _free_port()
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    procs = [subprocess.Popen([dask, "scheduler", "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs += [subprocess.Popen([dask, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                                "--name", f"node{i}", "--no-dashboard"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
              for i in range(3)]
    e = Dask(address=f"tcp://127.0.0.1:{port}")
    e.client.wait_for_workers(3)

    def stop():
      for q in procs:
        q.terminate()
      for q in procs:
        q.wait()
  where = e.get([e.submit(_where_slow, 0.5) for _ in range(6)])
  started = time.perf_counter() - t0
  e.close()
  stop()
  return {"start_and_6_tasks_s": started, "nodes_used": len(set(where))}


def _where_slow(seconds):
  time.sleep(seconds)
  try:
    import ray  # pylint: disable=g-import-not-at-top
    if ray.is_initialized():
      return ray.get_runtime_context().get_node_id()
  except ImportError:
    pass
  import distributed  # pylint: disable=g-import-not-at-top
  return distributed.get_worker().address


def _free_port() -> int:
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def child_study(engine, workers, workdir, arms, preset="tiny", overrides="{}"):
  import dreamjax  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from dreamjax.configs import study as study_configs  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import runner  # pylint: disable=g-import-not-at-top
  cfg = study_configs.get_config(preset)
  cfg.arms = tuple(arms.split(","))
  for dotted, value in json.loads(overrides).items():
    *parents, last = dotted.split(".")
    node = cfg
    for part in parents:
      node = node[part]
    node[last] = tuple(value) if isinstance(value, list) else value
  peak = [0.0]
  stop = threading.Event()

  def watch():
    while not stop.is_set():
      peak[0] = max(peak[0], _tree_rss_mb())
      time.sleep(0.5)
  threading.Thread(target=watch, daemon=True).start()
  t0 = time.perf_counter()
  from dreamjax.study.run import engine as engine_lib  # pylint: disable=g-import-not-at-top
  factory = {"ray": engine_lib.RayEngine, "dask": DaskStudyEngine}[engine]
  runner.run_study(cfg, workdir, workers=int(workers), engine=factory, log=lambda m: None)
  wall = time.perf_counter() - t0
  stop.set()
  from dreamjax.study.run import progress  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, "results.jsonl")) as f:
    records = [json.loads(line) for line in f]
  cells = [r for r in records if r["cell"] != "oracle"]
  cell_s = {r["cell"]: progress.record_seconds(r) for r in cells}
  return {"wall_s": wall, "peak_rss_mb": peak[0], "cells": len(cells),
          "cells_per_min": len(cells) / (wall / 60), "failed": sum(
              r["status"] != "ok" for r in records),
          "oracle_train_s": next(((r.get("timing") or {}).get("train_seconds")
                                  for r in records if r["cell"] == "oracle"), None),
          "cell_seconds": cell_s, "load_average": os.getloadavg()}


CHILDREN = {"startup": child_startup, "overhead": child_overhead, "memory": child_memory,
            "arrays": child_arrays, "killed_worker": child_killed_worker,
            "killed_driver": child_killed_driver, "driver_for_kill": child_driver_for_kill,
            "nodes": child_nodes, "study": child_study}


def run_child(*args, timeout=1800):
  res = subprocess.run([sys.executable, __file__, "--_child", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout, cwd=HERE)
  if res.returncode:
    return {"error": res.stderr[-800:]}
  return json.loads(res.stdout.strip().splitlines()[-1])


def import_seconds(module: str, repeats: int = 3) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    times.append(time.perf_counter() - t0)
  return sorted(times)[len(times) // 2]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--engines", default="ray,dask")
  p.add_argument("--workers", default="1,2", help="comma list of local worker counts")
  p.add_argument("--only", default=",".join(ALL))
  p.add_argument("--study_arms", default="baseline,classical,vae_pool,dream_subtle")
  p.add_argument("--study_preset", default="tiny", help="study config preset of the study runs")
  p.add_argument("--study_set", default="{}",
                 help='JSON of config overrides, e.g. {"train.steps": 400, "num_seeds": 3}')
  p.add_argument("--study_workers", default="0,1,2",
                 help="worker counts of the study runs (0: one process, engine unused)")
  p.add_argument("--json_out", default="")
  p.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args._child:  # pylint: disable=protected-access
    name, *rest = args._child  # pylint: disable=protected-access
    rest = [int(a) if a.isdigit() else a for a in rest]  # worker counts
    print(json.dumps(CHILDREN[name](*rest)))
    return
  only = args.only.split(",")
  engines = args.engines.split(",")
  workers = [int(w) for w in args.workers.split(",")]
  out = {"machine": _machine(), "results": {}}
  for engine in engines:
    r = out["results"].setdefault(engine, {})
    if "startup" in only:
      r["import_s"] = import_seconds({"ray": "ray", "dask": "distributed"}[engine])
      r["startup"] = {w: run_child("startup", engine, w) for w in workers}
    if "overhead" in only:
      r["overhead"] = {w: run_child("overhead", engine, w) for w in workers}
    if "memory" in only:
      r["memory"] = {w: run_child("memory", engine, w) for w in workers}
    if "arrays" in only:
      r["arrays"] = run_child("arrays", engine, 1)
    if "faults" in only:
      r["killed_worker"] = run_child("killed_worker", engine, 2)
      r["killed_driver"] = run_child("killed_driver", engine, 2)
    if "nodes" in only:
      r["nodes"] = run_child("nodes", engine)
    _print(engine, r)
  if "study" in only:
    study = out["results"].setdefault("study", {})
    for w in [int(x) for x in args.study_workers.split(",")]:
      for engine in (engines if w else ["none"]):
        with tempfile.TemporaryDirectory() as d:
          key = f"{engine}/{w}"
          study[key] = run_child("study", engine if w else "ray", w, os.path.join(d, "w"),
                                 args.study_arms, args.study_preset, args.study_set)
          print(f"study {key}: {study[key]}", flush=True)
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(out, f, indent=1)
  print(json.dumps(out))


def _print(engine, r):
  for k, v in r.items():
    print(f"{engine:5s} {k:14s} {json.dumps(v)}", flush=True)


def _machine():
  import platform  # pylint: disable=g-import-not-at-top
  versions = {}
  for name in ("ray", "dask", "distributed", "jax", "jaxlib"):
    try:
      import importlib.metadata as md  # pylint: disable=g-import-not-at-top
      versions[name] = md.version(name)
    except Exception:  # noqa: BLE001
      versions[name] = None
  return {"platform": platform.platform(), "cpus": os.cpu_count(), "versions": versions,
          "load_average": os.getloadavg()}


if __name__ == "__main__":
  main()
