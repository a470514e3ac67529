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
