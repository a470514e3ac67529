"""PyTorch CPU baselines for benchmarks/bench.py: the same CNN workloads.

Runs only in the separate environment ``benchmarks/.venv-torch`` (see
benchmarks/README.md); prints one JSON object. The models mirror
``dreamjax.models.CNN`` at the "small" and "reference" sizes: conv3×3 'SAME' +
ReLU (+2×2 max-pool) blocks, dense + ReLU, dense 10; AdamW, batch 128.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn

SIZES = {"small": ((32, 64), (True, True), (128,)),
         "reference": ((32, 64, 128), (False, True, True), (256,))}


class CNN(nn.Module):
  def __init__(self, conv, pool, dense):
    super().__init__()
    layers, c, hw = [], 1, 28
    self.convs = nn.ModuleList()
    for f in conv:
      self.convs.append(nn.Conv2d(c, f, 3, padding=1))
      c = f
    self.pool = pool
    for p in pool:
      hw = hw // 2 if p else hw
    dims = [c * hw * hw, *dense]
    self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    self.head = nn.Linear(dims[-1], 10)

  def forward(self, x, upto_conv: int | None = None):
    for i, (conv, p) in enumerate(zip(self.convs, self.pool)):
      x = torch.relu(conv(x))
      if upto_conv == i:
        return x
      if p:
        x = torch.nn.functional.max_pool2d(x, 2)
    x = x.flatten(1)
    for d in self.dense:
      x = torch.relu(d(x))
    return self.head(x)


def timed(fn, repeats, inner, warmup=2):
  for _ in range(warmup):
    fn()
  per = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(inner):
      fn()
    per.append((time.perf_counter() - t0) / inner)
  return float(np.median(per)), float(np.min(per))


def entry(t, units, unit):
  return {"median": units / t[0], "best": units / t[1], "unit": unit}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args()
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  data = torch.rand(2048, 1, 28, 28)
  labels = torch.randint(0, 10, (2048,))
  out = {}
  for size, spec in SIZES.items():
    model = CNN(*spec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

    def step():
      idx = torch.randint(0, 2048, (128,))
      opt.zero_grad(set_to_none=True)
      loss = nn.functional.cross_entropy(model(data[idx]), labels[idx])
      loss.backward()
      opt.step()

    out[f"train step {size} CNN, batch 128"] = entry(timed(step, args.repeats, 5), 128, "images/s")
  model = CNN(*SIZES["reference"])
  for prm in model.parameters():
    prm.requires_grad_(False)

  def dream():
    x = data[:64].clone()
    for _ in range(20):
      x.requires_grad_(True)
      obj = model(x, upto_conv=1).square().mean((1, 2, 3)).sum()
      (g,) = torch.autograd.grad(obj, x)
      with torch.no_grad():
        g = g / (g.abs().mean((1, 2, 3), keepdim=True) + 1e-8)
        x = (x + 0.02 * g).clamp(0, 1)

  out["dream reference CNN, 64 images x 20 steps"] = entry(
      timed(dream, args.repeats, 1), 64 * 20, "image·steps/s")

  def pgd():
    x0, y = data[:128], labels[:128]
    x = x0.clone()
    for _ in range(10):
      x.requires_grad_(True)
      loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
      (g,) = torch.autograd.grad(loss, x)
      with torch.no_grad():
        x = torch.min(torch.max(x + 0.025 * g.sign(), x0 - 0.1), x0 + 0.1).clamp(0, 1)

  out["pgd reference CNN, 128 images x 10 steps"] = entry(
      timed(pgd, args.repeats, 1), 128 * 10, "image·steps/s")
  print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(),
                    "results": out}))


if __name__ == "__main__":
  main()
