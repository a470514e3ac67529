"""``bench.py --ablations``: the formulations dreamjax rejected, timed against
what it keeps (reference train step and PGD), and the XLA flags switched off
in fresh processes."""

import json
import os
import subprocess
import sys

import jax

from ascent import bench_library_ascent
from benchlib import IMAGE_SHAPE, cnn
from dreamjax.training import models
from workloads import bench_train_step

HERE = os.path.dirname(os.path.abspath(__file__))


def bench_ablations(args) -> dict:
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  out = {}
  keep = models.max_pool_2x2
  models.max_pool_2x2 = lambda x: nn.max_pool(x, (2, 2), (2, 2), "SAME")
  try:
    out["flax_max_pool"] = bench_train_step(args, "reference", None)["images_per_s"]
  finally:
    models.max_pool_2x2 = keep
  out["reshape_max_pool"] = bench_train_step(args, "reference", None)["images_per_s"]
  # Flax's own convolution, whose bias gradient is XLA's reduction.
  keep_conv = models.Conv3x3
  models.Conv3x3 = lambda features, use_bias=True, dtype=None, name=None: nn.Conv(
      features, (3, 3), padding="SAME", use_bias=use_bias, dtype=dtype, name=name)
  try:
    out["flax_conv_bias_gradient"] = bench_train_step(args, "reference", None)["images_per_s"]
  finally:
    models.Conv3x3 = keep_conv
  # PGD with one jitted program per step instead of chunks of WALK_CHUNK steps.
  from dreamjax.methods import adversarial  # pylint: disable=g-import-not-at-top
  keep_chunk = adversarial.WALK_CHUNK
  model = cnn("reference")
  variables = models.init_variables(model, jax.random.key(0), IMAGE_SHAPE)
  for chunk in (1, keep_chunk):
    adversarial.WALK_CHUNK = chunk
    try:
      out[f"pgd_walk_chunk_{chunk}"] = bench_library_ascent(args, "pgd", model, variables)
    finally:
      adversarial.WALK_CHUNK = keep_chunk
  # Fresh processes: no dreamjax flags at all, and the YNNPACK flag without "-reduce".
  # This process's XLA_FLAGS already holds dreamjax's flags (set at import): drop them.
  from dreamjax import _xla  # pylint: disable=g-import-not-at-top
  user_flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                        if f.split("=")[0].lstrip("-") not in _xla.CPU_FLAGS)
  for name, env in (
      ("without_dreamjax_xla_flags", dict(os.environ, DREAMJAX_NO_XLA_FLAGS="1",
                                          XLA_FLAGS=user_flags)),
      ("ynn_individual_convolution_off_only", dict(
          os.environ, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"))):
    res = subprocess.run([sys.executable, os.path.join(HERE, "bench.py"), "--only",
                          "train_step,seeds,pgd", "--repeats", str(args.repeats)],
                         env=env, capture_output=True, text=True, timeout=3600)
    out[name] = (json.loads(res.stdout.strip().splitlines()[-1])
                 if res.returncode == 0 else {"error": res.stderr[-500:]})
  return out
