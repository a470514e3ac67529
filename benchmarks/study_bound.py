"""A study's arithmetic bound: its FLOPs at the measured matmul peak.

  python benchmarks/study_bound.py                       # quick preset, peak measured here
  python benchmarks/study_bound.py --preset full --peak_gflops 105 --wall_s 5400
  python benchmarks/study_bound.py --workdir runs/study  # wall time read off results.jsonl

``study_bound(config, peak_gflops)`` counts every piece of compute of
``dreamjax.study.run.runner.plan(config, arms)`` that does arithmetic of note:

* **training**: each cell's classifier, its budget's ``train.steps`` steps of all K seeds
  (the ``train.fit`` program; ``pgd_train`` cells with their PGD inside), and
  the oracle once;
* **evaluation**: each cell's clean test accuracy (``TEST_IMAGES`` images),
  its validation curve and its PGD robust accuracy (``robust_accuracy``:
  ``eval.robust_num_test`` images × K × restarts × (steps + 1), + the clean pass);
* **generation**: dreams (per seed, N·M images × every octave's steps), offline
  FGSM / PGD sets, and generator training — VAE / GAN on each seed's labeled set
  (``*_small``, per seed) or once per study on the shared pool (``*_pool``),
  autoencoder and rotation pretraining once per study — from each generator
  config's steps × its compiled train step.

Per-unit FLOPs come from ``count``: ``"xla"`` (default) uses XLA's
``jax.jit(f).lower(...).compile().cost_analysis()["flops"]`` of the very
programs the study runs (built from ``jax.eval_shape`` shapes, nothing is
executed); ``"model"`` counts the classifier's matrix work by hand (benchlib:
every 3×3 window in full, no elementwise work) and falls back to XLA's count
for the generators and the autoencoder, which have no hand count. Left out:
sampling, pseudo-labelling, label preservation and Fréchet features (forward
passes over at most a few thousand images per cell), the C3 alignment cell,
augmentation and data handling (no matrix work).
"""

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  pylint: disable=wrong-import-position
from benchlib import IMAGE_SHAPE, NUM_CLASSES  # noqa: E402  pylint: disable=wrong-import-position

TEST_IMAGES = 10_000  # Fashion-MNIST's test split, evaluated once per cell
DATA_ROWS = 1_000     # rows of the (abstract) training set a step gathers from: any will do


def _shape(f, *args):
  return jax.eval_shape(f, *args)


def _xla(fn, *abstract_args) -> float:
  flops = benchlib.xla_flops(jax.jit(fn), *abstract_args)
  if flops is None:
    raise RuntimeError("XLA's cost analysis gave no FLOP count on this backend.")
  return flops


def _images(*lead):
  return jax.ShapeDtypeStruct((*lead, *IMAGE_SHAPE), jnp.float32)


def _ints(*shape):
  return jax.ShapeDtypeStruct(shape, jnp.int32)


def _classifier_step_flops(model, tcfg, k, transform=None) -> float:
  """XLA's count of one ``train.fit`` step of K seeds (what ``train._compiled_step`` builds)."""
  from dreamjax.plumbing import sharding  # pylint: disable=g-import-not-at-top
  from dreamjax.training import models, seeds, train  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  bs = int(tcfg.batch_size)
  tx = train.make_optimizer(tcfg)
  keys = _shape(lambda: seeds.seed_keys(range(k)))
  state = _shape(jax.vmap(lambda key: train.create_state(
      model, tx, models.init_variables(model, key, IMAGE_SHAPE))), keys)
  step = seeds.map_seeds(train.make_train_step(model, bs, mesh, batch_transform=transform),
                         in_axes=(0, 0, 0, 0, 0))
  return _xla(step, state, _images(k, DATA_ROWS), _ints(k, DATA_ROWS), _ints(k), keys)


def _one_model_variables(model):
  from dreamjax.training import models  # pylint: disable=g-import-not-at-top
  return _shape(lambda: models.init_variables(model, jax.random.key(0), IMAGE_SHAPE))


def _attack_step(model, variables, x0, x, labels, eps=0.1, step_size=0.0125):
  import optax  # pylint: disable=g-import-not-at-top
  g = jax.grad(lambda x: optax.softmax_cross_entropy_with_integer_labels(
      model.apply(variables, x, train=False), labels).sum())(x)
  return jnp.clip(jnp.clip(x + step_size * jnp.sign(g), x0 - eps, x0 + eps), 0.0, 1.0)


def _generator_step_flops(config, arm: str, kind: str, conditional: bool
                          ) -> tuple[float, int, int]:
  """(XLA FLOPs of one step, steps, batch) of a study generator or pretraining run."""
  from dreamjax.methods import pretrain  # pylint: disable=g-import-not-at-top
  from dreamjax.plumbing import sharding  # pylint: disable=g-import-not-at-top
  from dreamjax.training import models  # pylint: disable=g-import-not-at-top
  from dreamjax.generators import diffusion, gan, vae  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import artefacts  # pylint: disable=g-import-not-at-top
  from dreamjax.configs import generator as gen_configs  # pylint: disable=g-import-not-at-top
  g = artefacts.generator_config(config, arm)
  bs = (gen_configs.generator_batch_size(g)[1] if kind in ("vae", "gan", "diffusion")
        else int(g.batch_size))
  mesh, key = sharding.make_mesh(), jax.random.key(0)
  classes = NUM_CLASSES if conditional else 0
  labels = _ints(DATA_ROWS) if conditional else None
  if kind == "vae":
    module, tx = vae.make_module(g, IMAGE_SHAPE, classes), vae.make_optimizer(g)
    v = _shape(lambda: vae.init_params(g, IMAGE_SHAPE, classes, key)["vae"])
    state = {"variables": v, "opt_state": _shape(tx.init, v)}
    step = vae.make_train_step(module, tx, bs, float(g.kl_weight), mesh)
  elif kind == "gan":
    gen, disc = gan.make_modules(g, IMAGE_SHAPE, classes)
    tx = gan.make_optimizer(g)
    p = _shape(lambda: gan.init_params(g, IMAGE_SHAPE, classes, key))
    state = {"generator": p["generator"], "discriminator": p["discriminator"],
             "opt_g": _shape(tx.init, p["generator"]), "opt_d": _shape(tx.init, p["discriminator"])}
    step = gan.make_train_step(gen, disc, tx, bs, int(g.latent_dim), float(g.real_label), mesh)
  elif kind == "diffusion":
    module, tx = diffusion.make_module(g, IMAGE_SHAPE, classes), diffusion.make_optimizer(g)
    v = _shape(lambda: diffusion.init_params(g, IMAGE_SHAPE, classes, key)["diffusion"])
    ema = float(g.diffusion_ema_decay)
    state = {"variables": v, "opt_state": _shape(tx.init, v), "step": _ints()}
    if ema:
      state["ema"] = v
    step = diffusion.make_train_step(module, tx, bs, float(g.diffusion_label_dropout), ema, mesh)
  elif kind == "ae":
    import optax  # pylint: disable=g-import-not-at-top
    model = models.make_model(config.model, NUM_CLASSES)
    decoder = pretrain.TrunkDecoder(IMAGE_SHAPE, tuple(model.conv_features), tuple(model.pool))
    cnn = _one_model_variables(model)
    fmap, _ = _shape(lambda v: pretrain._trunk_features(  # pylint: disable=protected-access
        model, v, jnp.zeros((1, *IMAGE_SHAPE)), False), cnn)
    dec = _shape(lambda: decoder.init(key, jnp.zeros(fmap.shape))["params"])
    tx = optax.adam(float(g.learning_rate))
    params = {"cnn": cnn["params"], "decoder": dec}
    state = {"params": params, "opt_state": _shape(tx.init, params),
             "batch_stats": cnn.get("batch_stats", {})}
    step = pretrain.make_autoencoder_step(model, decoder, tx, bs, mesh)
  else:  # pretext: the classifier with a 4-way head on rotated pool images, via train.fit
    model = models.make_model(config.model, 4)
    tcfg = pretrain._pretext_train_config(g)  # pylint: disable=protected-access
    return (_classifier_step_flops(model, tcfg, 1, pretrain.rotation_transform),
            int(g.steps), bs)
  return _xla(step, state, _images(DATA_ROWS), labels, key), int(g.steps), bs


def _dream_flops_per_image(config, arm, model, units, count) -> float:
  """FLOPs to dream one image with ``arm``'s settings: every octave's steps (through the
  pool dreamer for the arms whose source it is, by XLA's count in both modes)."""
  from dreamjax import dream  # pylint: disable=g-import-not-at-top
  from dreamjax.configs import arms as arms_lib  # pylint: disable=g-import-not-at-top
  from dreamjax.dream import engine  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import generate  # pylint: disable=g-import-not-at-top
  v = units["variables"]
  if arms_lib.get(arm).source == arms_lib.Classifier("pool_dreamer"):
    from dreamjax.methods import dreamer  # pylint: disable=g-import-not-at-top
    model, count = dreamer.model_of(config.pool_dreamer), "xla"
    v = _one_model_variables(model)
  spec = dream.from_config(generate.dream_config(config, arm), model)
  if count == "model":  # the whole network's input gradient per step: an upper estimate
    return spec.total_steps * units["input_grad_image"]
  chunk = int(config.dream_chunk)
  total = 0.0
  for hw in dream.octave_shapes(IMAGE_SHAPE[:2], spec.octaves, spec.octave_scale):
    x = jax.ShapeDtypeStruct((chunk, *hw, IMAGE_SHAPE[2]), jnp.float32)
    step = lambda v, x, s, y, m, key, i: engine.ascent_step(  # noqa: E731
        model, spec, IMAGE_SHAPE[:2], v, x, s, y, m, key, i)
    total += spec.steps * _xla(step, v, x, x, _ints(chunk), jax.ShapeDtypeStruct(
        (chunk,), jnp.float32), jax.random.key(0), _ints()) / chunk
  return total


def unit_flops(config, count: str = "xla") -> dict:
  """FLOPs of each repeated unit of work the study's plan is made of."""
  from dreamjax.training import models  # pylint: disable=g-import-not-at-top
  from dreamjax.configs import arms as arms_lib  # pylint: disable=g-import-not-at-top
  model = models.make_model(config.model, NUM_CLASSES)
  oracle = models.make_model(config.oracle.model, NUM_CLASSES)
  k, bs = int(config.num_seeds), int(config.train.batch_size)
  bases = {arms_lib.base_name(a) for a in config.arms}
  u = {"count": count, "variables": _one_model_variables(model)}
  if count == "model":
    fwd = sum(benchlib.model_forward_flops(model))
    u.update(train_step=benchlib.model_flops_per_image(model) * bs * k, forward_image=fwd,
             input_grad_image=benchlib.model_input_grad_flops_per_image(model),
             oracle_step=benchlib.model_flops_per_image(oracle) * int(config.oracle.train.batch_size))
    if "pgd_train" in bases:  # + the PGD walk (and 2 outcome passes) on the attacked rows
      adv = round(float(config.attack.train_fraction) * bs)
      u["pgd_train_step"] = u["train_step"] + k * adv * (
          int(config.attack.train_steps) * u["input_grad_image"] + 2 * fwd)
    if "dream_online" in bases:  # + the subtle dream of the dreamed rows, every step
      rows = round(float(config.online_fraction) * bs)
      u["dream_online_step"] = u["train_step"] + k * rows * (
          _dream_steps(config) * u["input_grad_image"] + 2 * fwd)
  else:
    chunk = 500
    v = u["variables"]
    u["forward_image"] = _xla(lambda v, x: model.apply(v, x, train=False), v,
                              _images(chunk)) / chunk
    u["input_grad_image"] = _xla(lambda v, x0, x, y: _attack_step(model, v, x0, x, y), v,
                                 _images(chunk), _images(chunk), _ints(chunk)) / chunk
    u["train_step"] = _classifier_step_flops(model, config.train, k)
    u["oracle_step"] = _classifier_step_flops(oracle, config.oracle.train, 1)
    if "pgd_train" in bases:
      from dreamjax.methods import adversarial  # pylint: disable=g-import-not-at-top
      a = config.attack
      u["pgd_train_step"] = _classifier_step_flops(model, config.train, k,
                                                   adversarial.adversarial_batch_transform(
          model, method="pgd", eps=float(a.eps), steps=int(a.train_steps),
          fraction=float(a.train_fraction)))
    if "dream_online" in bases:
      from dreamjax.dream import online  # pylint: disable=g-import-not-at-top
      from dreamjax.study.run import generate  # pylint: disable=g-import-not-at-top
      u["dream_online_step"] = _classifier_step_flops(model, config.train, k, online.batch_transform(
          model, generate.dream_config(config, "dream_online"),
          fraction=float(config.online_fraction)))
  u["oracle_forward_image"] = (sum(benchlib.model_forward_flops(oracle)) if count == "model" else
                               _xla(lambda v, x: oracle.apply(v, x, train=False),
                                    _one_model_variables(oracle), _images(500)) / 500)
  for arm in sorted(bases):  # XLA's count in both modes: no hand count of these models
    src = arms_lib.get(arm).source
    if isinstance(src, (arms_lib.Generator, arms_lib.Pretrained)):
      kind = src.family if isinstance(src, arms_lib.Generator) else src.objective
      cond = isinstance(src, arms_lib.Generator) and src.conditional
      u[arm] = dict(zip(("step", "steps", "batch_size"),
                        _generator_step_flops(config, arm, kind, cond)))
  u["dream"] = {a: _dream_flops_per_image(config, a, model, u, count)
                for c in _cells(config) for a in [c.arm]
                if arms_lib.get(a).group == "dream" and arms_lib.get(a).stores_images}
  return u


def _dream_steps(config) -> int:
  from dreamjax import dream  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import generate  # pylint: disable=g-import-not-at-top
  return dream.from_config(generate.dream_config(config, "dream_online"),
                           _model(config)).total_steps


def _model(config):
  from dreamjax.training import models  # pylint: disable=g-import-not-at-top
  return models.make_model(config.model, NUM_CLASSES)


def _cells(config):
  from dreamjax.configs import arms as arms_lib  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import runner  # pylint: disable=g-import-not-at-top
  return runner.plan(config, arms_lib.resolve(config))


def study_flops(config, u: dict) -> dict:
  """FLOPs of each part of the study, from the plan and the units of :func:`unit_flops`."""
  from dreamjax.configs import arms as arms_lib  # pylint: disable=g-import-not-at-top
  from dreamjax.study import spec as spec_lib  # pylint: disable=g-import-not-at-top
  k, e = int(config.num_seeds), config.eval
  robust = len(tuple(e.robust_eps)) * int(e.robust_num_test) * k * (
      int(e.robust_restarts) * (int(e.robust_steps) * u["input_grad_image"] + u["forward_image"])
      + u["forward_image"])  # at every ε, for the cells that measure robustness
  from dreamjax.study.run import cells as cells_lib  # pylint: disable=g-import-not-at-top
  parts = {"training": 0.0, "evaluation": 0.0, "generation": 0.0, "generator_training": 0.0}
  per_cell = []
  once = set()  # pool generators and pretraining: once per study (one shared pool)
  copies = {int(config.copies), *(int(m) for m in config.exchange.copies)}
  for cell in _cells(config):
    base = arms_lib.base_name(cell.arm)
    images = cell.budget * int(cell.copies)  # generated images per seed
    if arms_lib.get(base).per_copy:  # only the copies a smaller M's cell did not make
      smaller = [m for m in copies if m < int(cell.copies)]
      images = cell.budget * (int(cell.copies) - max(smaller, default=0))
    step = {"pgd_train": "pgd_train_step", "dream_online": "dream_online_step"}.get(base)
    steps = int(spec_lib.train_config(config, cell.budget).steps)  # the budget's length
    evals = steps // int(config.train.eval_every) if int(config.train.eval_every) else 1
    train = steps * u[step or "train_step"]
    if cell.main and arms_lib.get(base).group == "generator":
      train *= 2  # + CAS: a classifier trained on the samples alone
    ev = (robust if cells_lib.measures_robustness(config, cell) else 0.0) + k * u[
        "forward_image"] * (TEST_IMAGES + evals * int(config.val_size))
    gen = gen_train = 0.0
    if cell.arm in u["dream"]:
      gen = k * images * u["dream"][cell.arm]
    elif base in ("fgsm", "pgd"):
      walk = 1 if base == "fgsm" else int(config.attack.pgd_steps)
      gen = k * images * (walk * u["input_grad_image"] + 2 * u["forward_image"])
    elif base in u and isinstance(u[base], dict):
      g = u[base]
      runs = k if base.endswith("_small") else (0 if base in once else 1)
      once.add(base)
      gen_train = runs * g["steps"] * g["step"]
    per_cell.append({"cell": cell.key, "training": train, "evaluation": ev, "generation": gen,
                     "generator_training": gen_train})
    parts["training"] += train
    parts["evaluation"] += ev
    parts["generation"] += gen
    parts["generator_training"] += gen_train
  parts["oracle"] = (int(config.oracle.train.steps) * u["oracle_step"]
                     + TEST_IMAGES * u["oracle_forward_image"])
  return {"parts": parts, "cells": per_cell, "total": sum(parts.values())}


def study_bound(config, peak_gflops: float, *, wall_s: float | None = None, count: str = "xla",
                preset: str | None = None) -> dict:
  """The study's FLOPs, the seconds they take at ``peak_gflops``, and with a
  measured ``wall_s`` the achieved fraction of that peak."""
  u = unit_flops(config, count)
  f = study_flops(config, u)
  out = {"preset": preset, "count": count, "peak_gflops": peak_gflops,
         "cells": len(f["cells"]), "seeds": int(config.num_seeds),
         "parts_tflop": {k: v / 1e12 for k, v in f["parts"].items()},
         "total_tflop": f["total"] / 1e12, "bound_s": f["total"] / (peak_gflops * 1e9),
         "units_mflop": {k: _mflop(v) for k, v in u.items() if k not in ("count", "variables")}}
  if wall_s:
    out["wall_s"] = wall_s
    out["achieved_fraction"] = out["bound_s"] / wall_s
  return out


def _mflop(v):
  """Per-unit FLOPs in MFLOP for the report (step and batch counts stay as they are)."""
  if isinstance(v, dict):
    return {k: x if k in ("steps", "batch_size") else _mflop(x) for k, x in v.items()}
  return float(v) / 1e6


def wall_seconds(workdir: str) -> float:
  """A finished study's compute time: every cell's ``cell_seconds`` + the oracle's training."""
  total = 0.0
  with open(os.path.join(workdir, "results.jsonl")) as f:
    for line in f:
      if line.strip():
        t = json.loads(line).get("timing", {})
        total += float(t.get("cell_seconds", t.get("train_seconds", 0.0)))
  return total


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="quick", help="dreamjax/configs/study.py preset")
  p.add_argument("--count", default="xla", choices=("xla", "model", "both"))
  p.add_argument("--peak_gflops", type=float, default=0.0, help="default: measured here")
  p.add_argument("--wall_s", type=float, default=0.0, help="measured study wall time")
  p.add_argument("--workdir", default="", help="read the wall time off a study's results.jsonl")
  args = p.parse_args()
  from dreamjax.configs import study  # pylint: disable=g-import-not-at-top
  config = study.get_config(args.preset)
  peak = args.peak_gflops or benchlib.matmul_peak()["gflops"]
  wall = args.wall_s or (wall_seconds(args.workdir) if args.workdir else None)
  counts = ("xla", "model") if args.count == "both" else (args.count,)
  out = [study_bound(config, peak, wall_s=wall, count=c, preset=args.preset) for c in counts]
  for b in out:
    line = (f"study '{args.preset}' ({b['cells']} cells, {b['seeds']} seeds, {b['count']} count):"
            f" {b['total_tflop']:.2f} TFLOP = {b['bound_s']:.0f} s at {peak:.0f} GFLOP/s")
    if wall:
      line += f"; measured {wall:.0f} s: {b['achieved_fraction']:.1%} of peak"
    print(line + "\n  " + ", ".join(f"{k} {v:.2f}" for k, v in b["parts_tflop"].items())
          + " TFLOP", file=sys.stderr)
  print(json.dumps(out if len(out) > 1 else out[0]))


if __name__ == "__main__":
  main()
