"""Where a generator step's time goes, and what batching the study's seeds would gain.

Generators are the largest share of a study's time (benchmarks/README.md,
"Where a study's time goes"). This prints, for the study's generator config
(``configs/generator.py:default``, batch ``generator_batch_size``):

* ``steps``: one jitted train step of the conditional and the pool VAE and
  GAN, ms per step, XLA's MFLOP per step and the achieved GFLOP/s;
* ``layers``: each convolution of the VAE (the GAN's are the same shapes),
  forward, input gradient and weight gradient timed alone, with GFLOP/s from
  its multiply-adds, and the same convolution written as im2col + one matrix
  product (the rewrite that helps a one-channel convolution);
* ``seeds``: K conditional-VAE steps (one per seed, the study's ``vae_small``)
  as K one-seed programs in turn, as one program with K copies
  (:func:`dreamjax.training.seeds.map_seeds`) and as ``jax.vmap``;
* the matmul peak of the machine, for the fractions.

    python benchmarks/generator_layers.py [--repeats 5] [--seeds 5] [--json_out F]
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from benchlib import cpu_info, matmul_peak, timed, xla_flops
from dreamjax.training import seeds as seeds_lib
from dreamjax.plumbing import sharding
from dreamjax.configs import generator as generator_configs
from dreamjax.generators import gan, vae


def _config(conditional: bool):
  c = generator_configs.get_config("default")
  c.conditional, c.num_classes = conditional, (10 if conditional else 0)
  return c


def _data(n=1000):
  rng = np.random.default_rng(0)
  return (rng.random((n, 28, 28, 1), np.float32), (np.arange(n) % 10).astype(np.int32))


def _time_steps(step, state, data, repeats):
  box = {"state": state, "i": 0}

  def call():
    box["i"] += 1
    box["state"], m = step(box["state"], *data, jax.random.key(box["i"]))
    jax.block_until_ready(m)

  return timed(call, repeats=repeats, inner=20)


def bench_steps(repeats: int) -> dict:
  images, labels = _data()
  out = {}
  for name, module, conditional in (("vae_small", vae, True), ("gan_small", gan, True),
                                    ("vae_pool", vae, False), ("gan_pool", gan, False)):
    y = labels if conditional else None
    state, step, _ = module.prepare_training(_config(conditional), images, y, jax.random.key(1))
    data = (jnp.asarray(images), None if y is None else jnp.asarray(y))
    flops = xla_flops(step, state, *data, jax.random.key(0))
    t = _time_steps(step, state, data, repeats)
    out[name] = {**t, "ms_per_step": 1e3 * t["median_s"], "mflop_per_step": (flops or 0) / 1e6,
                 "gflops": (flops or 0) / t["median_s"] / 1e9}
  return out


def _conv(x, w, stride):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _im2col(x, w, stride):
  kh, kw, c, f = w.shape
  b, h, wd, _ = x.shape
  oh, ow = -(-h // stride), -(-wd // stride)
  ph, pw = max((oh - 1) * stride + kh - h, 0), max((ow - 1) * stride + kw - wd, 0)
  xp = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
  cols = [xp[:, i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride, :]
          for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(cols, axis=-1).reshape(-1, kh * kw * c)
  return (patches @ w.reshape(kh * kw * c, f)).reshape(b, oh, ow, f)


def bench_layers(repeats: int, batch: int) -> dict:
  """The VAE's convolutions at the study's batch (the GAN's D and G have the same)."""
  cases = {"encoder 4x4/2 1->16 @28": ((batch, 28, 28, 1), (4, 4, 1, 16), 2),
           "encoder 4x4/2 16->32 @14": ((batch, 14, 14, 16), (4, 4, 16, 32), 2),
           "decoder 3x3 32->64 @7": ((batch, 7, 7, 32), (3, 3, 32, 64), 1),
           "decoder 3x3 16->4 @14": ((batch, 14, 14, 16), (3, 3, 16, 4), 1)}
  out = {}
  for name, (xs, ws, stride) in cases.items():
    x = jax.random.normal(jax.random.key(0), xs)
    w = 0.1 * jax.random.normal(jax.random.key(1), ws)
    y_shape = jax.eval_shape(lambda x, w, s=stride: _conv(x, w, s), x, w).shape
    flops = 2.0 * np.prod(y_shape) * np.prod(ws[:3])
    row = {"mflop": flops / 1e6}
    for form, fn in (("conv", _conv), ("im2col", _im2col)):
      f = lambda x, w, fn=fn, s=stride: fn(x, w, s)
      parts = {"forward": jax.jit(f),
               "input_grad": jax.jit(jax.grad(lambda x, w: f(x, w).sum(), 0)),
               "weight_grad": jax.jit(jax.grad(lambda x, w: f(x, w).sum(), 1))}
      for part, g in parts.items():
        t = timed(lambda g=g: jax.block_until_ready(g(x, w)), repeats=repeats, inner=50)
        row[f"{form}_{part}_ms"] = 1e3 * t["median_s"]
        row[f"{form}_{part}_gflops"] = flops / t["median_s"] / 1e9
    out[name] = row
  return out


def bench_seeds(repeats: int, k: int) -> dict:
  """K seeds' conditional VAE steps: in turn, one K-copy program, vmap."""
  images, labels = _data()
  cfg = _config(True)
  mesh = sharding.default(None)
  module = vae.make_module(cfg, (28, 28, 1), 10)
  tx = vae.make_optimizer(cfg)
  batch = generator_configs.generator_batch_size(cfg)[1]
  raw = vae.make_train_step(module, tx, batch, float(cfg.kl_weight), mesh)
  fresh = lambda: [vae.prepare_training(cfg, images, labels, jax.random.key(s))[0]
                   for s in range(k)]
  x, y = jnp.asarray(images), jnp.asarray(labels)
  xk, yk = jnp.stack([x] * k), jnp.stack([y] * k)
  one = jax.jit(raw, donate_argnums=0)
  box = {"states": fresh(), "i": 0}

  def in_turn():
    box["i"] += 1
    keys = jax.random.split(jax.random.key(box["i"]), k)
    for s in range(k):
      box["states"][s], m = one(box["states"][s], x, y, keys[s])
    jax.block_until_ready(m)

  out = {"in_turn": timed(in_turn, repeats=repeats, inner=10)}
  for name, mapped in (("one_program", seeds_lib.map_seeds(raw)), ("vmap", jax.vmap(raw))):
    step = jax.jit(lambda st, a, b, key, mapped=mapped: mapped(st, a, b, jax.random.split(key, k)),
                   donate_argnums=0)
    box2 = {"state": seeds_lib.stack(fresh()), "i": 0}

    def call(step=step, box2=box2):
      box2["i"] += 1
      box2["state"], m = step(box2["state"], xk, yk, jax.random.key(box2["i"]))
      jax.block_until_ready(m)

    out[name] = timed(call, repeats=repeats, inner=10)
  base = out["in_turn"]["median_s"]
  return {"k": k, **{n: {**t, "ms_per_step_all_seeds": 1e3 * t["median_s"],
                         "speedup_vs_in_turn": base / t["median_s"]} for n, t in out.items()}}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--json_out", default="")
  args = p.parse_args()
  peak = matmul_peak(repeats=args.repeats)
  batch = generator_configs.generator_batch_size(_config(True))[1]
  result = {"machine": cpu_info(), "matmul": peak, "steps": bench_steps(args.repeats),
            "layers": bench_layers(args.repeats, batch), "seeds": bench_seeds(args.repeats,
                                                                              args.seeds)}
  best = peak["gflops"]
  for name, r in result["steps"].items():
    frac = f", {r['gflops'] / best:.0%} of peak" if best else ""
    print(f"{name:10s} {r['ms_per_step']:6.2f} ms/step  {r['mflop_per_step']:6.0f} MFLOP"
          f"  {r['gflops']:5.1f} GFLOP/s{frac}")
  for name, r in result["layers"].items():
    cells = "  ".join(f"{part} {r[f'conv_{part}_ms']:.3f}/{r[f'im2col_{part}_ms']:.3f} ms"
                      for part in ("forward", "input_grad", "weight_grad"))
    print(f"{name:26s} conv/im2col: {cells}")
  s = result["seeds"]
  print(f"{s['k']} VAE seeds per step: in turn {s['in_turn']['ms_per_step_all_seeds']:.1f} ms,"
        f" one program {s['one_program']['ms_per_step_all_seeds']:.1f} ms"
        f" ({s['one_program']['speedup_vs_in_turn']:.2f}x), vmap"
        f" {s['vmap']['ms_per_step_all_seeds']:.1f} ms ({s['vmap']['speedup_vs_in_turn']:.2f}x)")
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(result, f, indent=1)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
