"""What every benchmark entry shares: timing, FLOP counts, data, the models.

The FLOP counts come in two kinds, always named:

* ``xla``: ``jax.jit(f).lower(...).compile().cost_analysis()["flops"]`` of the
  compiled program (XLA:CPU leaves out the zero-padded border of a 'SAME'
  convolution and counts elementwise work too);
* ``model``: the matrix work of the model itself, multiply-adds × 2, every
  3×3 window in full (:func:`model_flops_per_image`).
"""

import os
import time

import dreamjax  # noqa: F401  (sets dreamjax's XLA flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np

from dreamjax.training import models
from dreamjax.configs import common

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def timed(fn, *, repeats: int, inner: int, warmup: int = 2) -> dict:
  """Seconds per call of ``fn()`` (which must block): median and min of repeats."""
  for _ in range(warmup):
    fn()
  per_call = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(inner):
      fn()
    per_call.append((time.perf_counter() - t0) / inner)
  return {"median_s": float(np.median(per_call)), "min_s": float(np.min(per_call))}


def rates(t: dict, units_per_call: float) -> dict:
  return {"median": units_per_call / t["median_s"], "best": units_per_call / t["min_s"]}


def xla_flops(jitted, *args) -> float | None:
  """XLA's FLOP count of ``jitted`` compiled for ``args`` (None where unavailable)."""
  try:
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])
  except Exception:  # noqa: BLE001  cost analysis is best effort on some backends
    return None


def random_data(n=2048, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.random((n, *IMAGE_SHAPE), np.float32)),
          jnp.asarray(rng.integers(0, NUM_CLASSES, n), jnp.int32))


def model_config(size: str):
  """``small`` / ``reference`` / ``tiny`` (configs.common), or ``study`` /
  ``study_full``: the classifier of the study's quick / full preset."""
  if size.startswith("study"):
    from dreamjax.configs import study  # pylint: disable=g-import-not-at-top
    return study.get_config("full" if size == "study_full" else "quick").model
  return common.model_config(size)


def cnn(size_or_config):
  cfg = model_config(size_or_config) if isinstance(size_or_config, str) else size_or_config
  return models.make_model(cfg, NUM_CLASSES)


def layer_shapes(model) -> tuple[list, list]:
  """([(H, W, C_in, C_out) per 3×3 conv], [(in, out) per dense]) of a CNN on
  28×28×1, read off the model's parameters and recorded activations."""
  model = cnn(model) if isinstance(model, str) else model
  variables = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), IMAGE_SHAPE))
  _, state = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, *IMAGE_SHAPE)),
                                                  mutable=["intermediates"]), variables)
  params, acts = variables["params"], state["intermediates"]
  convs = [(*acts[f"conv{i}"][0].shape[1:3], *params[f"Conv_{i}"]["kernel"].shape[2:])
           for i in range(len(model.conv_features))]
  denses = [params[f"Dense_{i}"]["kernel"].shape for i in range(len(model.dense_features))]
  return convs, [tuple(d) for d in (*denses, params["Head"]["kernel"].shape)]


def model_forward_flops(model) -> list[float]:
  """Multiply-adds × 2 of each layer's forward pass, per image, convolutions first."""
  convs, denses = layer_shapes(model)
  return [2 * h * w * 9 * ci * co for h, w, ci, co in convs] + [2 * i * o for i, o in denses]


def model_flops_per_image(model) -> float:
  """One train step per image, counted on the model, not the program: every
  3×3 window in full (as if 'SAME' padding were data), forward, input gradient
  (but not of the images) and weight gradient; elementwise work (BatchNorm,
  ReLU, pooling, the optimiser) left out. The reference CNN: 184 MFLOP."""
  fwd = model_forward_flops(model)
  return 3 * sum(fwd) - fwd[0]


def model_input_grad_flops_per_image(model) -> float:
  """One attack or dream step per image on the model count: forward and the
  gradient of the input through every layer (no weight gradient)."""
  return 2 * sum(model_forward_flops(model))


def cpu_info() -> dict:
  """CPU model and vector width: runs on different CPU kinds are not comparable."""
  model, flags = "", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name") and not model:
          model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
          flags = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  return {"cpu_model": model, "avx512f": "avx512f" in flags, "avx2": "avx2" in flags,
          "cpus": os.cpu_count()}


def matmul_peak(repeats: int = 3, sizes=(1024, 2048)) -> dict:
  """Best float32 GFLOP/s of a jitted ``a @ b`` over ``sizes`` (the "peak")."""
  out = {}
  for n in sizes:
    a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
    mm = jax.jit(lambda a, b: a @ b)
    t = timed(lambda: mm(a, a).block_until_ready(), repeats=repeats, inner=3)
    out[str(n)] = {k: 2 * n ** 3 / v / 1e9 for k, v in (("median", t["median_s"]),
                                                          ("best", t["min_s"]))}
  return {"gflops": max(v["best"] for v in out.values()), "by_size": out}
