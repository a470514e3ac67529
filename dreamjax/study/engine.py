"""The distributed engine that runs a study's tasks: local worker processes, or a cluster.

An engine here is a thin adapter (start, submit, as completed, stop) over an
existing engine; the tasks and their inputs are :mod:`dreamjax.study.tasks`.
"""

import os
from typing import Any, Callable, Iterator

from dreamjax.study import tasks

WORKER_ENV = ("DREAMJAX_DATA_DIR", "DREAMJAX_CACHE_DIR", "DREAMJAX_NO_XLA_FLAGS",
              "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
              "XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION", "JAX_PLATFORMS")


def worker_env() -> dict[str, str]:
  """The driver's settings that shape a worker's results or where it reads, for workers
  the driver does not start itself (a cluster's)."""
  return {k: os.environ[k] for k in WORKER_ENV if k in os.environ}


class RayEngine:
  """Ray: ``ray.init`` of a local cluster of ``workers`` CPUs, or of ``address``'s cluster."""
  name = "ray"

  def __init__(self, workers: int, address: str | None = None, log: Callable = print):
    import ray  # pylint: disable=g-import-not-at-top
    self.ray = ray
    kwargs = dict(include_dashboard=False, log_to_driver=True,
                  runtime_env={"env_vars": worker_env()})
    if address:
      ray.init(address=address, **kwargs)
    else:
      ray.init(num_cpus=workers, **kwargs)
    self.workers = int(ray.cluster_resources().get("CPU", workers))
    self._remote = ray.remote(num_cpus=1, max_retries=3)(_ray_task)
    self._spec = None

  def share(self, value):
    return self.ray.put(value)

  def submit(self, key: str, *args):
    return self._remote.options(name=key).remote(*args)

  def as_completed(self, futures: list[Any]) -> Iterator[Any]:
    pending = list(futures)
    while pending:
      ready, pending = self.ray.wait(pending, num_returns=1)
      yield self.ray.get(ready[0])

  def cancel(self, futures: list[Any]) -> None:
    for f in futures:
      try:
        self.ray.cancel(f, force=True)
      except Exception:  # noqa: BLE001 - finished or already gone
        pass

  def close(self) -> None:
    self.ray.shutdown()


def _ray_task(spec, task, *inputs):
  import ray  # pylint: disable=g-import-not-at-top
  os.environ["DREAMJAX_NODE"] = ray.get_runtime_context().get_node_id()
  return tasks.run(spec, task, *inputs)


class DaskEngine:
  """Dask distributed: a ``LocalCluster`` of ``workers`` one-thread processes, or the
  scheduler at ``address``."""
  name = "dask"

  def __init__(self, workers: int, address: str | None = None, log: Callable = print):
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

  def share(self, value):
    return self.client.scatter(value, broadcast=True)

  def submit(self, key: str, *args):
    return self.client.submit(_dask_task, *args, key=key, pure=False)

  def as_completed(self, futures: list[Any]) -> Iterator[Any]:
    for f in self.distributed.as_completed(futures):
      yield f.result()

  def cancel(self, futures: list[Any]) -> None:
    self.client.cancel(futures, force=True)

  def close(self) -> None:
    self.client.close()
    if self.cluster is not None:
      self.cluster.close()


def _dask_task(spec, task, *inputs):
  import distributed  # pylint: disable=g-import-not-at-top
  os.environ["DREAMJAX_NODE"] = distributed.get_worker().address
  return tasks.run(spec, task, *inputs)


ENGINES = {"ray": RayEngine, "dask": DaskEngine}


def run_tasks(engine, spec: tasks.Spec, graph: list[tasks.Task], done: dict[str, Any],
              on_result: Callable[[dict[str, Any]], None]) -> None:
  """Submits every task of ``graph`` at once, inputs as futures, and hands each result to
  ``on_result`` as it finishes; cancels every task left when anything raises."""
  shared = engine.share(spec)
  futures: dict[str, Any] = {}
  for task in graph:
    futures[task.key] = engine.submit(task.key, shared, task,
                                      *tasks.inputs_of(task, futures, done))
  try:
    for result in engine.as_completed(list(futures.values())):
      on_result(result)
  except BaseException:
    engine.cancel(list(futures.values()))
    raise
