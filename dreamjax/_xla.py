"""XLA flags dreamjax sets for itself, so that users need not know them.

A flag is listed here only if ``benchmarks/bench.py`` measured it to help on the
CPU (numbers in ``benchmarks/README.md``). Flags only take effect if they are in
the environment before JAX initialises its backend, which is why
``import dreamjax`` calls :func:`configure` first thing. A user who sets
``DREAMJAX_NO_XLA_FLAGS=1`` gets JAX's defaults; flags the user already put in
``XLA_FLAGS`` are never overridden.
"""

import importlib.metadata
import os

# name -> value, each measured by benchmarks/bench.py (see benchmarks/README.md).
CPU_FLAGS: dict[str, str] = {
    # XLA:CPU otherwise hands each convolution to a YNNPACK path that runs on
    # one core. Its "reduce" fusions also pull convolutions (an input gradient
    # fused with the max-pool gradient's reduction) onto that path. Both are
    # slower for every step the study runs (benchmarks/README.md).
    "xla_cpu_experimental_ynn_fusion_type": "-individual_convolution,-reduce",
}

# XLA aborts on a flag it does not know, and older jaxlibs lack the YNNPACK
# path (and its flag): set the flags only from the jaxlib they were measured on.
MIN_JAXLIB = (0, 10)


def _jaxlib_version() -> tuple[int, ...]:
  try:
    text = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return ()
  return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def configure() -> None:
  if os.environ.get("DREAMJAX_NO_XLA_FLAGS") or _jaxlib_version() < MIN_JAXLIB:
    return
  current = os.environ.get("XLA_FLAGS", "")
  extra = [
      f"--{name}={value}"
      for name, value in CPU_FLAGS.items()
      if f"--{name}" not in current
  ]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()


# XLA:CPU's intra-op threads in this process, once fix_cpu_threads started its backend.
_THREADS: int | None = None


def fix_cpu_threads(n: int) -> None:
  """Starts JAX's backends with an XLA:CPU intra-op thread pool of ``n`` threads.

  XLA:CPU sizes that pool from the CPUs the process may run on when its
  backend starts, and the number of threads decides how a convolution's work
  is split, so it moves the last bits of results. A study's worker processes
  therefore all start with the same ``n``, whatever the machine or the number
  of workers. The starting thread is confined to ``n`` of its CPUs while the
  backend starts; then every thread of the process (the pool's threads inherit
  the confinement) may run on all of them again, so the OS still puts the
  worker on whichever core is free. Call it before the process's first JAX
  computation; a second call with the same ``n`` does nothing.
  """
  global _THREADS
  # Here, not at the top: `import dreamjax` runs this module first, before anything of
  # dreamjax or JAX is loaded.
  from dreamjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  if _THREADS is not None:
    if _THREADS != n:
      raise ConfigError(f"this process's XLA:CPU already runs {_THREADS} intra-op threads;"
                        f" {n} asked for. Start a fresh worker process.")
    return
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if xla_bridge.backends_are_initialized():
    raise ConfigError(f"XLA:CPU's thread pool cannot be set to {n} threads: JAX already"
                      " started in this process. Start a fresh worker process.")
  import jax  # pylint: disable=g-import-not-at-top
  allowed = os.sched_getaffinity(0)
  if len(allowed) < n:
    raise ConfigError(f"{n} XLA:CPU threads asked for, but this process may run on only"
                      f" {len(allowed)} CPUs; ask for at most {len(allowed)}.")
  os.sched_setaffinity(0, sorted(allowed)[:n])
  try:
    jax.devices()
  finally:
    for tid in os.listdir("/proc/self/task"):
      try:
        os.sched_setaffinity(int(tid), allowed)
      except OSError:  # a thread that ended meanwhile
        pass
  _THREADS = n


def cpu_threads() -> int:
  """XLA:CPU's intra-op threads in this process: those :func:`fix_cpu_threads` set,
  else the CPUs the process may run on (from which XLA sizes its pool)."""
  if _THREADS is not None:
    return _THREADS
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
