"""PyTorch CPU baselines for benchmarks/bench.py: every workload in every mode.

Runs only in the separate environment ``benchmarks/.venv-torch`` (see
benchmarks/README.md); prints one JSON object (last line). The models mirror
``dreamjax.training.models.CNN``: conv3×3 'SAME' (+BatchNorm) + ReLU (+2×2 max-pool)
blocks, dense + ReLU, dense 10; AdamW.

Workloads (ids shared with bench.py's comparison):
  train_small, train_reference   AdamW step, batch 128, small / reference CNN
  study_step_k1, study_step_k5   the study's BN CNN (conv 16, 32; dense 64), batch 64;
                                 one model, and K models stepped one after another
  dream                          reference CNN, 64 images × 20 ascent steps on conv1
  pgd                            reference CNN, L∞ PGD, 128 images × 10 steps
  study_pgd                      K study BN CNNs (eval mode), L∞ PGD with random start,
                                 ε 0.1, 20 steps, 500 images each, one model after another

Modes: ``eager_nchw`` (PyTorch's default), ``eager_channels_last`` (model and
inputs in channels_last), ``compile_nchw`` / ``compile_channels_last``
(``torch.compile`` of the model, Inductor's default mode; its backward is
compiled too; the optimizer stays eager). Every mode runs with
``torch.set_num_threads(T)`` for each T of ``--threads`` (default: the CPU
count, and PyTorch's own default when that differs; on a machine where another
process holds a core, 2 OpenMP threads ran 5-20x slower than 1, see
benchmarks/README.md). Compilation happens in
the warm-up calls and is reported as ``warmup_s``, never in the timed runs.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn

SIZES = {"small": ((32, 64), (True, True), (128,), False),
         "reference": ((32, 64, 128), (False, True, True), (256,), False),
         "study": ((16, 32), (True, True), (64,), True)}
MODES = ("eager_nchw", "eager_channels_last", "compile_nchw", "compile_channels_last")
WORKLOADS = ("train_small", "train_reference", "study_step_k1", "study_step_k5", "dream", "pgd",
             "study_pgd")
CL = torch.channels_last


class CNN(nn.Module):
  def __init__(self, conv, pool, dense, use_bn):
    super().__init__()
    c, hw = 1, 28
    self.convs = nn.ModuleList()
    self.bns = nn.ModuleList() if use_bn else None
    for f in conv:
      self.convs.append(nn.Conv2d(c, f, 3, padding=1, bias=not use_bn))
      if use_bn:  # Flax momentum 0.9 = PyTorch momentum 0.1, eps 1e-5 in both
        self.bns.append(nn.BatchNorm2d(f, eps=1e-5, momentum=0.1))
      c = f
    self.pool = pool
    for p in pool:
      hw = (hw + 1) // 2 if p else hw
    dims = [c * hw * hw, *dense]
    self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    self.head = nn.Linear(dims[-1], 10)

  def forward(self, x, upto_conv: int = -1):
    for i, (conv, p) in enumerate(zip(self.convs, self.pool)):
      x = conv(x)
      if self.bns is not None:
        x = self.bns[i](x)
      x = torch.relu(x)
      if upto_conv == i:
        return x
      if p:
        x = nn.functional.max_pool2d(x, 2, ceil_mode=True)
    x = x.flatten(1)
    for d in self.dense:
      x = torch.relu(d(x))
    return self.head(x)


def timed(fn, repeats, inner, warmup=2, slow_s=20.0):
  """Median and min seconds per call after ``warmup`` calls (compilation included
  there, as ``warmup_s``). A mode whose last warm-up call took over ``slow_s``
  is timed once (``capped``): it is far from the fastest mode, and its repeats
  would only lengthen the run."""
  t0 = time.perf_counter()
  last = 0.0
  for _ in range(warmup):
    t1 = time.perf_counter()
    fn()
    last = time.perf_counter() - t1
  warm = time.perf_counter() - t0
  capped = warmup > 1 and last * inner > slow_s
  if capped:
    repeats, inner = 1, 1
  per = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(inner):
      fn()
    per.append((time.perf_counter() - t0) / inner)
  return {"median_s": float(np.median(per)), "min_s": float(np.min(per)), "warmup_s": warm,
          "capped": capped}


def layout(mode):
  """How ``mode`` lays out an input batch."""
  if mode.endswith("channels_last"):
    return lambda x: x.contiguous(memory_format=CL)
  return lambda x: x


def prepare(model, mode):
  """The model in ``mode``'s memory format, compiled for ``compile_*``; and
  :func:`layout` of ``mode``."""
  if mode.endswith("channels_last"):
    model = model.to(memory_format=CL)
  run = torch.compile(model) if mode.startswith("compile") else model
  return run, layout(mode)


def make_models(size, k):
  return [CNN(*SIZES[size]) for _ in range(k)]


# Each workload: (mode, args) -> (fn, units per call, unit).


def train_workload(size, batch, k, n_data):
  def build(mode, args):
    data = torch.rand(n_data, 1, 28, 28)
    labels = torch.randint(0, 10, (n_data,))
    runs = []
    for model in make_models(size, k):
      run, fmt = prepare(model, mode)
      opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
      runs.append((model, run, fmt, opt))

    def step():
      for model, run, fmt, opt in runs:
        idx = torch.randint(0, n_data, (batch,))
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(run(fmt(data[idx])), labels[idx])
        loss.backward()
        opt.step()

    return step, batch * k, "images/s"
  return build


def frozen(model):
  model.eval()
  for prm in model.parameters():
    prm.requires_grad_(False)
  return model


def dream_workload(mode, args):
  run, fmt = prepare(frozen(CNN(*SIZES["reference"])), mode)
  x0 = fmt(torch.rand(64, 1, 28, 28))

  def dream():
    x = x0.clone()
    for _ in range(20):
      x.requires_grad_(True)
      obj = run(x, 1).square().mean((1, 2, 3)).sum()
      (g,) = torch.autograd.grad(obj, x)
      with torch.no_grad():
        g = g / (g.abs().mean((1, 2, 3), keepdim=True) + 1e-8)
        x = (x + 0.02 * g).clamp(0, 1)

  return dream, 64 * 20, "image·steps/s"


def pgd_walk(run, x0, y, eps, step_size, steps, random_start):
  x = x0 + (torch.rand_like(x0) * 2 - 1) * eps if random_start else x0.clone()
  x = x.clamp(0, 1)
  for _ in range(steps):
    x.requires_grad_(True)
    loss = nn.functional.cross_entropy(run(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
      x = torch.min(torch.max(x + step_size * g.sign(), x0 - eps), x0 + eps).clamp(0, 1)
  return x


def pgd_workload(mode, args):
  run, fmt = prepare(frozen(CNN(*SIZES["reference"])), mode)
  x0, y = fmt(torch.rand(128, 1, 28, 28)), torch.randint(0, 10, (128,))
  return (lambda: pgd_walk(run, x0, y, 0.1, 0.025, 10, False)), 128 * 10, "image·steps/s"


def study_pgd_workload(mode, args):
  """What ``adversarial.robust_accuracy`` computes per model: the clean outcome,
  one random-start walk, the walk's outcome; K models one after another."""
  k, n, steps, eps = args.study_seeds, args.study_pgd_images, 20, 0.1
  runs = [prepare(frozen(m), mode)[0] for m in make_models("study", k)]
  fmt = layout(mode)
  x0, y = fmt(torch.rand(n, 1, 28, 28)), torch.randint(0, 10, (n,))

  def attack():
    for run in runs:
      with torch.no_grad():
        clean = run(x0).argmax(-1) == y
      x = pgd_walk(run, x0, y, eps, 2.5 * eps / steps, steps, True)
      with torch.no_grad():
        robust = clean & (run(x).argmax(-1) == y)
    return robust

  return attack, k * n * steps, "image·steps/s"


def builders(args):
  return {
      "train_small": train_workload("small", 128, 1, 2048),
      "train_reference": train_workload("reference", 128, 1, 2048),
      "study_step_k1": train_workload("study", 64, 1, 1000),
      "study_step_k5": train_workload("study", 64, args.study_seeds, 1000),
      "dream": dream_workload,
      "pgd": pgd_workload,
      "study_pgd": study_pgd_workload,
  }


INNER = {"train_small": 5, "train_reference": 5, "study_step_k1": 10, "study_step_k5": 5,
         "dream": 1, "pgd": 1, "study_pgd": 1}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--only", default=",".join(WORKLOADS))
  p.add_argument("--modes", default=",".join(MODES))
  p.add_argument("--threads", default="", help="comma list; default: CPU count (+ torch's own)")
  p.add_argument("--study_seeds", type=int, default=5)
  p.add_argument("--study_pgd_images", type=int, default=500)
  p.add_argument("--smoke", action="store_true", help="one call per timing, no warm-up repeats")
  args = p.parse_args()
  default_threads = torch.get_num_threads()
  threads = ([int(t) for t in args.threads.split(",")] if args.threads
             else sorted({os.cpu_count(), default_threads}))
  modes = [m for m in args.modes.split(",") if m]
  unknown = (set(modes) - set(MODES)) | (set(args.only.split(",")) - set(WORKLOADS))
  if unknown:
    p.error(f"unknown {sorted(unknown)}; modes {MODES}, workloads {WORKLOADS}")
  out = {}
  for wid in [w for w in WORKLOADS if w in args.only.split(",")]:
    entry = {"modes": {}}
    for t in threads:
      torch.set_num_threads(t)
      for mode in modes:
        name = mode if len(threads) == 1 else f"{mode}@{t}t"
        torch.manual_seed(0)
        try:
          fn, units, unit = builders(args)[wid](mode, args)
          inner = 1 if args.smoke else INNER[wid]
          r = timed(fn, args.repeats, inner, warmup=1 if args.smoke else 2)
          entry["modes"][name] = {"median": units / r["median_s"], "best": units / r["min_s"],
                                  "threads": t, **r}
          entry.update(unit=unit, units_per_call=units)
        except Exception as e:  # noqa: BLE001  a mode that fails is reported, not fatal
          entry["modes"][name] = {"error": f"{type(e).__name__}: {e}"[:400], "threads": t}
        if mode.startswith("compile"):
          torch.compiler.reset()  # no recompilation limits carried into the next workload
    ok = {m: v for m, v in entry["modes"].items() if "median" in v}
    entry["fastest"] = max(ok, key=lambda m: ok[m]["median"]) if ok else None
    out[wid] = entry
  print(json.dumps({"version": torch.__version__, "threads": threads,
                    "threads_default": default_threads, "modes": modes,
                    "mkldnn": torch.backends.mkldnn.is_available(), "workloads": out}))


if __name__ == "__main__":
  main()
