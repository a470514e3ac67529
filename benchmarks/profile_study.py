r"""Where a finished study's time went: compiling, generating, training, evaluating.

  python benchmarks/profile_study.py runs/study            # table on stdout
  python benchmarks/profile_study.py runs/study --json     # one JSON object

Reads the study's results.jsonl (each cell records its generation, training
and evaluation seconds, and the XLA programs it built and the seconds spent
building them) and splits the sum of cell times into: compiling (XLA programs
built inside the cell, compiled or loaded from the cache), generation
(dreams, attacks, generator training and sampling, pretraining), training
(the classifier's steps, CAS included), evaluation (clean and robust
accuracy, label preservation, Fréchet features) and the rest (host work:
data, checkpoints, files). A pool generator trained once and read by several
cells is counted once, where it was trained. Compile seconds are counted where they happen, so
they are taken out of the part that triggered them in proportion to its time.
"""

import argparse
import json
import os
import sys
from collections import defaultdict


def profile(workdir: str) -> dict:
  parts = defaultdict(float)
  by_arm = defaultdict(float)
  programs = 0
  cells = 0
  with open(os.path.join(workdir, "results.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  for r in records:
    t = r.get("timing", {})
    total = float(t.get("cell_seconds", t.get("train_seconds", 0.0)))
    if not total:
      continue
    cells += 1
    xla = t.get("xla", {})
    compile_s = float(xla.get("compile_seconds", 0.0))
    programs += int(xla.get("programs", 0))
    gen, tr, ev = (float(t.get(k, 0.0)) for k in ("gen_seconds", "train_seconds", "eval_seconds"))
    if r.get("cell") == "oracle":
      tr = total
    elif tr + ev > total + 1.0:
      total += tr  # a baseline trains in its budget's context, before its cell's clock starts
    # A generator shared by seeds or by cells records its whole cost in every record that
    # reads it (the cost a claim weighs); the time spent in this cell is what is left.
    gen = min(gen, max(total - tr - ev, 0.0))
    measured = gen + tr + ev
    scale = max(measured - compile_s, 0.0) / measured if measured else 1.0
    parts["compiling"] += compile_s
    parts["generation"] += gen * scale
    parts["training"] += tr * scale
    parts["evaluation"] += ev * scale
    parts["host work and the rest"] += max(total - measured, 0.0)
    by_arm[r.get("base_arm") or r.get("arm", "?")] += total
  total = sum(parts.values())
  return {"workdir": workdir, "cells": cells, "xla_programs": programs, "total_s": total,
          "parts_s": dict(parts), "by_arm_s": dict(sorted(by_arm.items(), key=lambda x: -x[1]))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdir")
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args()
  p = profile(args.workdir)
  if args.json:
    print(json.dumps(p))
    return
  print(f"{args.workdir}: {p['cells']} cells, {p['total_s'] / 60:.1f} min of cell time,"
        f" {p['xla_programs']} XLA programs")
  for name, s in sorted(p["parts_s"].items(), key=lambda x: -x[1]):
    print(f"  {name:24s} {s / 60:6.1f} min  {100 * s / max(p['total_s'], 1e-9):5.1f}%")
  print("by arm (cell time):")
  for arm, s in p["by_arm_s"].items():
    print(f"  {arm:24s} {s / 60:6.1f} min")


if __name__ == "__main__":
  sys.exit(main())
