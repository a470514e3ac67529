"""Data parallelism over every device: one ``("data",)`` mesh, NamedSharding, jax.jit.

Parameters and optimiser state are replicated; each batch is split along its
first axis over the mesh, and XLA inserts the gradient all-reduce itself. The
same pattern serves training (:func:`make_train_step`, and
:func:`dreamjax.train.fit`, which trains over every device through
:func:`split_batch_rows`) and the per-image loops: evaluation
(:func:`dreamjax.train.make_predict`), robust accuracy, adversarial datasets
and gradient alignment (:mod:`dreamjax.adversarial`), dreaming
(:func:`dreamjax.dream.dream_dataset`), generator sampling, Fréchet features,
pseudo-labels and offline augmentation place each chunk's rows split over the
mesh (:func:`put_rows`) next to replicated weights (:func:`put_weights`), so
every device handles its own rows; :func:`data_parallel` does the same for
any function. The VAE, GAN and autoencoder trainers split their sampled
batches the way :func:`dreamjax.train.fit` does. With one device everything
reduces to plain ``jax.jit``, so code written against this module runs
unchanged on a laptop, a GPU box or a TPU
pod.

Multi-host (TPU pods, multi-node GPU): call :func:`initialize` with
``distributed=True`` (or set ``DREAMJAX_DISTRIBUTED=1``) in every process
before any other JAX call; the mesh then spans the devices of all hosts.
Every process runs the same program on the same data: replicated arrays are
placed from each host's identical copy, :func:`put_rows` places each host's
share of a chunk's rows, :func:`to_host` gathers split outputs back to every
process, and only process 0 writes files (:func:`is_primary`, :func:`sync`).
:func:`shard_batch` instead assembles a global batch from different rows on
each host.
"""

import os
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dreamjax.errors import ConfigError, DistributedError

if TYPE_CHECKING:  # dreamjax.train imports this module; the reverse import is lazy.
  from dreamjax import train

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


def is_primary() -> bool:
  """True in the one process that writes files (process 0; always, on one host)."""
  return jax.process_index() == 0


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
  if jax.process_count() == 1:
    return
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
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(jax.device_get(a))

  return jax.tree.map(fetch, tree)


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named ``data`` over ``devices`` (default: every device of every host)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ConfigError("data_mesh: no devices given.")
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Rows split over the mesh, every other axis whole."""
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


def put_rows(mesh: Mesh | None, rows: Any, size: int) -> Any:
  """One chunk of per-image arrays (a pytree), padded and placed for ``mesh``.

  The chunked loops (evaluation, attacks, dreaming) pad every chunk to one
  shape, ``size`` rows, so that each compiles once. ``mesh=None`` (one device):
  each array is zero-padded to ``size`` rows and handed to ``jnp.asarray``, as
  those loops always did; no sharding is involved. With a mesh, ``size`` is
  rounded up to a multiple of the device count and each array is placed split
  by rows over ``data`` (single process: ``rows`` is the whole chunk), so a
  jitted function given these rows and replicated weights runs each device on
  its own rows. Zero rows are padding: callers keep the first ``len(rows)``
  rows of each output.
  """
  if mesh is None:
    return jax.tree.map(lambda a: jnp.asarray(pad_rows(a, size)), rows)
  size = -(-size // mesh.size) * mesh.size
  return jax.tree.map(
      lambda a: _place(pad_rows(a, size), batch_sharding(mesh, np.ndim(a))), rows)


def put_weights(mesh: Mesh | None, tree: Any,
                devices: Sequence[jax.Device] | None = None) -> Any:
  """Weights for the chunked loops: replicated on ``mesh`` if there is one.

  Without a mesh they stay where they are, unless ``devices`` names one device
  (a one-device reference run on a many-device host), where they are moved.
  """
  if mesh is not None:
    return replicate(mesh, tree)
  if devices is not None:
    return jax.device_put(tree, list(devices)[0])
  return tree


def constrain_rows(mesh: Mesh | None, tree: Any) -> Any:
  """Inside a jitted function: every array of ``tree`` split by rows over ``mesh``.

  ``jax.lax.with_sharding_constraint`` on each leaf (``None`` leaves, such as
  absent labels, pass through), so each device computes on its own rows of a
  batch drawn inside the program. ``mesh=None``: ``tree`` unchanged.
  """
  if mesh is None:
    return tree
  return jax.tree.map(
      lambda a: jax.lax.with_sharding_constraint(a, batch_sharding(mesh, a.ndim)), tree)


def split_batch_rows(mesh: Mesh,
                     batch_transform: "train.BatchTransform | None" = None
                     ) -> "train.BatchTransform":
  """A batch transform that splits the sampled batch by rows over ``mesh``.

  The rows are constrained (``jax.lax.with_sharding_constraint``) to be split
  over ``data`` before ``batch_transform`` runs and again after it, so each
  device runs the transform, forward and backward pass of its own rows. It is
  traced inside the step, so it works under ``jax.vmap`` and
  :func:`dreamjax.train.map_seeds` alike (one batch per seed).
  """

  def transform(state, x, y, key):
    x, y = constrain_rows(mesh, (x, y))
    if batch_transform is not None:
      x, y = constrain_rows(mesh, batch_transform(state, x, y, key))
    return x, y

  return transform


def make_train_step(model, batch_size: int, mesh: Mesh, *,
                    batch_transform: "train.BatchTransform | None" = None,
                    label_smoothing: float = 0.0) -> Callable:
  """:func:`dreamjax.train.make_train_step`, data-parallel over ``mesh``, jitted.

  Same signature and results (up to float summation order) as the one-device
  step: ``step(state, images, labels, count, key) -> (state, metrics)`` with a
  replicated state and dataset. The sampled batch is constrained to be split
  over ``data`` (:func:`split_batch_rows`), so each device runs the forward and
  backward pass of its rows and the gradient mean becomes one all-reduce.
  """
  from dreamjax import train  # pylint: disable=g-import-not-at-top,redefined-outer-name
  check_divisible(mesh, batch_size)
  step = train.make_train_step(model, batch_size,
                               batch_transform=split_batch_rows(mesh, batch_transform),
                               label_smoothing=label_smoothing)
  rep = replicated(mesh)
  return jax.jit(step, in_shardings=rep, out_shardings=(rep, rep), donate_argnums=0)


def data_parallel(fn: Callable, mesh: Mesh, batch_argnums: Sequence[int]) -> Callable:
  """``jax.jit(fn)`` with the ``batch_argnums`` arguments split by rows over ``mesh``.

  Every other argument (parameters, keys, settings as arrays) is replicated;
  outputs keep whatever sharding XLA propagates (rows stay split). Use it for
  per-image work such as dreaming and attacks: each device handles its rows and
  no communication is needed unless ``fn`` reduces over the batch. Each batch
  argument's first axis must be a multiple of the device count.
  """
  batch_argnums = tuple(batch_argnums)

  def call(*args):
    shardings = tuple(
        jax.tree.map(lambda a: batch_sharding(mesh, np.ndim(a)), arg) if i in batch_argnums
        else jax.tree.map(lambda _: replicated(mesh), arg)
        for i, arg in enumerate(args))
    for i in batch_argnums:
      for leaf in jax.tree.leaves(args[i]):
        check_divisible(mesh, np.shape(leaf)[0], f"argument {i} rows")
    return _jitted(shardings)(*args)

  cache: dict[Any, Callable] = {}

  def _jitted(shardings):
    key = jax.tree.structure(shardings), tuple(
        (s.spec for s in jax.tree.leaves(shardings)))
    if key not in cache:
      cache[key] = jax.jit(fn, in_shardings=shardings)
    return cache[key]

  return call
