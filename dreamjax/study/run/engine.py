"""The distributed engine that runs a study's tasks: Ray, on local workers or a cluster.

Ray was measured against Dask distributed on the study before it was chosen
(docs/design.md, benchmarks/engines.py). This module is the thin adapter the
runner uses (start, submit, as completed, close); the tasks and their
inputs are :mod:`dreamjax.study.run.tasks`, and nothing here orders them: Ray runs a
task once the results it takes as inputs exist.

Locally, ``ray.init`` starts a cluster of this machine alone, with as many
CPUs as workers asked for, and stops it at the end (a driver that is killed
takes it down too). With an address (``--engine_address`` or ``RAY_ADDRESS``)
the study joins a running cluster (``ray start`` on each node,
docs/cluster.md) and uses all of it. Each task asks for one CPU, and, where
the cluster has GPUs, ``1 / workers_per_gpu`` of one: that many workers share a
device, each allowed that share of its memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``).
"""

import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator

from dreamjax.errors import ConfigError
from dreamjax.study.run import tasks

# The driver's settings that shape a worker's results or what it reads: given to every
# worker of the study, on this machine or on a cluster's nodes.
WORKER_ENV = ("DREAMJAX_DATA_DIR", "DREAMJAX_CACHE_DIR", "DREAMJAX_NO_XLA_FLAGS",
              "DREAMJAX_XLA_CACHE", "JAX_COMPILATION_CACHE_DIR",
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "XLA_FLAGS",
              "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE", "JAX_PLATFORMS")
# Device memory left to the workers sharing a GPU, together: XLA's own default share.
GPU_MEMORY = 0.75


def worker_env(gpu_share: float | None = None) -> dict[str, str]:
  """The environment every worker gets: :data:`WORKER_ENV` as the driver has it, and
  with ``gpu_share`` of a GPU each, that share of its memory unless the user set one."""
  env = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
  if gpu_share:
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{GPU_MEMORY * gpu_share:.3f}")
  return env


def address_from_env() -> str | None:
  """The cluster a study joins when no flag names one: ``RAY_ADDRESS``, Ray's own variable."""
  return os.environ.get("RAY_ADDRESS") or None


class RayEngine:
  """Ray: a local cluster of ``workers`` CPUs, or the running cluster at ``address``."""
  name = "ray"

  def __init__(self, workers: int, address: str | None = None, log: Callable = print,
               workers_per_gpu: int = 2):
    # Every worker's progress lines reach this log as they are; Ray would fold lines
    # that look alike from several workers into one. Ray reads these at its import.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not _is_terminal(sys.stderr):  # a log file gets plain lines
      os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    try:  # Ray loads only when a study runs on workers (it takes a second and much memory)
      import ray  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ConfigError("the study's workers run on Ray, which is not installed here:"
                        " reinstall with ./launch.sh (or pip install -e .), or pass"
                        " --workers=0 to run every job in this process.") from None
    self.ray = ray
    if workers_per_gpu < 1:
      raise ConfigError(f"workers_per_gpu={workers_per_gpu} is invalid: must be >= 1.")
    address = address or address_from_env()
    kwargs = dict(include_dashboard=False, log_to_driver=True, configure_logging=False)
    # A local cluster would otherwise count this process's CPUs, not the workers asked for.
    local = {} if address else {"num_cpus": int(workers)}
    handlers = _signal_handlers()
    try:
      ray.init(address=address, **local, **kwargs)
    except ConnectionError as e:
      raise ConfigError(f"no Ray cluster at {address!r} ({e}). Start one (docs/cluster.md),"
                        " or unset RAY_ADDRESS / drop --engine_address to run on this"
                        " machine.") from None
    finally:
      # Ray's core installs a handler that aborts the process on SIGTERM; the study's own
      # (cli.run) stops the workers and records the run as stopped instead.
      _restore(handlers)
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    self.gpu_share = 1.0 / workers_per_gpu if gpus else 0.0
    self.address = address
    cpus = int(resources.get("CPU", workers))
    self.workers = min(cpus, int(gpus * workers_per_gpu)) if gpus else cpus
    self.nodes = len([n for n in ray.nodes() if n.get("Alive")])
    # A task's worker gets its environment before it starts JAX: the memory fraction of
    # its share of a GPU among it.
    self._remote = ray.remote(_ray_task)
    self._options = dict(num_cpus=1, num_gpus=self.gpu_share, max_retries=3,
                         runtime_env={"env_vars": worker_env(self.gpu_share)})

  def describe(self) -> dict[str, Any]:
    out = {"nodes_in_cluster": self.nodes}
    if self.address:
      out["address"] = self.address
    if self.gpu_share:
      out["gpu_share"] = self.gpu_share
    return out

  def share(self, value):
    return self.ray.put(value)

  def submit(self, key: str, *args):
    return self._remote.options(name=key, **self._options).remote(*args)

  def as_completed(self, futures: list[Any]) -> Iterator[Any]:
    pending = list(futures)
    while pending:
      # In short waits, so that Ctrl-C and SIGTERM reach this process's handlers at once.
      ready, pending = self.ray.wait(pending, num_returns=1, timeout=1.0)
      if ready:
        yield self.ray.get(ready[0])

  def close(self) -> None:
    """Ends the study's use of Ray, which also stops its unfinished tasks: a local
    cluster goes down with its workers, and on a running cluster the tasks share the
    fate of the driver that owns them. Tasks are not cancelled one by one first: Ray's
    cancel races with the reply of a task that is just finishing and can abort the
    driver (the race of ray-project/ray#54738), as a SIGTERM of the driver once did."""
    self.ray.shutdown()


def _signal_handlers() -> dict[int, Any]:
  if threading.current_thread() is not threading.main_thread():
    return {}
  return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore(handlers: dict[int, Any]) -> None:
  for sig, handler in handlers.items():
    if handler is not None:
      signal.signal(sig, handler)


def _is_terminal(stream) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):
    return False


def _ray_task(spec, task, *inputs):
  """A task in a Ray worker: :func:`dreamjax.study.run.tasks.run`, which also says its node."""
  import ray  # pylint: disable=g-import-not-at-top  (loaded in the worker already)
  os.environ["DREAMJAX_NODE"] = ray.get_runtime_context().get_node_id()
  return tasks.run(spec, task, *inputs)


def run_tasks(engine, spec: tasks.Spec, graph: list[tasks.Task], done: dict[str, Any],
              on_result: Callable[[dict[str, Any]], None]) -> None:
  """Submits every task of ``graph`` at once, inputs as futures, and hands each result to
  ``on_result`` as it finishes. When anything raises, the caller's ``engine.close()``
  stops the tasks left."""
  shared = engine.share(spec)
  futures: dict[str, Any] = {}
  for task in graph:
    futures[task.key] = engine.submit(task.key, shared, task,
                                      *tasks.inputs_of(task, futures, done))
  for result in engine.as_completed(list(futures.values())):
    on_result(result)
