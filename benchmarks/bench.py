"""dreamjax benchmarks: prints a readable table, then one JSON object (last line).

  python benchmarks/bench.py                 # everything (several minutes on 2 cores)
  python benchmarks/bench.py --only train_step,seeds --repeats 3
  python benchmarks/bench.py --only matmul,train_step,ceiling  # how far the step is from its bound
  python benchmarks/bench.py --ablations     # + the formulations dreamjax rejected
  python benchmarks/bench.py --json_out out.json

Each entry times ``--repeats`` runs after warm-up (compilation excluded) and
reports the median and the best. PyTorch numbers come from
``benchmarks/bench_torch.py`` run by ``benchmarks/.venv-torch/bin/python`` if
that environment exists (see benchmarks/README.md); torch is never imported
here and is no dependency of dreamjax.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import dreamjax  # noqa: F401  (sets dreamjax's XLA flags before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamjax import models, train
from dreamjax.configs import common

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_PYTHON = os.path.join(HERE, ".venv-torch", "bin", "python")
IMAGE_SHAPE = (28, 28, 1)
ALL = ("matmul", "train_step", "ceiling", "seeds", "dream", "pgd", "generators", "memory",
       "torch")


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


def compiled_flops(jitted, *args) -> float | None:
  try:
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])
  except Exception:  # cost analysis is best effort on some backends
    return None


def random_data(n=2048, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.random((n, *IMAGE_SHAPE), np.float32)),
          jnp.asarray(rng.integers(0, 10, n), jnp.int32))


def cnn(size: str):
  return models.make_model(common.model_config(size), 10)


def layer_shapes(size: str) -> tuple[list, list]:
  """([(H, W, C_in, C_out) per 3×3 conv], [(in, out) per dense]) of a CNN on
  28×28×1, read off the model's parameters and recorded activations."""
  model = cnn(size)
  variables = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), IMAGE_SHAPE))
  _, state = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, *IMAGE_SHAPE)),
                                                  mutable=["intermediates"]), variables)
  params, acts = variables["params"], state["intermediates"]
  convs = [(*acts[f"conv{i}"][0].shape[1:3], *params[f"Conv_{i}"]["kernel"].shape[2:])
           for i in range(len(model.conv_features))]
  denses = [params[f"Dense_{i}"]["kernel"].shape for i in range(len(model.dense_features))]
  return convs, [tuple(d) for d in (*denses, params["Head"]["kernel"].shape)]


def model_flops_per_image(size: str) -> float:
  """Multiply-adds ×2 of one train step per image, counted on the model, not the
  program: every 3×3 window in full (as if 'SAME' padding were data), forward,
  input gradient (but not of the images) and weight gradient; elementwise work
  left out. The reference CNN: 184 MFLOP."""
  convs, denses = layer_shapes(size)
  fwd = [2 * h * w * 9 * ci * co for h, w, ci, co in convs] + [2 * i * o for i, o in denses]
  return 3 * sum(fwd) - fwd[0]


# --------------------------------------------------------------------------- matmul


def bench_matmul(args) -> dict:
  out = {}
  for n in (1024, 2048):
    a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
    mm = jax.jit(lambda a, b: a @ b)
    t = timed(lambda: mm(a, a).block_until_ready(), repeats=args.repeats, inner=3)
    out[str(n)] = {k: 2 * n ** 3 / v / 1e9 for k, v in (("median", t["median_s"]),
                                                          ("best", t["min_s"]))}
  return {"gflops": max(v["best"] for v in out.values()), "by_size": out}


# --------------------------------------------------------------------------- train step


def single_seed_step(model, batch_size=128):
  tx = train.make_optimizer(common.train_config())
  state = train.create_state(model, tx, models.init_variables(model, jax.random.key(0), IMAGE_SHAPE))
  step = jax.jit(train.make_train_step(model, batch_size), donate_argnums=0)
  return step, state


def bench_train_step(args, size: str, peak: float | None) -> dict:
  model = cnn(size)
  x, y = random_data()
  step, state = single_seed_step(model)
  flops = compiled_flops(step, state, x, y, len(y), jax.random.key(0))
  box = {"state": state, "i": 0}

  def call():
    box["i"] += 1
    box["state"], m = step(box["state"], x, y, len(y), jax.random.key(box["i"]))
    m["loss"].block_until_ready()

  t = timed(call, repeats=args.repeats, inner=5)
  r = rates(t, 128)
  model_flops = model_flops_per_image(size) * 128
  entry = {"images_per_s": r, **t, "mflop_per_image": flops / 128 / 1e6 if flops else None,
           "model_mflop_per_image": model_flops / 128 / 1e6,
           "model_gflops": model_flops / t["min_s"] / 1e9}
  if peak:
    entry["model_fraction_of_peak"] = entry["model_gflops"] / peak
  if flops and peak:
    entry["gflops"] = flops / t["min_s"] / 1e9
    entry["fraction_of_peak"] = entry["gflops"] / peak
  return entry


def bench_ceiling(args, peak: float | None, size: str = "reference") -> dict:
  """The train step's matrix work alone: each convolution's forward, input and
  weight gradient (XLA's convolutions, as in the step) and each dense layer's
  three products, jitted and timed on its own (batch 128). Their sum is what a
  step with free pooling, ReLU, biases, optimizer and layout changes would take."""
  rng = np.random.default_rng(0)
  rand = lambda *shape: jnp.asarray(rng.standard_normal(shape, np.float32))
  convs, denses = layer_shapes(size)
  pieces = {}

  def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def add(name, fn, args_, flops):
    jitted = jax.jit(fn)
    t = timed(lambda: jitted(*args_).block_until_ready(), repeats=args.repeats, inner=5)
    pieces[name] = {"ms": t["min_s"] * 1e3, "gflops": flops / t["min_s"] / 1e9}

  for i, (h, w, ci, co) in enumerate(convs):
    x, k, g = rand(128, h, w, ci), rand(3, 3, ci, co), rand(128, h, w, co)
    flops = 2 * 128 * h * w * 9 * ci * co
    add(f"conv{i}_forward", conv, (x, k), flops)
    if i:  # no input gradient for the images
      add(f"conv{i}_input_grad", lambda x, k, g: jax.vjp(lambda x_: conv(x_, k), x)[1](g)[0],
          (x, k, g), flops)
    add(f"conv{i}_weight_grad", lambda x, k, g: jax.vjp(lambda k_: conv(x, k_), k)[1](g)[0],
        (x, k, g), flops)
  for i, (n_in, n_out) in enumerate(denses):
    a, b, g = rand(128, n_in), rand(n_in, n_out), rand(128, n_out)
    flops = 2 * 128 * n_in * n_out
    add(f"dense{i}_forward", lambda a, b: a @ b, (a, b), flops)
    add(f"dense{i}_input_grad", lambda g, b: g @ b.T, (g, b), flops)
    add(f"dense{i}_weight_grad", lambda a, g: a.T @ g, (a, g), flops)
  total_s = sum(p["ms"] for p in pieces.values()) / 1e3
  entry = {"model": size, "pieces": pieces, "sum_ms": total_s * 1e3,
           "images_per_s_bound": 128 / total_s}
  if peak:
    entry["model_fraction_of_peak_bound"] = model_flops_per_image(size) * 128 / total_s / 1e9 / peak
  return entry


def bench_seeds(args, k: int = 3, size: str = "small") -> dict:
  """K seeds: K sequential single-seed steps vs one program (unrolled, vmapped)."""
  model = cnn(size)
  x, y = random_data()
  tx = train.make_optimizer(common.train_config())
  base = train.make_train_step(model, 128)
  keys = train.seed_keys(range(k))
  counts = jnp.full((k,), len(y), jnp.int32)
  init = jax.jit(jax.vmap(lambda key: train.create_state(
      model, tx, models.init_variables(model, key, IMAGE_SHAPE))))
  one = jax.jit(base, donate_argnums=0)
  programs = {
      "map_seeds": jax.jit(train.map_seeds(base, in_axes=(0, None, None, 0, 0)), donate_argnums=0),
      "vmap": jax.jit(jax.vmap(base, in_axes=(0, None, None, 0, 0)), donate_argnums=0),
  }
  out = {}
  box = {"states": [train.unstack(init(keys), i) for i in range(k)]}

  def sequential():
    for i in range(k):
      box["states"][i], m = one(box["states"][i], x, y, len(y), keys[i])
    m["loss"].block_until_ready()

  out["sequential"] = rates(timed(sequential, repeats=args.repeats, inner=3), 128 * k)
  for name, prog in programs.items():
    box[name] = init(keys)

    def call(name=name, prog=prog):
      box[name], m = prog(box[name], x, y, counts, keys)
      m["loss"].block_until_ready()

    out[name] = rates(timed(call, repeats=args.repeats, inner=3), 128 * k)
  seq = out["sequential"]["best"]
  return {"k": k, "model": size, "images_per_s": out,
          "speedup_vs_sequential": {n: out[n]["best"] / seq for n in programs}}


# --------------------------------------------------------------------------- dream / PGD


def conv1_objective(model, variables, x):
  """Deep Dream's layer objective: mean squared activation of conv1, per image summed."""
  _, acts, _ = models.apply_with_activations(model, variables, x)
  return jnp.sum(jnp.mean(jnp.square(acts["conv1"]), axis=(1, 2, 3)))


def dream_step(model, variables, x, step_size=0.02):
  g = jax.grad(lambda x: conv1_objective(model, variables, x))(x)
  g = g / (jnp.mean(jnp.abs(g), axis=(1, 2, 3), keepdims=True) + 1e-8)
  return jnp.clip(x + step_size * g, 0.0, 1.0)


def pgd_step(model, variables, x0, x, labels, eps=0.1, step_size=0.025):
  def loss(x):
    logits = model.apply(variables, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
  x = x + step_size * jnp.sign(jax.grad(loss)(x))
  return jnp.clip(jnp.clip(x, x0 - eps, x0 + eps), 0.0, 1.0)


def loop_variants(step, steps: int):
  """The same ascent as (a) a Python loop of one jitted step, (b) one jit with the
  loop unrolled, (c) one jit with lax.fori_loop: which XLA:CPU runs fastest."""
  one = jax.jit(step)

  def python_loop(*a):
    x = a[-1]
    for _ in range(steps):
      x = one(*a[:-1], x)
    return x

  def unrolled(*a):
    x = a[-1]
    for _ in range(steps):
      x = step(*a[:-1], x)
    return x

  def fori(*a):
    return jax.lax.fori_loop(0, steps, lambda _, x: step(*a[:-1], x), a[-1])

  return {"python_loop": python_loop, "unrolled_jit": jax.jit(unrolled), "fori_loop": jax.jit(fori)}


def bench_ascent(args, kind: str, peak: float | None = None) -> dict:
  model = cnn("reference")
  variables = models.init_variables(model, jax.random.key(0), IMAGE_SHAPE)
  if kind == "dream":
    n, steps = 64, 20
    x, _ = random_data(n)
    step = lambda v, x: dream_step(model, v, x)
    call_args = (variables, x)
  else:
    n, steps = 128, 10
    x, y = random_data(n)
    step = lambda v, x0, y, x: pgd_step(model, v, x0, x, y)
    call_args = (variables, x, y, x)
  variants = loop_variants(step, steps)
  step_flops = compiled_flops(jax.jit(step), *call_args)  # one ascent step, all n images
  out = {"images": n, "steps": steps,
         "mflop_per_image_step": step_flops / n / 1e6 if step_flops else None}

  def with_flops(entry):
    if step_flops and "min_s" in entry:
      entry["gflops"] = step_flops * steps / entry["min_s"] / 1e9
      if peak:
        entry["fraction_of_peak"] = entry["gflops"] / peak
    return entry

  for name, fn in variants.items():
    t = timed(lambda: jax.block_until_ready(fn(*call_args)), repeats=args.repeats, inner=1)
    out[name] = with_flops({"image_steps_per_s": rates(t, n * steps), **t})
  lib = bench_library_ascent(args, kind, model, variables)
  out["library"] = with_flops(lib) if lib else lib
  return out


def library_dream(model, variables, chunk: int):
  """``(images, labels) -> dreamed images`` through ``dreamjax.dream.dream_dataset``
  (conv1 mean squared activation, 20 steps), or None without that module."""
  try:
    from dreamjax import dream
  except ImportError:
    return None
  spec = dream.DreamSpec(objective=dream.LayerL2("conv1"), steps=20, step_size=0.02)
  return lambda x, y: dream.dream_dataset(model, variables, np.asarray(x), np.asarray(y), spec,
                                          jax.random.key(0), chunk_size=chunk,
                                          progress=lambda _: None)


def bench_library_ascent(args, kind, model, variables):
  """The same workload through dreamjax's own dream / PGD, when those modules exist."""
  try:
    if kind == "dream":
      run = library_dream(model, variables, chunk=64)
      if run is None:
        return None
      x, y = random_data(64)
      t = timed(lambda: run(x, y), repeats=args.repeats, inner=1)
      return {"image_steps_per_s": rates(t, 64 * 20), **t}
    if kind == "pgd":
      from dreamjax import adversarial
      x, y = random_data(128)
      fn = lambda: jax.block_until_ready(adversarial.pgd(
          model, variables, x, y, jax.random.key(0), eps=0.1, steps=10))
      t = timed(fn, repeats=args.repeats, inner=1)
      return {"image_steps_per_s": rates(t, 128 * 10), **t}
  except Exception as e:  # report, don't fail the whole benchmark
    return {"error": f"{type(e).__name__}: {e}"[:300]}
  return None


# --------------------------------------------------------------------------- VAE / GAN


def bench_generators(args) -> dict:
  from dreamjax.configs import generator as gcfg
  from dreamjax.generators import gan, vae
  cfg = gcfg.get_config()
  x, y = random_data()
  out = {}
  try:
    module = vae.make_module(cfg, IMAGE_SHAPE, 0)
    params = vae.init_params(cfg, IMAGE_SHAPE, 0, jax.random.key(0))["vae"]
    tx = vae.make_optimizer(cfg)
    state = {"variables": params, "opt_state": tx.init(params)}
    step = jax.jit(vae.make_train_step(module, tx, 128, 1.0), donate_argnums=0)
    box = {"s": state}

    def call():
      box["s"], m = step(box["s"], x, None, jax.random.key(1))
      m["loss"].block_until_ready()

    out["vae"] = {"images_per_s": rates(timed(call, repeats=args.repeats, inner=5), 128)}
  except Exception as e:
    out["vae"] = {"error": f"{type(e).__name__}: {e}"[:300]}
  try:
    gen, disc = gan.make_modules(cfg, IMAGE_SHAPE, 0)
    params = gan.init_params(cfg, IMAGE_SHAPE, 0, jax.random.key(0))
    tx = gan.make_optimizer(cfg)
    state = {"generator": params["generator"], "discriminator": params["discriminator"],
             "opt_g": tx.init(params["generator"]), "opt_d": tx.init(params["discriminator"])}
    step = jax.jit(gan.make_train_step(gen, disc, tx, 128, int(cfg.latent_dim),
                                       float(cfg.real_label)), donate_argnums=0)
    box = {"s": state}

    def call():
      box["s"], m = step(box["s"], x, None, jax.random.key(1))
      jax.block_until_ready(m)

    out["gan"] = {"images_per_s": rates(timed(call, repeats=args.repeats, inner=5), 128)}
  except Exception as e:
    out["gan"] = {"error": f"{type(e).__name__}: {e}"[:300]}
  return out


# --------------------------------------------------------------------------- memory


def memory_child(num_images: int, steps: int, chunk: int) -> None:
  """Dreams a whole split chunk by chunk; prints the peak resident set in MiB."""
  model = cnn("reference")
  variables = models.init_variables(model, jax.random.key(0), IMAGE_SHAPE)
  images = np.random.default_rng(0).random((num_images, *IMAGE_SHAPE), np.float32)
  run_library = library_dream(model, variables, chunk) if steps == 20 else None
  if run_library is not None:  # dreamjax's own chunked dreaming of a whole split
    run_library(images, np.zeros((num_images,), np.int32))
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "images": num_images, "steps": steps, "chunk": chunk,
                      "data_mib": images.nbytes / 2 ** 20, "via": "dreamjax.dream.dream_dataset"}))
    return
  out = np.empty_like(images)
  run = loop_variants(lambda v, x: dream_step(model, v, x), steps)["unrolled_jit"]
  for start in range(0, num_images, chunk):
    x = images[start:start + chunk]
    if len(x) < chunk:  # one shape: one compile
      x = np.concatenate([x, np.zeros((chunk - len(x), *IMAGE_SHAPE), np.float32)])
    out[start:start + chunk] = np.asarray(run(variables, x))[:len(images[start:start + chunk])]
  print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "images": num_images, "steps": steps, "chunk": chunk,
                    "data_mib": 2 * images.nbytes / 2 ** 20, "via": "bench.dream_step"}))


def bench_memory(args) -> dict:
  cmd = [sys.executable, __file__, "--_memory_child", str(args.memory_images),
         str(args.memory_steps), "256"]
  res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
  if res.returncode:
    return {"error": res.stderr[-500:]}
  return json.loads(res.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- torch


def bench_torch(args) -> dict | None:
  if not os.path.exists(TORCH_PYTHON):
    return {"skipped": f"{TORCH_PYTHON} not found (see benchmarks/README.md)"}
  res = subprocess.run([TORCH_PYTHON, os.path.join(HERE, "bench_torch.py"),
                        "--repeats", str(args.repeats)], capture_output=True, text=True,
                       timeout=3600)
  if res.returncode:
    return {"error": res.stderr[-500:]}
  return json.loads(res.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- ablations


def bench_ablations(args) -> dict:
  """Formulations dreamjax does not use, timed on the reference train step."""
  import flax.linen as nn
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
  from dreamjax import adversarial
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
  from dreamjax import _xla
  user_flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                        if f.split("=")[0].lstrip("-") not in _xla.CPU_FLAGS)
  for name, env in (
      ("without_dreamjax_xla_flags", dict(os.environ, DREAMJAX_NO_XLA_FLAGS="1",
                                          XLA_FLAGS=user_flags)),
      ("ynn_individual_convolution_off_only", dict(
          os.environ, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"))):
    res = subprocess.run([sys.executable, __file__, "--only", "train_step,seeds,pgd", "--repeats",
                          str(args.repeats)], env=env, capture_output=True, text=True, timeout=3600)
    out[name] = (json.loads(res.stdout.strip().splitlines()[-1])
                 if res.returncode == 0 else {"error": res.stderr[-500:]})
  return out


# --------------------------------------------------------------------------- report


def table(result: dict) -> str:
  rows = []

  def row(name, value, unit, extra=""):
    rows.append(f"{name:<44} {value:>12,.0f} {unit:<16} {extra}")

  r = result["results"]
  peak = r.get("matmul", {}).get("gflops")
  if peak:
    row("float32 matmul peak", peak, "GFLOP/s")
  for size in ("small", "reference"):
    e = r.get("train_step", {}).get(size)
    if e:
      frac = (f"{e['model_fraction_of_peak']:.0%} of peak ({e['model_mflop_per_image']:.0f} "
              f"MFLOP/image)" if e.get("model_fraction_of_peak") else "")
      if e.get("fraction_of_peak"):
        frac += f"; by XLA's count {e['fraction_of_peak']:.0%}"
      row(f"train step {size} CNN, batch 128 (median)", e["images_per_s"]["median"], "images/s", frac)
  c = r.get("ceiling")
  if c:
    frac = (f"{c['model_fraction_of_peak_bound']:.0%} of peak"
            if c.get("model_fraction_of_peak_bound") else "")
    row(f"bound: {c['model']} step's matrix work alone", c["images_per_s_bound"], "images/s",
        f"{frac} ({c['sum_ms']:.0f} ms)")
  s = r.get("seeds")
  if s:
    for name, v in s["images_per_s"].items():
      sp = s["speedup_vs_sequential"].get(name)
      row(f"{s['k']} seeds {s['model']}: {name}", v["best"], "images/s",
          f"{sp:.2f}x sequential" if sp else "")
  for kind in ("dream", "pgd"):
    e = r.get(kind)
    if e:
      frac = lambda v: f"{v['fraction_of_peak']:.0%} of peak" if v.get("fraction_of_peak") else ""
      for name in ("python_loop", "unrolled_jit", "fori_loop"):
        row(f"{kind} reference CNN: {name} (median)", e[name]["image_steps_per_s"]["median"],
            "image·steps/s", frac(e[name]))
      lib = e.get("library")
      if lib and "image_steps_per_s" in lib:
        row(f"{kind} reference CNN: dreamjax (median)", lib["image_steps_per_s"]["median"],
            "image·steps/s", frac(lib))
  for name, e in r.get("generators", {}).items():
    if "images_per_s" in e:
      row(f"{name} train step, batch 128 (median)", e["images_per_s"]["median"], "images/s")
  m = r.get("memory")
  if m and "peak_rss_mib" in m:
    row(f"peak RSS dreaming {m['images']} images", m["peak_rss_mib"], "MiB")
  t = r.get("torch")
  if t and "results" in t:
    for name, e in t["results"].items():
      row(f"PyTorch {t['version']}: {name} (median)", e["median"], e["unit"])
  return "\n".join(rows)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", default=",".join(ALL), help=f"comma list of {ALL}")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--ablations", action="store_true")
  p.add_argument("--memory_images", type=int, default=60000)
  p.add_argument("--memory_steps", type=int, default=20)
  p.add_argument("--json_out", default="")
  p.add_argument("--_memory_child", nargs=3, type=int, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args._memory_child:
    memory_child(*args._memory_child)
    return
  only = set(args.only.split(","))
  unknown = only - set(ALL)
  if unknown:
    p.error(f"--only: unknown {sorted(unknown)}; choose from {ALL}")
  r = {}
  if "matmul" in only:
    r["matmul"] = bench_matmul(args)
  peak = r.get("matmul", {}).get("gflops")
  if "train_step" in only:
    r["train_step"] = {s: bench_train_step(args, s, peak) for s in ("small", "reference")}
  if "ceiling" in only:
    r["ceiling"] = bench_ceiling(args, peak)
  if "seeds" in only:
    r["seeds"] = bench_seeds(args)
  for kind in ("dream", "pgd"):
    if kind in only:
      r[kind] = bench_ascent(args, kind, peak)
  if "generators" in only:
    r["generators"] = bench_generators(args)
  if "memory" in only:
    r["memory"] = bench_memory(args)
  if "torch" in only:
    r["torch"] = bench_torch(args)
  if args.ablations:
    r["ablations"] = bench_ablations(args)
  result = {
      "machine": {"platform": platform.platform(), "processor": platform.processor(),
                  "cpus": os.cpu_count(), "jax": jax.__version__,
                  "device": str(jax.devices()[0].device_kind),
                  "xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "load_average": os.getloadavg()},
      "repeats": args.repeats,
      "results": r,
  }
  print(table(result), file=sys.stderr)
  text = json.dumps(result)
  if args.json_out:
    with open(args.json_out, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
