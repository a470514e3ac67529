"""Devices: one ``("data",)`` mesh, made once at the entry point and passed down.

An experiment (``dreamjax.runs.*``, the study) calls :func:`make_mesh` once and
hands the mesh to everything below it; models, losses and algorithms never
look at devices. A machine with one device gets a one-device mesh, so there is
one code path everywhere. Two patterns cover every computation:

* **Training**: parameters, optimiser state and the training set are
  replicated (:func:`replicate`); inside the jitted step the sampled batch is
  constrained to be split by rows (:func:`constrain_rows`), so each device
  runs the forward and backward pass of its rows and XLA inserts the gradient
  all-reduce. ``batch_size`` must be a multiple of the mesh size
  (:func:`check_divisible`).
* **Per-image work** (evaluation, attacks, dreams, features, sampling,
  offline augmentation): :func:`map_rows` runs a function over fixed-size
  chunks of rows, each split over the mesh next to replicated weights, and
  returns host arrays.

Multi-host (TPU pods, multi-node GPU): call :func:`initialize` with
``distributed=True`` (or set ``DREAMJAX_DISTRIBUTED=1``) in every process
before any other JAX call; the mesh then spans the devices of all hosts.
Every process runs the same program on the same data: replicated arrays are
placed from each host's identical copy, :func:`map_rows` places each host's
share of a chunk's rows and gathers the outputs back to every process, and
only process 0 writes files (:func:`is_primary`, :func:`sync`).
"""

import os
import time
from typing import Any, Callable, Sequence

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dreamjax.errors import ConfigError, DistributedError

DATA_AXIS = "data"


def initialize(distributed: bool | None = None) -> None:
  """Joins a multi-host job through ``jax.distributed.initialize()``.

  ``distributed=None`` reads ``DREAMJAX_DISTRIBUTED`` (``1``/``true``). On
  Cloud TPU pods (and SLURM, Open MPI) JAX discovers the coordinator, process
  count and ids itself; elsewhere set ``JAX_COORDINATOR_ADDRESS`` (host:port of
  process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` in every process.
  A job that cannot be joined raises :class:`ConfigError` saying which.
  """
  if distributed is None:
    distributed = os.environ.get("DREAMJAX_DISTRIBUTED", "").lower() in ("1", "true", "yes")
  if not distributed:
    return
  barrier_timeout_s()  # a bad DREAMJAX_BARRIER_TIMEOUT_S fails now, not at the first write
  kwargs: dict[str, Any] = {}
  for name, env, cast in (("coordinator_address", "JAX_COORDINATOR_ADDRESS", str),
                          ("num_processes", "JAX_NUM_PROCESSES", int),
                          ("process_id", "JAX_PROCESS_ID", int)):
    value = os.environ.get(env, "").strip()
    if value:
      try:
        kwargs[name] = cast(value)
      except ValueError:
        raise ConfigError(f"{env}={value!r} is not a whole number.") from None
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, RuntimeError) as e:
    raise ConfigError(
        f"cannot join a multi-host job ({e}). On a Cloud TPU pod run the same command"
        " on every worker; elsewhere set JAX_COORDINATOR_ADDRESS=host:port (process 0's),"
        " JAX_NUM_PROCESSES and JAX_PROCESS_ID in every process, or drop --distributed"
        " / DREAMJAX_DISTRIBUTED to run on this host alone.") from None


def process_count() -> int:
  """The job's processes: ``jax.process_count()`` once this process joined a multi-host
  job, else 1 without starting a backend (a study's driver keeps off the devices its
  workers compute on)."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  if distributed.global_state.client is None:
    return 1
  return jax.process_count()


def is_primary() -> bool:
  """True in the one process that writes files (process 0; always, on one host)."""
  return process_count() == 1 or jax.process_index() == 0


_barriers = 0  # barriers passed by this process: every process counts alike


def barrier_timeout_s() -> float:
  """How long :func:`sync` waits for the other processes (``DREAMJAX_BARRIER_TIMEOUT_S``)."""
  text = os.environ.get("DREAMJAX_BARRIER_TIMEOUT_S", "").strip()
  try:
    value = float(text) if text else 1800.0
  except ValueError:
    value = -1.0
  if not value > 0:
    raise ConfigError(f"DREAMJAX_BARRIER_TIMEOUT_S={text!r} must be a number of seconds > 0.")
  return value


def sync(name: str) -> None:
  """A barrier across processes (a no-op in a one-process job).

  Used around files that process 0 writes and every process then reads, such
  as checkpoints. It waits on the job's coordination service, not on a device
  program, so it adds no collective to the devices' queues; a process that
  does not arrive within :func:`barrier_timeout_s` ends the job with an error
  naming the barrier instead of a silent hang.
  """
  global _barriers
  if process_count() == 1:
    return
  # orbax takes seconds to import and only a job of several processes gets here.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  _barriers += 1
  timeout = barrier_timeout_s()
  t0 = time.monotonic()
  try:
    ocp.multihost.get_barrier_sync_fn()(key=f"dreamjax:{_barriers}:{name}",
                                        timeout_ms=int(timeout * 1000))
  except Exception as e:  # noqa: BLE001 - the coordination service raises XlaRuntimeError
    raise DistributedError(
        f"process {jax.process_index()} waited {time.monotonic() - t0:.0f} s (limit"
        f" {timeout:.0f} s) at barrier {name!r} and not every process of the job arrived"
        f" ({type(e).__name__}: {str(e)[:300]}). Every"
        " process must run the same command with the same flags and data; look for an"
        " error in another process's log. A step that legitimately runs longer on one"
        " process can be given time with DREAMJAX_BARRIER_TIMEOUT_S.") from None


def to_host(tree: Any) -> Any:
  """Every array of ``tree`` as a whole host (numpy) array, in every process.

  Arrays split over the devices of several hosts are gathered across processes
  first (``process_allgather``); anything this process holds whole is simply
  fetched, so on one host this is ``jax.device_get``.
  """

  def fetch(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(jax.device_get(a))

  return jax.tree.map(fetch, tree)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The 1-D ``data`` mesh over ``devices`` (default: every device of every host)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ConfigError("make_mesh: no devices given.")
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def default(mesh: Mesh | None) -> Mesh:
  """``mesh``, or the mesh over every device when a library caller passed none."""
  return make_mesh() if mesh is None else mesh


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Rows split over the mesh, every other axis whole.

  On a one-device mesh that is the whole array, written ``P()``: the spec XLA
  gives every output of a one-device program, so arrays that go round a
  Python loop of jitted steps (a dream's ascent, a PGD walk) keep one
  sharding and each step compiles once.
  """
  if mesh.size == 1:
    return NamedSharding(mesh, P())
  return NamedSharding(mesh, P(DATA_AXIS, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_divisible(mesh: Mesh, batch_size: int, what: str = "batch_size") -> None:
  """Raises ConfigError unless ``batch_size`` rows split evenly over ``mesh``."""
  n = mesh.size
  if batch_size % n:
    lower, upper = batch_size // n * n, (batch_size // n + 1) * n
    fix = f"{lower} or {upper}" if lower else f"{upper}"
    raise ConfigError(f"{what}={batch_size} must be a multiple of the device count"
                      f" ({n}) to split evenly over the '{DATA_AXIS}' mesh; set it to"
                      f" {fix}.")


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Places a pytree (parameters, optimiser state, a small dataset) on every device."""
  return jax.tree.map(lambda a: _place(a, replicated(mesh)), tree)


def _place(a: Any, where: NamedSharding) -> Any:
  """``jax.device_put``, also on a mesh spanning several hosts.

  There every process holds the same whole value (the same program on the
  same data), so each places the shards of its own devices from it
  (``jax.make_array_from_callback``), without the cross-process comparison
  of the value that ``jax.device_put`` would run first (an all-gather of the
  whole array, a training set included). A PRNG key array is placed as its
  raw key data and wrapped again.
  """
  if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
    data = _place(jax.random.key_data(a), where)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
  if where.is_fully_addressable or (isinstance(a, jax.Array) and not a.is_fully_addressable):
    return jax.device_put(a, where)
  host = np.asarray(a)
  return jax.make_array_from_callback(host.shape, where, lambda index: host[index])


def shard_batch(mesh: Mesh, rows: np.ndarray | jax.Array) -> jax.Array:
  """A global batch split over the mesh, built from this host's ``rows``.

  Single host: ``rows`` is the whole batch. Multi-host: each process passes its
  own equal share and the result is the concatenation over processes.
  """
  sharding = batch_sharding(mesh, np.ndim(rows))
  check_divisible(mesh, np.shape(rows)[0] * jax.process_count(), "batch rows")
  return jax.make_array_from_process_local_data(sharding, np.asarray(rows))


def pad_rows(rows: Any, size: int) -> np.ndarray:
  """``rows`` as a host array zero-padded along axis 0 to ``size`` rows."""
  rows = np.asarray(rows)
  pad = size - len(rows)
  return rows if pad <= 0 else np.concatenate(
      [rows, np.zeros((pad, *rows.shape[1:]), rows.dtype)])


def put_rows(mesh: Mesh, rows: Any, size: int) -> Any:
  """One chunk of per-image arrays (a pytree), zero-padded and split by rows over ``mesh``.

  ``size`` is rounded up to a multiple of the device count. Zero rows are
  padding: callers keep the first ``len(rows)`` rows of each output.
  """
  size = -(-size // mesh.size) * mesh.size
  return jax.tree.map(
      lambda a: _place(pad_rows(a, size), batch_sharding(mesh, np.ndim(a))), rows)


def constrain_rows(mesh: Mesh, tree: Any) -> Any:
  """Inside a jitted function: every array of ``tree`` split by rows over ``mesh``.

  ``jax.lax.with_sharding_constraint`` on each leaf (``None`` leaves, such as
  absent labels, pass through), so each device computes on its own rows of a
  batch drawn inside the program.
  """
  return jax.tree.map(
      lambda a: jax.lax.with_sharding_constraint(a, batch_sharding(mesh, a.ndim)), tree)


def sample_batch(mesh: Mesh, key: jax.Array, batch_size: int, count, *arrays):
  """Inside a jitted step: ``batch_size`` random rows below ``count`` of each array.

  The one way every trainer (classifier, VAE, GAN, autoencoder) draws its
  batch from a replicated training set: the rows are drawn with one index
  vector and constrained to be split over ``mesh``. ``None`` arrays (absent
  labels) pass through.
  """
  idx = jax.random.randint(key, (batch_size,), 0, count)
  return constrain_rows(mesh, tuple(None if a is None else a[idx] for a in arrays))


def map_rows(fn: Callable[..., Any], weights: Any, rows: Any, *, mesh: Mesh, chunk: int,
             key: jax.Array | None = None, row_axis: int = 0) -> Any:
  """``fn(weights, rows_chunk[, key_i])`` over fixed-size chunks of ``rows``, as host arrays.

  The one per-image loop of dreamjax. ``rows`` is a pytree of arrays sharing
  their first axis (images, labels, masks). Every chunk is zero-padded to
  ``min(chunk, n)`` rows, so ``fn`` (jitted by the caller, or built from
  jitted pieces) compiles once, and is split by rows over ``mesh`` next to
  ``weights`` replicated once. With ``key``, chunk ``i`` gets
  ``fold_in(key, i)``, so a key gives the same outputs however the chunks
  fall on devices. Each output leaf is trimmed to the chunk's real rows along
  ``row_axis`` (1 for seed-stacked outputs ``[K, n, ...]``) and concatenated
  over chunks. Padding rows are zeros; ``fn`` must keep rows independent
  (or mask them, as the dream's BatchNorm prior does with a ``valid`` row).
  """
  n = len(jax.tree.leaves(rows)[0])
  if n == 0:
    raise ConfigError("map_rows: no rows to process.")
  if chunk < 1:
    raise ConfigError(f"chunk={chunk} is invalid: must be >= 1.")
  size = min(chunk, n)
  weights = replicate(mesh, weights)
  if key is not None:
    key = replicate(mesh, key)
  outs = []
  for i, start in enumerate(range(0, n, size)):
    part = jax.tree.map(lambda a: np.asarray(a)[start:start + size], rows)
    m = len(jax.tree.leaves(part)[0])
    args = (weights, put_rows(mesh, part, size))
    if key is not None:
      args += (jax.random.fold_in(key, i),)
    out = to_host(fn(*args))
    outs.append(jax.tree.map(lambda a: np.take(a, np.arange(m), axis=row_axis), out))
  return jax.tree.map(lambda *parts: np.concatenate(parts, axis=row_axis), *outs)
