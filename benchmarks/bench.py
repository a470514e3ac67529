"""dreamjax benchmarks: prints a readable table, then one JSON object (last line).

  python benchmarks/bench.py                 # everything (tens of minutes on 2 cores)
  python benchmarks/bench.py --only train_step,seeds --repeats 3
  python benchmarks/bench.py --only matmul,study_step,torch  # the study's model against PyTorch
  python benchmarks/bench.py --only matmul,train_step,ceiling  # how far the step is from its bound
  python benchmarks/bench.py --ablations     # + the formulations dreamjax rejected
  python benchmarks/bench.py --json_out out.json

Each entry times ``--repeats`` runs after warm-up (compilation excluded) and
reports the median and the best. PyTorch numbers come from
``benchmarks/bench_torch.py`` (every workload in every mode: NCHW / channels_last,
eager / ``torch.compile``) run by ``benchmarks/.venv-torch/bin/python`` if that
environment exists (see benchmarks/README.md); torch is never imported here and
is no dependency of dreamjax. The table then sets dreamjax against PyTorch's
fastest mode of each workload, measured in the same run.
"""

import argparse
import json
import os
import platform
import subprocess
import sys

from benchlib import cpu_info, matmul_peak
import jax

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_PYTHON = os.path.join(HERE, ".venv-torch", "bin", "python")
ALL = ("matmul", "train_step", "ceiling", "seeds", "study_step", "dream", "pgd", "generators",
       "memory", "study_bound", "torch")
GOAL = 1.2  # the target: dreamjax at least 1.2x PyTorch's fastest mode


def bench_memory(args) -> dict:
  cmd = [sys.executable, __file__, "--_memory_child", str(args.memory_images),
         str(args.memory_steps), "256"]
  res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
  if res.returncode:
    return {"error": res.stderr[-500:]}
  return json.loads(res.stdout.strip().splitlines()[-1])


def bench_torch(args) -> dict:
  if not os.path.exists(TORCH_PYTHON):
    return {"skipped": f"{TORCH_PYTHON} not found (see benchmarks/README.md)"}
  cmd = [TORCH_PYTHON, os.path.join(HERE, "bench_torch.py"), "--repeats", str(args.repeats),
         "--study_seeds", str(args.study_seeds), "--study_pgd_images",
         str(args.study_pgd_images), "--modes", args.torch_modes]
  if args.torch_threads:
    cmd += ["--threads", args.torch_threads]
  if args.smoke:
    cmd.append("--smoke")
  res = subprocess.run(cmd, capture_output=True, text=True, timeout=3 * 3600)
  if res.returncode:
    return {"error": res.stderr[-1500:]}
  return json.loads(res.stdout.strip().splitlines()[-1])


def comparisons(r: dict, k: int) -> list:
  """(workload id, label, the dreamjax rate dict) for every workload PyTorch also runs."""
  get = lambda *path: _dig(r, path)
  return [
      ("train_small", "train step, small CNN, batch 128", get("train_step", "small", "images_per_s")),
      ("train_reference", "train step, reference CNN, batch 128",
       get("train_step", "reference", "images_per_s")),
      ("study_step_k1", "study BN CNN step, batch 64, 1 seed",
       get("study_step", "one_seed", "images_per_s")),
      ("study_step_k5", f"study BN CNN step, batch 64, {k} seeds (torch: {k} models in turn)",
       get("study_step", "all_seeds", "images_per_s")),
      ("dream", "dream, reference CNN, 64 x 20 (dream_dataset)",
       get("dream", "library", "image_steps_per_s")),
      ("pgd", "PGD, reference CNN, 128 x 10 (adversarial.pgd)",
       get("pgd", "library", "image_steps_per_s")),
      ("study_pgd", f"study PGD eval, {k} models x 20 steps (robust_accuracy)",
       get("study_step", "pgd", "image_steps_per_s")),
  ]


def _dig(tree, path):
  for p in path:
    if not isinstance(tree, dict) or p not in tree:
      return None
    tree = tree[p]
  return tree


def compare(r: dict, k: int) -> dict:
  """dreamjax (median) against PyTorch's fastest mode (median) of each workload."""
  t = r.get("torch", {}).get("workloads", {})
  out = {}
  for wid, label, jax_rate in comparisons(r, k):
    w = t.get(wid)
    if not jax_rate or not w or not w.get("fastest"):
      continue
    best = w["modes"][w["fastest"]]["median"]
    out[wid] = {"label": label, "unit": w["unit"], "dreamjax": jax_rate["median"],
                "torch_fastest_mode": w["fastest"], "torch": best,
                "ratio": jax_rate["median"] / best, "meets_goal": jax_rate["median"] / best >= GOAL,
                "torch_modes": {m: v.get("median") for m, v in w["modes"].items()}}
  return out


def table(result: dict) -> str:
  rows = []

  def row(name, value, unit, extra=""):
    rows.append(f"{name:<58} {value:>12,.0f} {unit:<14} {extra}")

  r = result["results"]
  load = result["machine"]["load_average_before"][0]
  if load > 0.5:
    rows.append(f"WARNING: load average {load:.1f} before the run: other processes share the"
                " cores; PyTorch's OpenMP threads slow down 5-20x when a core is taken, so the"
                " comparison below is not a measurement")
  frac = lambda e, k="fraction_of_peak": f"{e[k]:.0%} of peak" if e.get(k) else ""
  peak = _dig(r, ("matmul", "gflops"))
  if peak:
    row("float32 matmul peak", peak, "GFLOP/s")
  for size, e in r.get("train_step", {}).items():
    row(f"train step {size} CNN, batch 128", e["images_per_s"]["median"], "images/s",
        f"{frac(e, 'model_fraction_of_peak')} ({e['model_mflop_per_image']:.1f} MFLOP/image);"
        f" XLA's count {frac(e)}")
  c = r.get("ceiling")
  if c:
    row(f"bound: {c['model']} step's matrix work alone", c["images_per_s_bound"], "images/s",
        f"{frac(c, 'model_fraction_of_peak_bound')} ({c['sum_ms']:.0f} ms)")
  s = r.get("seeds")
  if s:
    for name, v in s["images_per_s"].items():
      sp = s["speedup_vs_sequential"].get(name)
      row(f"{s['k']} seeds {s['model']}: {name}", v["best"], "images/s",
          f"{sp:.2f}x sequential" if sp else "")
  for name, e in r.get("study_step", {}).items():
    if "images_per_s" in e:
      row(f"study BN CNN step, batch {e['batch_size']}, K={e['k']}", e["images_per_s"]["median"],
          "images/s", f"{e['images_per_s_per_seed']['median']:,.0f} per seed;"
          f" {frac(e, 'model_fraction_of_peak')}, XLA's count {frac(e)}")
      if "sequential_images_per_s" in e:
        row(f"study BN CNN step, K={e['k']} one-seed programs in turn",
            e["sequential_images_per_s"]["median"], "images/s",
            f"K-seed program is {e['speedup_vs_sequential']:.2f}x this")
    elif "image_steps_per_s" in e:
      row(f"study PGD eval, K={e['k']}, {e['images']} images x {e['steps']} steps",
          e["image_steps_per_s"]["median"], "image·steps/s", frac(e))
  for kind in ("dream", "pgd"):
    e = r.get(kind)
    for name in ("python_loop", "unrolled_jit", "fori_loop", "library"):
      v = (e or {}).get(name) or {}
      if "image_steps_per_s" in v:
        row(f"{kind} reference CNN: {name}", v["image_steps_per_s"]["median"], "image·steps/s",
            frac(v))
  for name, e in r.get("generators", {}).items():
    if "images_per_s" in e:
      row(f"{name} train step, batch 128", e["images_per_s"]["median"], "images/s")
  m = r.get("memory")
  if m and "peak_rss_mib" in m:
    row(f"peak RSS dreaming {m['images']} images", m["peak_rss_mib"], "MiB")
  b = r.get("study_bound")
  if b and "bound_s" in b:
    row(f"study '{b['preset']}' arithmetic at peak ({b['count']} count)", b["bound_s"], "s",
        f"{b['total_tflop']:.1f} TFLOP")
  t = r.get("torch", {})
  for wid, w in t.get("workloads", {}).items():
    for mode, v in w["modes"].items():
      if "median" in v:
        row(f"PyTorch {t['version']} {wid}: {mode}", v["median"], w["unit"],
            "fastest" if mode == w["fastest"] else "")
      else:
        rows.append(f"PyTorch {wid}: {mode}: {v['error'][:120]}")
  for wid, v in r.get("comparison", {}).items():
    rows.append(f"{v['label']:<58} dreamjax {v['dreamjax']:>8,.0f} vs PyTorch"
                f" {v['torch']:>8,.0f} ({v['torch_fastest_mode']}): {v['ratio']:.2f}x"
                f"{'' if v['meets_goal'] else f'  < {GOAL}x'}")
  return "\n".join(rows)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", default=",".join(ALL), help=f"comma list of {ALL}")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--inner", type=int, default=5, help="train steps per timed repeat")
  p.add_argument("--ablations", action="store_true")
  p.add_argument("--study_preset", default="quick", help="study config preset of study_step")
  p.add_argument("--study_seeds", type=int, default=5, help="K of study_step and its PGD")
  p.add_argument("--study_pgd_images", type=int, default=500)
  p.add_argument("--study_wall_s", type=float, default=0.0,
                 help="a measured wall time of that study: study_bound's achieved fraction")
  p.add_argument("--torch_modes", default="eager_nchw,eager_channels_last,compile_nchw,"
                 "compile_channels_last")
  p.add_argument("--torch_threads", default="",
                 help="comma list of PyTorch thread counts (default: CPU count, + torch's own)")
  p.add_argument("--memory_images", type=int, default=60000)
  p.add_argument("--memory_steps", type=int, default=20)
  p.add_argument("--smoke", action="store_true",
                 help="tests: one call per timing, tiny sizes (numbers mean nothing)")
  p.add_argument("--json_out", default="")
  p.add_argument("--_memory_child", nargs=3, type=int, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args._memory_child:
    import ascent  # pylint: disable=g-import-not-at-top
    ascent.print_memory_child(*args._memory_child)
    return
  only = set(args.only.split(","))
  unknown = only - set(ALL)
  if unknown:
    p.error(f"--only: unknown {sorted(unknown)}; choose from {ALL}")
  if args.smoke:
    args.inner, args.study_pgd_images, args.memory_images = 1, min(args.study_pgd_images, 20), 512
  load_before = os.getloadavg()
  import ascent  # pylint: disable=g-import-not-at-top
  import workloads  # pylint: disable=g-import-not-at-top
  r = {}
  if "matmul" in only:
    r["matmul"] = matmul_peak(args.repeats)
  peak = _dig(r, ("matmul", "gflops"))
  if "train_step" in only:
    r["train_step"] = {s: workloads.bench_train_step(args, s, peak) for s in ("small", "reference")}
  if "ceiling" in only:
    r["ceiling"] = workloads.bench_ceiling(args, peak)
  if "seeds" in only:
    r["seeds"] = workloads.bench_seeds(args)
  if "study_step" in only:
    r["study_step"] = {"one_seed": workloads.bench_study_step(args, peak, 1),
                       "all_seeds": workloads.bench_study_step(args, peak, args.study_seeds),
                       "pgd": ascent.bench_study_pgd(args, peak, args.study_seeds)}
  for kind in ("dream", "pgd"):
    if kind in only:
      r[kind] = ascent.bench_ascent(args, kind, peak)
  if "generators" in only:
    r["generators"] = workloads.bench_generators(args)
  if "memory" in only:
    r["memory"] = bench_memory(args)
  if "study_bound" in only:
    import study_bound  # pylint: disable=g-import-not-at-top
    r["study_bound"] = study_bound.study_bound(
        workloads.study_config(args.study_preset), peak or matmul_peak(args.repeats)["gflops"],
        wall_s=args.study_wall_s or None, preset=args.study_preset)
  if "torch" in only:
    r["torch"] = bench_torch(args)
    r["comparison"] = compare(r, args.study_seeds)
  if args.ablations:
    import ablations  # pylint: disable=g-import-not-at-top
    r["ablations"] = ablations.bench_ablations(args)
  result = {
      "machine": {"platform": platform.platform(), **cpu_info(), "jax": jax.__version__,
                  "device": str(jax.devices()[0].device_kind),
                  "xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "load_average_before": load_before, "load_average_after": os.getloadavg()},
      "repeats": args.repeats, "smoke": args.smoke,
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
