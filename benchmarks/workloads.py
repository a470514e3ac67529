"""The JAX training workloads of bench.py: train steps, their bound, seeds, the
study's own classifier, generators. Each ``bench_*`` returns one JSON-able dict.

Every step is compiled the way the library runs it: ``train.make_train_step``
on a mesh (:func:`dreamjax.plumbing.sharding.make_mesh`, every device), jitted with
replicated in/out shardings and the state donated, inputs placed by
:func:`dreamjax.plumbing.sharding.replicate`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from benchlib import (IMAGE_SHAPE, cnn, layer_shapes, model_flops_per_image, random_data,
                      rates, timed, xla_flops)
from dreamjax.plumbing import sharding
from dreamjax.training import models, seeds, train
from dreamjax.configs import common


def jit_replicated(fn, mesh, donate=True):
  rep = sharding.replicated(mesh)
  return jax.jit(fn, in_shardings=rep, out_shardings=rep,
                 donate_argnums=0 if donate else ())


def init_states(model, tx, keys):
  """Seed-stacked train states, as ``train.fit`` makes them."""
  return jax.jit(jax.vmap(lambda key: train.create_state(
      model, tx, models.init_variables(model, key, IMAGE_SHAPE))))(keys)


def with_peak(entry: dict, flops_per_call: float | None, model_flops_per_call: float,
              seconds: float, peak: float | None) -> dict:
  """Achieved GFLOP/s and fraction of ``peak``, on XLA's and on the model's count."""
  entry["model_gflops"] = model_flops_per_call / seconds / 1e9
  if peak:
    entry["model_fraction_of_peak"] = entry["model_gflops"] / peak
  if flops_per_call:
    entry["gflops"] = flops_per_call / seconds / 1e9
    if peak:
      entry["fraction_of_peak"] = entry["gflops"] / peak
  return entry


# --------------------------------------------------------------------------- train step


def bench_train_step(args, size: str, peak: float | None, batch_size: int = 128) -> dict:
  """One seed's AdamW step of ``size``'s CNN (K = 1, no seed axis)."""
  model = cnn(size)
  mesh = sharding.make_mesh()
  tx = train.make_optimizer(common.train_config())
  state = train.create_state(model, tx, models.init_variables(model, jax.random.key(0),
                                                              IMAGE_SHAPE))
  step = jit_replicated(train.make_train_step(model, batch_size, mesh), mesh)
  x, y = random_data()
  state, x, y, count = sharding.replicate(mesh, (state, x, y, jnp.int32(len(y))))
  flops = xla_flops(step, state, x, y, count, jax.random.key(0))
  box = {"state": state, "i": 0}

  def call():
    box["i"] += 1
    box["state"], m = step(box["state"], x, y, count, jax.random.key(box["i"]))
    m["loss"].block_until_ready()

  t = timed(call, repeats=args.repeats, inner=args.inner)
  per_image = model_flops_per_image(model)
  entry = {"images_per_s": rates(t, batch_size), **t, "batch_size": batch_size,
           "mflop_per_image": flops / batch_size / 1e6 if flops else None,
           "model_mflop_per_image": per_image / 1e6}
  return with_peak(entry, flops, per_image * batch_size, t["min_s"], peak)


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
    t = timed(lambda: jitted(*args_).block_until_ready(), repeats=args.repeats, inner=args.inner)
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


# --------------------------------------------------------------------------- K seeds


def bench_seeds(args, k: int = 3, size: str = "small") -> dict:
  """K seeds: K sequential single-seed steps vs one program (map_seeds, vmap)."""
  model = cnn(size)
  mesh = sharding.make_mesh()
  tx = train.make_optimizer(common.train_config())
  base = train.make_train_step(model, 128, mesh)
  keys = seeds.seed_keys(range(k))
  x, y = random_data()
  counts = jnp.full((k,), len(y), jnp.int32)
  x, y, counts, keys, count = sharding.replicate(mesh, (x, y, counts, keys, jnp.int32(len(y))))
  one = jit_replicated(base, mesh)
  axes = (0, None, None, 0, 0)
  programs = {"map_seeds": jit_replicated(seeds.map_seeds(base, in_axes=axes), mesh),
              "vmap": jit_replicated(jax.vmap(base, in_axes=axes), mesh)}
  out = {}
  stacked = sharding.replicate(mesh, init_states(model, tx, keys))
  box = {"states": [seeds.unstack(stacked, i) for i in range(k)]}

  def sequential():
    for i in range(k):
      box["states"][i], m = one(box["states"][i], x, y, count, keys[i])
    m["loss"].block_until_ready()

  out["sequential"] = rates(timed(sequential, repeats=args.repeats, inner=3), 128 * k)
  for name, prog in programs.items():
    box[name] = sharding.replicate(mesh, init_states(model, tx, keys))

    def call(name=name, prog=prog):
      box[name], m = prog(box[name], x, y, counts, keys)
      m["loss"].block_until_ready()

    out[name] = rates(timed(call, repeats=args.repeats, inner=3), 128 * k)
  seq = out["sequential"]["best"]
  return {"k": k, "model": size, "images_per_s": out,
          "speedup_vs_sequential": {n: out[n]["best"] / seq for n in programs}}


# --------------------------------------------------------------------------- the study


def study_config(preset: str = "quick"):
  from dreamjax.configs import study  # pylint: disable=g-import-not-at-top
  return study.get_config(preset)


def bench_study_step(args, peak: float | None, k: int) -> dict:
  """The study's classifier step exactly as ``train.fit`` runs a cell's K seeds:
  ``seeds.map_seeds`` over ``train.make_train_step(model, batch, mesh)``, per-seed
  padded training sets ``[K, N, ...]`` (the study's ``training_sets``), state and
  data replicated, one jitted program per step."""
  cfg = study_config(args.study_preset)
  model = cnn(cfg.model)
  bs, n = int(cfg.train.batch_size), int(cfg.budgets[0])
  mesh = sharding.make_mesh()
  tx = train.make_optimizer(cfg.train)
  step = jit_replicated(seeds.map_seeds(train.make_train_step(model, bs, mesh),
                                        in_axes=(0, 0, 0, 0, 0)), mesh)
  rng = np.random.default_rng(0)
  images = rng.random((k, n, *IMAGE_SHAPE), np.float32)
  labels = rng.integers(0, 10, (k, n)).astype(np.int32)
  roots = jax.vmap(lambda r: jax.random.fold_in(r, 1))(seeds.seed_keys(range(k)))
  state = init_states(model, tx, jax.vmap(lambda r: jax.random.fold_in(r, 0))(
      seeds.seed_keys(range(k))))
  state, images, labels, counts, roots = sharding.replicate(mesh, (
      state, jnp.asarray(images), jnp.asarray(labels), jnp.full((k,), n, jnp.int32), roots))
  fold = seeds.fold_in_each
  flops = xla_flops(step, state, images, labels, counts, fold(roots, 0))
  box = {"state": state, "i": 0}

  def call():
    box["i"] += 1
    box["state"], m = step(box["state"], images, labels, counts, fold(roots, box["i"]))
    m["loss"].block_until_ready()

  t = timed(call, repeats=args.repeats, inner=args.inner)
  per_image = model_flops_per_image(model)
  r = rates(t, bs * k)
  entry = {"k": k, "batch_size": bs, "budget": n, "images_per_s": r,
           "images_per_s_per_seed": {key: v / k for key, v in r.items()}, **t,
           "mflop_per_image": flops / (bs * k) / 1e6 if flops else None,
           "model_mflop_per_image": per_image / 1e6}
  if k > 1:  # the alternative to one K-seed program: K one-seed programs in turn
    one = jit_replicated(train.make_train_step(model, bs, mesh), mesh)
    box["states"] = [seeds.unstack(box["state"], i) for i in range(k)]
    rows = [seeds.unstack((images, labels, counts), i) for i in range(k)]

    def sequential():
      box["i"] += 1
      keys = fold(roots, box["i"])
      for i in range(k):
        box["states"][i], m = one(box["states"][i], *rows[i], keys[i])
      m["loss"].block_until_ready()

    entry["sequential_images_per_s"] = rates(
        timed(sequential, repeats=args.repeats, inner=args.inner), bs * k)
    entry["speedup_vs_sequential"] = r["median"] / entry["sequential_images_per_s"]["median"]
  return with_peak(entry, flops, per_image * bs * k, t["min_s"], peak)


# --------------------------------------------------------------------------- VAE / GAN


def bench_generators(args) -> dict:
  from dreamjax.configs import generator as gcfg  # pylint: disable=g-import-not-at-top
  from dreamjax.generators import gan, vae  # pylint: disable=g-import-not-at-top
  cfg = gcfg.get_config()
  mesh = sharding.make_mesh()
  x, _ = sharding.replicate(mesh, random_data())
  out = {}

  def run(name, step, state):
    box = {"s": sharding.replicate(mesh, state), "i": 0}
    flops = xla_flops(step, box["s"], x, None, jax.random.key(0))

    def call():
      box["i"] += 1
      box["s"], m = step(box["s"], x, None, jax.random.key(box["i"]))
      jax.block_until_ready(m)

    t = timed(call, repeats=args.repeats, inner=args.inner)
    out[name] = {"images_per_s": rates(t, 128), **t,
                 "mflop_per_image": flops / 128 / 1e6 if flops else None}

  try:
    module = vae.make_module(cfg, IMAGE_SHAPE, 0)
    params = vae.init_params(cfg, IMAGE_SHAPE, 0, jax.random.key(0))["vae"]
    tx = vae.make_optimizer(cfg)
    run("vae", jit_replicated(vae.make_train_step(module, tx, 128, 1.0, mesh), mesh),
        {"variables": params, "opt_state": tx.init(params)})
  except Exception as e:  # noqa: BLE001  report, don't fail the whole benchmark
    out["vae"] = {"error": f"{type(e).__name__}: {e}"[:300]}
  try:
    gen, disc = gan.make_modules(cfg, IMAGE_SHAPE, 0)
    params = gan.init_params(cfg, IMAGE_SHAPE, 0, jax.random.key(0))
    tx = gan.make_optimizer(cfg)
    run("gan", jit_replicated(gan.make_train_step(gen, disc, tx, 128, int(cfg.latent_dim),
                                                  float(cfg.real_label), mesh), mesh),
        {"generator": params["generator"], "discriminator": params["discriminator"],
         "opt_g": tx.init(params["generator"]), "opt_d": tx.init(params["discriminator"])})
  except Exception as e:  # noqa: BLE001
    out["gan"] = {"error": f"{type(e).__name__}: {e}"[:300]}
  return out
