"""The study classifier's convolutions, part by part, in dreamjax and in PyTorch.

``bench.py`` found the study's train step slower than PyTorch's channels_last
eager mode while the ascents (forward + input gradient) are faster. This times
each convolution of the study's classifier (``configs/study.py`` preset, 3×3
'SAME', batch ``train.batch_size``) in its three parts, each with a fixed
random cotangent: ``forward``; ``input_grad`` (the gradient a layer passes
down; the first layer's is not needed in training); ``weight_grad``. JAX runs
them jitted (NHWC, dreamjax's XLA flags); PyTorch, when
``benchmarks/.venv-torch`` exists, runs ``conv2d`` and
``aten.convolution_backward`` in a subprocess, NCHW and channels_last, at the
CPU count in threads. Then the train step of both (from ``--step_ms``, or
``bench.py``'s JSON) less the sum of the parts it needs is the time spent
outside the convolutions (BatchNorm, ReLU, pooling, the dense layers, the
optimizer, the loss).

    python benchmarks/study_layers.py [--repeats 5] [--json_out F]
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_PYTHON = os.path.join(HERE, ".venv-torch", "bin", "python")
PARTS = ("forward", "input_grad", "weight_grad")


def cases(conv_features, pool, batch: int, image_hw: int = 28, channels: int = 1) -> list:
  """``(name, x NHWC, w HWIO, needed parts in training)`` of each 3×3 'SAME' conv."""
  out, hw, c = [], image_hw, channels
  for i, (f, p) in enumerate(zip(conv_features, pool)):
    needed = PARTS if i else ("forward", "weight_grad")  # no gradient for the image
    out.append((f"conv{i} 3x3 {c}->{f} @{hw}", (batch, hw, hw, c), (3, 3, c, f), needed))
    hw, c = ((hw + 1) // 2 if p else hw), f
  return out


def mflop(x_shape, w_shape) -> float:
  b, h, w, _ = x_shape
  return 2.0 * b * h * w * np.prod(w_shape) / 1e6


def jax_parts():
  """The three parts as jitted JAX functions of ``(x, w, g)`` (g: the output's cotangent)."""
  import jax  # pylint: disable=g-import-not-at-top

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  return {"forward": jax.jit(lambda x, w, g: conv(x, w)),
          "input_grad": jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
          "weight_grad": jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])}


def bench_jax(case_list, repeats: int, inner: int) -> dict:
  from benchlib import timed  # pylint: disable=g-import-not-at-top  (sets dreamjax's XLA flags)
  import jax  # pylint: disable=g-import-not-at-top
  parts = jax_parts()
  out = {}
  for name, xs, ws, _ in case_list:
    x = jax.random.normal(jax.random.key(0), xs)
    w = 0.1 * jax.random.normal(jax.random.key(1), ws)
    g = jax.random.normal(jax.random.key(2), (*xs[:3], ws[3]))
    out[name] = {p: 1e3 * timed(lambda f=f: jax.block_until_ready(f(x, w, g)), repeats=repeats,
                                inner=inner)["median_s"] for p, f in parts.items()}
  return out


def bench_torch_child(case_list, repeats: int, inner: int) -> dict:
  """Runs under the PyTorch interpreter: each part, NCHW and channels_last."""
  import torch  # pylint: disable=g-import-not-at-top
  from bench_torch import timed  # pylint: disable=g-import-not-at-top  (this interpreter has torch)
  torch.set_num_threads(os.cpu_count())
  out = {"version": torch.__version__, "threads": torch.get_num_threads(), "modes": {}}
  for mode in ("nchw", "channels_last"):
    fmt = ((lambda t: t.contiguous(memory_format=torch.channels_last)) if mode == "channels_last"
           else (lambda t: t.contiguous()))
    rows = {}
    for name, xs, ws, _ in case_list:
      b, h, wd, c = xs
      x = fmt(torch.randn(b, c, h, wd))
      w = fmt(0.1 * torch.randn(ws[3], ws[2], ws[0], ws[1]))
      g = fmt(torch.randn(b, ws[3], h, wd))

      def back(mask, x=x, w=w, g=g):
        return torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False,
                                                   [0, 0], 1, mask)

      fns = {"forward": lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1),
             "input_grad": lambda: back([True, False, False]),
             "weight_grad": lambda: back([False, True, False])}
      with torch.no_grad():
        rows[name] = {p: 1e3 * timed(f, repeats, inner)["median_s"] for p, f in fns.items()}
    out["modes"][mode] = rows
  return out


def bench_torch(case_list, repeats: int, inner: int) -> dict | None:
  if not os.path.exists(TORCH_PYTHON):
    return None
  spec = json.dumps({"cases": case_list, "repeats": repeats, "inner": inner})
  res = subprocess.run([TORCH_PYTHON, os.path.abspath(__file__), "--_torch_child", spec],
                       capture_output=True, text=True, timeout=1800)
  if res.returncode:
    return {"error": res.stderr[-1500:]}
  return json.loads(res.stdout.strip().splitlines()[-1])


def summarize(case_list, jax_ms: dict, torch_r: dict | None, step_ms: dict) -> dict:
  """Per framework: the sum of the parts training needs, and the step time outside them."""
  def needed_sum(rows):
    return sum(rows[name][p] for name, _, _, needed in case_list for p in needed)
  out = {"jax": {"conv_ms": needed_sum(jax_ms)}}
  if torch_r and "modes" in torch_r:
    for mode, rows in torch_r["modes"].items():
      out[f"torch_{mode}"] = {"conv_ms": needed_sum(rows)}
  for k, v in out.items():
    if step_ms.get(k):
      v["step_ms"] = step_ms[k]
      v["outside_conv_ms"] = step_ms[k] - v["conv_ms"]
  return out


def step_ms_from_bench(path: str, batch: int) -> dict:
  """One-seed study step, ms, of dreamjax and each PyTorch mode, from a bench.py JSON."""
  with open(path) as f:
    r = json.load(f)["results"]
  out = {"jax": 1e3 * batch / r["study_step"]["one_seed"]["images_per_s"]["median"]}
  for mode, key in (("nchw", "eager_nchw"), ("channels_last", "eager_channels_last")):
    m = r.get("torch", {}).get("workloads", {}).get("study_step_k1", {}).get("modes", {}).get(key)
    if m and m.get("median"):
      out[f"torch_{mode}"] = 1e3 * batch / m["median"]
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--inner", type=int, default=50)
  p.add_argument("--study_preset", default="quick")
  p.add_argument("--bench_json", default="",
                 help="bench.py JSON with study_step and torch entries: the step times")
  p.add_argument("--json_out", default="")
  p.add_argument("--_torch_child", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args._torch_child:
    spec = json.loads(args._torch_child)
    print(json.dumps(bench_torch_child([tuple(c) for c in spec["cases"]], spec["repeats"],
                                       spec["inner"])))
    return
  sys.path.insert(0, HERE)
  from benchlib import cpu_info  # pylint: disable=g-import-not-at-top
  from dreamjax.configs import study  # pylint: disable=g-import-not-at-top
  cfg = study.get_config(args.study_preset)
  batch = int(cfg.train.batch_size)
  case_list = cases(tuple(cfg.model.conv_features), tuple(cfg.model.pool), batch)
  jax_ms = bench_jax(case_list, args.repeats, args.inner)
  torch_r = bench_torch(case_list, args.repeats, args.inner)
  step_ms = step_ms_from_bench(args.bench_json, batch) if args.bench_json else {}
  result = {"machine": cpu_info(), "batch": batch,
            "cases": {name: {"mflop": mflop(xs, ws), "needed": list(needed)}
                      for name, xs, ws, needed in case_list},
            "jax_ms": jax_ms, "torch": torch_r,
            "summary": summarize(case_list, jax_ms, torch_r, step_ms)}
  for name, xs, ws, _ in case_list:
    cols = [f"jax {'/'.join(f'{jax_ms[name][q]:.3f}' for q in PARTS)}"]
    for mode, rows in ((torch_r or {}).get("modes") or {}).items():
      cols.append(f"torch {mode} {'/'.join(f'{rows[name][q]:.3f}' for q in PARTS)}")
    print(f"{name:22s} ms forward/input_grad/weight_grad: " + "  ".join(cols), file=sys.stderr)
  for k, v in result["summary"].items():
    extra = (f", step {v['step_ms']:.2f} ms, outside the convolutions {v['outside_conv_ms']:.2f}"
             if "step_ms" in v else "")
    print(f"{k:20s} convolutions a train step needs {v['conv_ms']:.2f} ms{extra}", file=sys.stderr)
  text = json.dumps(result)
  if args.json_out:
    with open(args.json_out, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
