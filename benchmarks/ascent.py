"""The JAX input-gradient workloads of bench.py: Deep Dream and PGD on the
reference CNN (three loop forms and the library), the study's PGD evaluation,
and the memory of dreaming a whole split."""

import json
import resource

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchlib import (IMAGE_SHAPE, cnn, model_input_grad_flops_per_image, random_data, rates,
                      timed, xla_flops)
from dreamjax.plumbing import sharding
from dreamjax.training import models, seeds, train


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
    logits = model.apply(variables, x, train=False)
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
  step_flops = xla_flops(jax.jit(step), *call_args)  # one ascent step, all n images
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
  (conv1 mean squared activation, 20 steps)."""
  from dreamjax import dream  # pylint: disable=g-import-not-at-top
  spec = dream.DreamSpec(objective=dream.LayerL2("conv1"), steps=20, step_size=0.02)
  return lambda x, y: dream.dream_dataset(model, variables, np.asarray(x), np.asarray(y), spec,
                                          jax.random.key(0), chunk_size=chunk,
                                          progress=lambda _: None)


def bench_library_ascent(args, kind, model, variables):
  """The same workload through dreamjax's own dream / PGD."""
  try:
    if kind == "dream":
      run = library_dream(model, variables, chunk=64)
      x, y = random_data(64)
      t = timed(lambda: run(x, y), repeats=args.repeats, inner=1)
      return {"image_steps_per_s": rates(t, 64 * 20), **t}
    from dreamjax.methods import adversarial  # pylint: disable=g-import-not-at-top
    x, y = random_data(128)
    fn = lambda: jax.block_until_ready(adversarial.pgd(
        model, variables, x, y, jax.random.key(0), eps=0.1, steps=10))
    t = timed(fn, repeats=args.repeats, inner=1)
    return {"image_steps_per_s": rates(t, 128 * 10), **t}
  except Exception as e:  # noqa: BLE001  report, don't fail the whole benchmark
    return {"error": f"{type(e).__name__}: {e}"[:300]}


def bench_study_pgd(args, peak: float | None, k: int) -> dict:
  """The study's robust-accuracy evaluation of one cell: ``adversarial.robust_accuracy``
  on K seed-stacked BatchNorm CNNs (the study's ``model`` block), L∞ PGD with the
  preset's ε, steps and restarts, ``args.study_pgd_images`` test images in chunks
  of 500 (the library's default), through ``sharding.map_rows`` as a cell runs it."""
  from dreamjax.methods import adversarial  # pylint: disable=g-import-not-at-top
  from dreamjax.configs import study  # pylint: disable=g-import-not-at-top
  cfg = study.get_config(args.study_preset)
  model = cnn(cfg.model)
  mesh = sharding.make_mesh()
  tx = train.make_optimizer(cfg.train)
  variables_k = jax.jit(jax.vmap(lambda key: train.create_state(
      model, tx, models.init_variables(model, key, IMAGE_SHAPE)).variables))(
          seeds.seed_keys(range(k)))
  n, steps, restarts = args.study_pgd_images, int(cfg.eval.robust_steps), int(
      cfg.eval.robust_restarts)
  eps = float(tuple(cfg.eval.robust_eps)[-1])  # one ε; a cell attacks at each of them
  x, y = (np.asarray(a) for a in random_data(n))
  fn = lambda: adversarial.robust_accuracy(model, variables_k, x, y, jax.random.key(0), eps=eps,
                                           steps=steps, restarts=restarts, batch_size=500,
                                           mesh=mesh)
  t = timed(fn, repeats=args.repeats, inner=1, warmup=1)
  # XLA's count of one PGD step of all K models (what the walk repeats).
  one = seeds.map_seeds(lambda v, x0, x, y: pgd_step(model, v, x0, x, y, eps=eps),
                        in_axes=(0, None, 0, None))
  xs = jnp.broadcast_to(jnp.asarray(x), (k, *x.shape))
  step_flops = xla_flops(jax.jit(one), variables_k, jnp.asarray(x), xs, jnp.asarray(y))
  units = k * n * steps * restarts
  entry = {"k": k, "images": n, "steps": steps, "restarts": restarts, "eps": eps,
           "image_steps_per_s": rates(t, units), **t,
           "mflop_per_image_step": step_flops / (k * n) / 1e6 if step_flops else None,
           "model_mflop_per_image_step": model_input_grad_flops_per_image(model) / 1e6}
  if step_flops:
    entry["gflops"] = step_flops / (k * n) * units / t["min_s"] / 1e9
    if peak:
      entry["fraction_of_peak"] = entry["gflops"] / peak
  return entry


def memory_child(num_images: int, steps: int, chunk: int) -> dict:
  """Dreams a whole split chunk by chunk; returns the peak resident set in MiB."""
  model = cnn("reference")
  variables = models.init_variables(model, jax.random.key(0), IMAGE_SHAPE)
  images = np.random.default_rng(0).random((num_images, *IMAGE_SHAPE), np.float32)
  if steps == 20:  # dreamjax's own chunked dreaming of a whole split
    library_dream(model, variables, chunk)(images, np.zeros((num_images,), np.int32))
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "images": num_images, "steps": steps, "chunk": chunk,
            "data_mib": images.nbytes / 2 ** 20, "via": "dreamjax.dream.dream_dataset"}
  out = np.empty_like(images)
  run = loop_variants(lambda v, x: dream_step(model, v, x), steps)["unrolled_jit"]
  for start in range(0, num_images, chunk):
    x = images[start:start + chunk]
    if len(x) < chunk:  # one shape: one compile
      x = np.concatenate([x, np.zeros((chunk - len(x), *IMAGE_SHAPE), np.float32)])
    out[start:start + chunk] = np.asarray(run(variables, x))[:len(images[start:start + chunk])]
  return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "images": num_images, "steps": steps, "chunk": chunk,
          "data_mib": 2 * images.nbytes / 2 ** 20, "via": "ascent.dream_step"}


def print_memory_child(num_images: int, steps: int, chunk: int) -> None:
  print(json.dumps(memory_child(num_images, steps, chunk)))
