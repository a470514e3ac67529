"""Other formulations of the study classifier's two convolutions, part by part.

``study_layers.py`` found the study's train step behind PyTorch's channels_last
mode by two convolutions: the one-channel first layer's forward and the second
layer's weight gradient. This times, for each convolution of the study's
classifier (3×3 'SAME', NHWC, batch ``train.batch_size``), the parts training
needs (forward and weight gradient; the second layer's input gradient too),
each jitted, with a fixed random cotangent, in three formulations:

* ``xla``: ``lax.conv_general_dilated`` (what the model runs today);
* ``im2col``: the nine shifted copies of the padded input side by side along
  the channels, then one matrix product with the 9·C × F weights (its weight
  gradient is one product of the patches with the cotangent);
* ``taps``: the sum over the nine taps of a shifted copy times that tap's C × F
  weights (for C = 1 a broadcast multiply-add XLA can fuse into one loop).

Each formulation's output is checked against ``xla`` (max abs difference
printed): they are the same sum in another order, so equal up to rounding.

    python benchmarks/conv_forms.py [--repeats 5] [--inner 20] [--json_out F]
    python benchmarks/conv_forms.py --step [--rounds 3] [--json_out F]

``--step`` times the study's whole train step instead (``bench.py``'s
``study_step``: one seed, then a cell's K seeds as one program) with the
model's one-channel convolutions as XLA's conv and as :func:`taps_forward`
(the nine taps forward, XLA's own gradients), the two in turn ``--rounds``
times in one process, so both see the same machine.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from benchlib import cpu_info, timed  # noqa: E402  (sets dreamjax's XLA flags first)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from study_layers import cases  # noqa: E402


def _shifted(x):
  """The nine shifted copies of ``x`` (B, H, W, C) under a 3×3 'SAME' window, in HWIO
  tap order."""
  h, w = x.shape[1], x.shape[2]
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [p[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)]


def conv_xla(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_im2col(x, w):
  patches = jnp.concatenate(_shifted(x), axis=-1)  # (B, H, W, 9C), tap-major
  return jnp.einsum("bhwk,kf->bhwf", patches, w.reshape(-1, w.shape[-1]))


def conv_taps(x, w):
  taps = w.reshape(9, w.shape[2], w.shape[3])
  out = None
  for s, t in zip(_shifted(x), taps):
    term = s * t[0] if s.shape[-1] == 1 else jnp.einsum("bhwc,cf->bhwf", s, t)
    out = term if out is None else out + term
  return out


FORMS = {"xla": conv_xla, "im2col": conv_im2col, "taps": conv_taps}


@jax.custom_vjp
def taps_forward(x, w):
  """``conv_xla`` whose forward is :func:`conv_taps` and whose gradients are XLA's own
  (the taps' weight gradient is the slow one above): the candidate for the model's
  one-channel first layer."""
  return conv_taps(x, w)


def _taps_forward_fwd(x, w):
  return conv_taps(x, w), (x, w)


def _taps_forward_bwd(residuals, g):
  return jax.vjp(conv_xla, *residuals)[1](g)


taps_forward.defvjp(_taps_forward_fwd, _taps_forward_bwd)


def step_ab(args) -> dict:
  """The study's train step with its one-channel convolutions in either form, in turn."""
  import types  # pylint: disable=g-import-not-at-top
  import workloads  # pylint: disable=g-import-not-at-top
  from dreamjax.training import models  # pylint: disable=g-import-not-at-top
  xla = models.conv3x3_xla
  forms = {"xla": xla,
           "taps": lambda x, w: taps_forward(x, w) if x.shape[-1] == 1 else xla(x, w)}
  bench_args = types.SimpleNamespace(study_preset=args.study_preset, repeats=args.repeats,
                                     inner=args.inner)
  rows = []
  try:
    for r in range(args.rounds):
      for k in (1, args.study_seeds):
        for form, conv in forms.items():
          models.conv3x3_xla = conv
          e = workloads.bench_study_step(bench_args, None, k)
          rate = e["images_per_s"]["median"]
          rows.append({"round": r, "seeds": k, "form": form, "images_per_s": rate})
          print(f"round {r} seeds {k} {form:<5} {rate:10,.0f} images/s", flush=True)
  finally:
    models.conv3x3_xla = xla
  summary = {}
  for k in (1, args.study_seeds):
    med = {f: float(np.median([x["images_per_s"] for x in rows
                               if x["seeds"] == k and x["form"] == f])) for f in forms}
    summary[f"seeds{k}"] = {**med, "taps_over_xla": med["taps"] / med["xla"]}
    print(f"seeds {k}: taps / xla = {med['taps'] / med['xla']:.3f}"
          f" ({med['taps']:,.0f} vs {med['xla']:,.0f} images/s, medians of {args.rounds})")
  return {"cpu": cpu_info(), "jax": jax.__version__, "preset": args.study_preset,
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": rows, "summary": summary}


def parts(conv):
  return {"forward": jax.jit(lambda x, w, g: conv(x, w)),
          "input_grad": jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
          "weight_grad": jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--inner", type=int, default=20)
  ap.add_argument("--json_out", default=None)
  ap.add_argument("--step", action="store_true", help="time the whole train step, both forms")
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--study_preset", default="first")
  ap.add_argument("--study_seeds", type=int, default=5)
  args = ap.parse_args()
  if args.step:
    out = step_ab(args)
    if args.json_out:
      with open(args.json_out, "w") as f:
        json.dump(out, f, indent=1)
    return
  from dreamjax.configs import study as study_configs  # pylint: disable=g-import-not-at-top
  cfg = study_configs.get_config("quick")
  m = cfg.model
  case_list = cases(tuple(m.conv_features), tuple(m.get("pool", (True,) * len(m.conv_features))),
                    int(cfg.train.batch_size))
  rows = []
  for name, xs, ws, needed in case_list:
    x = jax.random.normal(jax.random.key(0), xs)
    w = 0.1 * jax.random.normal(jax.random.key(1), ws)
    g = jax.random.normal(jax.random.key(2), (*xs[:3], ws[3]))
    want = {p: f(x, w, g) for p, f in parts(conv_xla).items()}
    for form, conv in FORMS.items():
      for p, f in parts(conv).items():
        if p not in needed:
          continue
        diff = float(jnp.max(jnp.abs(f(x, w, g) - want[p])))
        ms = 1e3 * timed(lambda f=f: jax.block_until_ready(f(x, w, g)), repeats=args.repeats,
                         inner=args.inner)["median_s"]
        rows.append({"conv": name, "form": form, "part": p, "ms": ms, "max_abs_diff": diff})
        print(f"{name:<20} {p:<12} {form:<7} {ms:8.3f} ms   |Δ| {diff:.2e}", flush=True)
  out = {"cpu": cpu_info(), "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
         "batch": int(cfg.train.batch_size), "rows": rows}
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
