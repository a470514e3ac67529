"""The study's jobs as Ray tasks: the same numbers with any number of workers or nodes,
faults of workers and of the driver, and the task graph's inputs."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from conftest import REPO, finished_run
from dreamjax.plumbing import lock
from dreamjax.configs import arms as arms_lib
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import read_jsonl
from dreamjax.study import cost
from dreamjax.study import plan as plan_lib
from dreamjax.study import records as records_lib
from dreamjax.study.run import runner, tasks
from test_study import _comparable

SCRIPT = os.path.join(REPO, "experiments", "study.py")
# Every kind of input a task takes: the oracle, a budget's baseline (dream_subtle, the
# C3 alignment), a shared pool model (vae_pool), the copies of a smaller M
# (classical/M2), and a baseline at more labels (N200/baseline).
ARMS = ("baseline", "classical", "vae_pool", "dream_subtle")


# Ray's cluster utility, in a process of its own: in this one it would leave Ray's gRPC
# client threads behind, and a later test's thread start (an orbax checkpoint save) once
# hung on them.
_CLUSTER = """
import json, sys
from ray.cluster_utils import Cluster
head, extra = json.loads(sys.argv[1]), int(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args=head)
for _ in range(extra):
  cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print("address", cluster.address, flush=True)
sys.stdin.read()
cluster.shutdown()
"""


@contextlib.contextmanager
def _ray_cluster(head_node_args, extra_nodes=0):
  """The address of a local Ray cluster (Ray's utility) run by a child process."""
  proc = subprocess.Popen([sys.executable, "-c", _CLUSTER, json.dumps(head_node_args),
                           str(extra_nodes)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True, cwd=REPO)
  try:
    line = ""
    for line in proc.stdout:
      if line.startswith("address "):
        break
    assert line.startswith("address "), "the cluster did not start"
    yield line.split()[1]
  finally:
    proc.stdin.close()
    try:
      proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
      proc.kill()


def _cmd(workdir, *extra, arms=ARMS):
  return [sys.executable, SCRIPT, "--config", "dreamjax/configs/study.py:tiny",
          f"--workdir={workdir}", "--config.arms=" + repr(tuple(arms)).replace(" ", ""),
          *extra]


def _results(workdir):
  return read_jsonl(os.path.join(workdir, "results.jsonl"))


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, real_data_dir):
  """A tiny study run on two local Ray workers (the default on this 2-CPU machine)."""
  del real_data_dir
  return finished_run(tmp_path_factory, "two_workers", lambda w: _cmd(w, "--workers=2"),
                      timeout=900)


def test_one_and_two_workers_give_the_same_results(two_workers, tmp_path):
  """Each worker runs XLA:CPU on one thread, so the numbers do not depend on how many
  workers share the jobs, nor on which ran which; the driver alone wrote the records."""
  one = str(tmp_path / "one")
  out = subprocess.run(_cmd(one, "--workers=1"), capture_output=True, text=True, cwd=REPO,
                       timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  a, b = _results(one), _results(two_workers)
  cfg = study_configs.get_config("tiny")
  cfg.arms = ARMS
  keys = {c.key for c in plan_lib.jobs(cfg, arms_lib.resolve(cfg))}
  assert sorted(r["cell"] for r in b) == sorted(keys | {"oracle"})  # each once
  assert _comparable(a) == _comparable(b)
  assert all(r["status"] == "ok" for r in b), [r.get("error") for r in b]
  for workdir, workers in ((one, 1), (two_workers, 2)):
    record = json.load(open(os.path.join(workdir, "study_config.json")))
    assert record["compute"] == {"engine": "ray", "xla_cpu_threads": 1}
    (session,) = records_lib.read_sessions(workdir)
    assert session["compute"]["workers"] == workers and session["status"] == "finished"
    ran = [r["timing"]["worker"] for r in _results(workdir) if r["cell"] != "oracle"]
    assert {w["xla_cpu_threads"] for w in ran} == {1}
    assert len({w["pid"] for w in ran}) == workers  # every worker ran cells
    assert os.path.getsize(os.path.join(workdir, "REPORT.md")) > 0
    assert not os.path.exists(os.path.join(workdir, tasks.WORKERS_LOCK))


_HASH = r"""
import hashlib, json, os, sys
mode = sys.argv[1]
cpus = sorted(os.sched_getaffinity(0))
if mode == "pinned":  # a process that may run on one CPU: XLA sizes its pool to one thread
  os.sched_setaffinity(0, cpus[:1])
import dreamjax, jax, numpy as np
from dreamjax import _xla
from dreamjax.training import models, train
from dreamjax.configs import study
if mode == "fixed":
  _xla.fix_cpu_threads(1)
cfg = study.get_config("quick")
rng = np.random.default_rng(0)
x = rng.random((5, 1000, 28, 28, 1), dtype=np.float32)
y = rng.integers(0, 10, (5, 1000)).astype(np.int32)
t = cfg.train.copy_and_resolve_references()
t.steps, t.warmup_steps, t.log_every, t.eval_every, t.checkpoint_every = 8, 1, 8, 0, 0
res = train.fit(models.make_model(cfg.model, 10), t, x, y, seeds=range(5), mesh=None,
                progress=lambda m: None)
leaves = jax.tree.leaves(jax.device_get(res.state.variables))
allowed = set()
for tid in os.listdir("/proc/self/task"):
  allowed.add(len(os.sched_getaffinity(int(tid))))
print(json.dumps({"hash": hashlib.sha256(b"".join(np.asarray(l).tobytes()
                                                  for l in leaves)).hexdigest(),
                  "threads_cpus": sorted(allowed), "cpus": len(cpus)}))
"""


def test_a_fixed_thread_count_gives_a_one_cpu_process_numbers_on_every_core(tmp_path):
  """fix_cpu_threads(1) computes what a process confined to one CPU computes (XLA sizes
  its thread pool from the CPUs it may use), while every thread may still use every
  CPU; a process on two CPUs computes other last bits."""
  if len(os.sched_getaffinity(0)) < 2:
    pytest.skip("needs a machine with 2 CPUs or more")
  script = tmp_path / "hash.py"
  script.write_text(_HASH)
  out = {}
  for mode in ("fixed", "pinned", "free"):
    res = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                         cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
  assert out["fixed"]["hash"] == out["pinned"]["hash"]
  assert out["free"]["hash"] != out["pinned"]["hash"]  # the thread count does move the bits
  assert out["fixed"]["threads_cpus"] == [out["fixed"]["cpus"]]  # no thread left confined


def _watch(proc, pattern, on_match, lines):
  """Reads ``proc``'s stderr into ``lines``; calls ``on_match(match)`` on the first match."""
  matched = False
  for line in iter(proc.stderr.readline, ""):
    lines.append(line)
    m = None if matched else re.search(pattern, line)
    if m:
      matched = True
      on_match(m)


def test_a_worker_killed_mid_cell_reruns_it_and_the_study_ends_with_the_same_numbers(
    two_workers, tmp_path):
  workdir = str(tmp_path / "w")
  proc = subprocess.Popen(_cmd(workdir, "--workers=2"), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  killed, lines = [], []

  def kill(m):  # the worker training N100/classical, at its first progress line
    killed.append(int(m.group(1)))
    os.kill(killed[0], signal.SIGKILL)
  watchdog = threading.Timer(900, proc.kill)
  watchdog.start()
  _watch(proc, r"\(N100/classical pid=(\d+)\) N100/classical: step", kill, lines)
  proc.wait()
  watchdog.cancel()
  assert proc.returncode == 0, "".join(lines)[-4000:]
  assert killed, "no worker trained N100/classical"
  records = _results(workdir)
  assert sorted(r["cell"] for r in records) == sorted(r["cell"] for r in _results(two_workers))
  assert _comparable(records) == _comparable(_results(two_workers))
  cell = next(r for r in records if r["cell"] == "N100/classical")
  assert cell["timing"]["worker"]["pid"] != killed[0]  # rerun by another worker process


def test_the_driver_stopped_or_killed_leaves_a_workdir_that_resumes_to_the_same_numbers(
    two_workers, tmp_path):
  """SIGTERM of the driver stops its workers and records the run as stopped; SIGKILL
  takes them down too (they stop writing at once or within seconds). Each time the same
  command, run at once, resumes (waiting for any worker still there) and ends with the
  numbers of an uninterrupted run."""
  workdir = str(tmp_path / "w")
  for sig, after in ((signal.SIGTERM, r"\] N100/baseline done"), (signal.SIGKILL, r"\] \S+ done")):
    proc = subprocess.Popen(_cmd(workdir, "--workers=2"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    watchdog = threading.Timer(900, proc.kill)
    watchdog.start()
    _watch(proc, after, lambda m, p=proc, s=sig: p.send_signal(s), lines)
    proc.wait()
    watchdog.cancel()
    assert proc.returncode == {signal.SIGTERM: 143, signal.SIGKILL: -9}[sig], (
        "".join(lines)[-3000:])
    if sig == signal.SIGTERM:
      assert "rerun the same command to resume" in "".join(lines)
  before = {r["cell"] for r in _results(workdir)}
  assert "N100/baseline" in before and len(before) < len(_results(two_workers))
  out = subprocess.run(_cmd(workdir, "--workers=2"), capture_output=True, text=True,
                       cwd=REPO, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  assert f"{len(before) - 1} already done" in out.stderr  # the oracle is no job
  assert _comparable(_results(workdir)) == _comparable(_results(two_workers))
  assert [s["status"] for s in records_lib.read_sessions(workdir)] == [
      "stopped (Terminated)", "finished"]  # SIGKILL: no line


def test_a_second_driver_on_a_busy_workdir_is_refused_before_it_starts_workers(tmp_path):
  workdir = str(tmp_path / "w")
  with lock.workdir_lock(workdir):  # this process plays the first driver
    out = subprocess.run(_cmd(workdir, "--workers=2"), capture_output=True, text=True,
                         cwd=REPO, timeout=300)
  assert out.returncode == 2
  assert "is in use: another study runs there" in out.stderr
  assert "Ray" not in out.stderr and "Traceback" not in out.stderr


def test_cells_run_on_the_nodes_of_a_simulated_cluster(two_workers, tmp_path):
  """Ray's own local cluster utility: three one-CPU nodes on this machine, joined by
  --engine_address. Cells run on several of them, and give the two workers' numbers."""
  with _ray_cluster({"num_cpus": 1, "include_dashboard": False}, extra_nodes=2) as address:
    workdir = str(tmp_path / "w")
    out = subprocess.run(_cmd(workdir, f"--engine_address={address}",
                              arms=("baseline", "classical")),
                         capture_output=True, text=True, cwd=REPO, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  records = _results(workdir)
  nodes = {r["timing"]["worker"]["node"] for r in records if r["cell"] != "oracle"}
  assert len(nodes) >= 2, nodes
  (session,) = records_lib.read_sessions(workdir)
  assert session["compute"]["nodes_in_cluster"] == 3
  assert session["compute"]["address"] == address
  reference = {r["cell"]: r for r in _results(two_workers)}
  assert _comparable(records) == _comparable([reference[r["cell"]] for r in records])


def test_the_task_graph_takes_each_jobs_inputs():
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "classical", "vae_pool", "vae_pool_online", "dream_subtle",
              "deep_dream_subtle", "ae_pretrain")
  assert cfg.pool_generators == cfg.num_seeds == 2  # each seed its own pool generator
  arms = arms_lib.resolve(cfg)
  jobs = plan_lib.jobs(cfg, arms)
  graph = {t.key: t for t in tasks.graph(cfg, jobs, arms, {})}
  pool = ("artefact/vae_pool", "artefact/vae_pool_g1")
  assert set(graph) == {c.key for c in jobs} | {
      "oracle", *pool, "artefact/pool_dreamer", "artefact/ae_pretrain"}
  assert graph["N100/baseline"].needs == ("oracle",)
  assert graph["N200/baseline"].needs == ("oracle",)  # the exchange rate's own baseline
  assert graph["N100/classical"].needs == ("oracle",)
  assert graph["N100/dream_subtle"].needs == ("oracle", "N100/baseline")
  assert graph["N100/alignment"].needs == ("oracle", "N100/baseline")
  assert graph["N100/vae_pool"].needs == ("oracle", "N100/baseline", *pool)
  assert graph["N100/vae_pool_online"].needs[-2:] == pool  # its stored twin's generators
  assert graph["artefact/vae_pool_g1"].model == tasks.SharedModel(
      "vae_pool_g1", "pool_generator", "vae_pool", 1)
  assert graph["N100/deep_dream_subtle"].needs == ("oracle", "artefact/pool_dreamer")
  assert graph["N100/ae_pretrain"].needs == ("oracle", "artefact/ae_pretrain")
  assert graph["N100/classical/M2"].after == ("N100/classical",)
  assert graph["N100/vae_pool/M2"].after == ()  # vae_pool reuses no copies
  assert all(graph[k].inputs == () for k in pool)
  # Inputs in the order of the graph (an engine needs a task's inputs submitted first),
  # and a job done before is no task: its record is the input.
  order = list(graph)
  assert all(order.index(k) < order.index(t.key) for t in graph.values() for k in t.inputs)
  done = {"oracle": {"cell": "oracle"}, "N100/baseline": {"cell": "N100/baseline",
                                                           "status": "failed"}}
  rest = {t.key: t for t in tasks.graph(cfg, jobs, arms, done)}
  assert "N100/baseline" not in rest and "oracle" in rest  # workers restore the oracle
  futures = {k: f"future:{k}" for k in rest}
  assert tasks.inputs_of(rest["N100/dream_subtle"], futures, done) == [
      "future:oracle", done["N100/baseline"]]


def test_tasks_go_to_the_engine_longest_predicted_work_first_inputs_still_first():
  """The submission order: every task after its inputs, and a long job that the plan puts
  last (here its own cost, then what waits on it) handed over before the short ones."""
  t = tasks.Task
  graph = [t("oracle"), t("artefact/g", model=tasks.SharedModel("g", "pool_generator", "a")),
           t("N1/baseline", needs=("oracle",)), t("N1/short", needs=("oracle",)),
           t("N1/reads_baseline", needs=("oracle", "N1/baseline")),
           t("N1/long", needs=("oracle", "artefact/g")), t("N1/tie", needs=("oracle",))]
  costs = {"oracle": 5, "artefact/g": 1, "N1/baseline": 2, "N1/short": 1,
           "N1/reads_baseline": 3, "N1/long": 10, "N1/tie": 1}
  order = [x.key for x in tasks.by_priority(graph, costs)]
  assert order == ["oracle", "artefact/g", "N1/long", "N1/baseline", "N1/reads_baseline",
                   "N1/short", "N1/tie"]  # the baseline's chain (2 + 3) beats N1/short's
  assert sorted(order) == sorted(x.key for x in graph)
  # Without costs, the plan's order.
  assert [x.key for x in tasks.by_priority(graph, {})] == [x.key for x in graph]


def test_a_small_generators_twins_train_it_once():
  """A fresh-sample arm runs after its stored twin, whose kept generators it reads, and
  the cost model charges their training to the twin alone; a twin later in the plan
  leaves the fresh arm to train (and keep) them."""
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "vae_small", "vae_small_online", "diffusion_small_online",
              "diffusion_small")
  arms = arms_lib.resolve(cfg)
  jobs = plan_lib.jobs(cfg, arms)
  graph = {t.key: t for t in tasks.graph(cfg, jobs, arms, {})}
  assert graph["N100/vae_small_online"].after == ("N100/vae_small",)
  assert graph["N100/vae_small"].after == ()
  assert graph["N100/diffusion_small_online"].after == ()  # its twin comes later
  assert graph["N100/diffusion_small"].after == ()
  costs = cost.job_costs(cfg, jobs, arms)

  def alone(arm):
    return cost.job_costs(cfg, [j for j in jobs if j.arm == arm], arms)[f"N100/{arm}"]

  def trains(arm):
    return cfg.num_seeds * cost.generator_work(arms[arm])

  assert costs["N100/vae_small"] == alone("vae_small")
  assert costs["N100/vae_small_online"] == pytest.approx(alone("vae_small_online")
                                                         - trains("vae_small"))
  assert costs["N100/diffusion_small_online"] == alone("diffusion_small_online")
  assert costs["N100/diffusion_small"] == pytest.approx(alone("diffusion_small")
                                                        - trains("diffusion_small"))


@pytest.mark.parametrize("preset", ["first", "quick", "conclusions"])
def test_a_preset_s_tasks_by_priority_keep_every_input_first(preset):
  cfg = study_configs.get_config(preset)
  arms = arms_lib.resolve(cfg)
  graph = tasks.graph(cfg, plan_lib.jobs(cfg, arms), arms, {})
  costs = tasks.task_costs(cfg, graph, arms)
  assert set(costs) == {x.key for x in graph} and all(c >= 0 for c in costs.values())
  order = tasks.by_priority(graph, costs)
  position = {x.key: i for i, x in enumerate(order)}
  assert len(order) == len(graph)
  assert all(position[k] < position[x.key] for x in order for k in x.inputs)
  # The costliest job goes before the cheaper ones that wait on nothing but the oracle.
  cells = [x for x in order if x.cell is not None and x.inputs == ("oracle",)]
  assert costs[cells[0].key] == max(costs[x.key] for x in cells)


def test_the_schedule_of_tasks_on_workers():
  t = tasks.Task
  graph = [t("oracle"), t("a", needs=("oracle",)), t("b", needs=("oracle",)),
           t("c", needs=("oracle", "a"))]
  seconds = {"oracle": 2.0, "a": 3.0, "b": 4.0, "c": 1.0}
  one = tasks.schedule(graph, seconds, 1)
  assert one["makespan_s"] == pytest.approx(10.0) and one["busy_fraction"] == pytest.approx(1.0)
  two = tasks.schedule(graph, seconds, 2)  # a and b side by side after the oracle, then c
  assert two["makespan_s"] == pytest.approx(6.0)
  assert two["critical_path_s"] == pytest.approx(6.0)
  assert [k for k, _ in two["critical_path"]] in (["oracle", "a", "c"], ["oracle", "b"])
  assert tasks.schedule(graph, seconds, 2, startup=1.0)["makespan_s"] == pytest.approx(7.0)


def test_a_study_s_wall_time_on_workers_lies_between_its_work_over_them_and_its_work():
  cfg = study_configs.get_config("first")
  arms = arms_lib.resolve(cfg)
  jobs = plan_lib.jobs(cfg, arms)
  work = tasks.wall_seconds(cfg, jobs, arms, {}, 1e-4, workers=1)
  two = tasks.wall_seconds(cfg, jobs, arms, {}, 1e-4, workers=2)
  assert work / 2 <= two < work
  # A restored oracle and pool dreamer cost nothing; finished cells are no tasks.
  done = {"oracle": {}, "N1000/baseline": {}}
  assert tasks.wall_seconds(cfg, jobs, arms, done, 1e-4, 1, built=["pool_dreamer"]) < work
  assert tasks.wall_seconds(cfg, jobs, arms, {c.key: {} for c in jobs} | {"oracle": {}},
                            1e-4, 2, built=["pool_dreamer"]) == 0.0


def test_a_workdir_is_computed_one_way(tmp_path, monkeypatch):
  """Workers (one XLA thread each) and one process (all CPUs) split convolutions
  differently: a workdir keeps the way its first cells were computed, by default, and
  refuses the other."""
  workdir = str(tmp_path / "w")
  os.makedirs(workdir)
  with open(os.path.join(workdir, "study_config.json"), "w") as f:
    json.dump({"config": {}, "compute": {"engine": "ray", "xla_cpu_threads": 1}}, f)
  with open(os.path.join(workdir, "results.jsonl"), "w") as f:
    f.write(json.dumps({"cell": "oracle"}) + "\n")
  with pytest.raises(ConfigError, match=r"by worker processes.*rerun with --workers=1 or more"):
    records_lib.check_compute(workdir, {"engine": "", "xla_cpu_threads": 2})
  records_lib.check_compute(workdir, {"engine": "ray", "xla_cpu_threads": 1})
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
  assert runner.auto_workers(workdir) == 3
  with open(os.path.join(workdir, "study_config.json"), "w") as f:
    json.dump({"config": {}}, f)  # made before workers existed: in one process
  assert runner.auto_workers(workdir) == 0
  with pytest.raises(ConfigError, match=r"in one process.*rerun with --workers=0"):
    records_lib.check_compute(workdir, {"engine": "ray", "xla_cpu_threads": 1})
  assert runner.auto_workers(str(tmp_path / "fresh")) == 3


def test_workers_sharing_a_gpu_get_their_share_of_its_memory(monkeypatch):
  """On a GPU node, each worker asks Ray for 1 / workers_per_gpu of a GPU and gets that
  share of XLA's default memory fraction, unless the user chose one."""
  from dreamjax.study.run import engine  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  monkeypatch.setenv("DREAMJAX_DATA_DIR", "/data/fmnist")
  env = engine.worker_env(gpu_share=0.5)
  assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.375"
  assert env["DREAMJAX_DATA_DIR"] == "/data/fmnist"
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in engine.worker_env()  # no GPU: nothing
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.2")
  assert engine.worker_env(gpu_share=0.5)["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.2"


def test_a_gpu_node_runs_workers_per_gpu_workers_each_with_its_share(tmp_path, real_data_dir):
  """A node that says it has one GPU (Ray's local cluster utility; the jobs still
  compute on the CPU here): two workers share it, each told its GPU and half of XLA's
  default memory fraction."""
  del real_data_dir
  with _ray_cluster({"num_cpus": 3, "num_gpus": 1, "include_dashboard": False}) as address:
    workdir = str(tmp_path / "w")
    env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_MEM_FRACTION"}
    out = subprocess.run(_cmd(workdir, f"--engine_address={address}", "--workers_per_gpu=2",
                              arms=("baseline",)),
                         capture_output=True, text=True, cwd=REPO, timeout=900, env=env)
  assert out.returncode == 0, out.stderr[-4000:]
  (session,) = records_lib.read_sessions(workdir)
  assert session["compute"]["workers"] == 2 and session["compute"]["gpu_share"] == 0.5
  ran = [r["timing"]["worker"] for r in _results(workdir) if r["cell"] != "oracle"]
  assert ran and all(w["gpus"] == "0" and w["gpu_memory_fraction"] == "0.375" for w in ran)


def test_recheck_of_a_workers_cell_computes_with_their_thread_count(two_workers, tmp_path):
  """--recheck recomputes a cell in its own process, with the XLA thread count the
  workdir's workers had, so a cell computed by workers rechecks identical."""
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "w")
  shutil.copytree(two_workers, workdir)
  out = subprocess.run(_cmd(workdir, "--recheck=N100/classical"), capture_output=True,
                       text=True, cwd=REPO, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "identical to its record" in out.stdout
