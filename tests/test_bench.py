"""The benchmark script still runs against the library it measures (speed is not asserted)."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_bench_runs_and_reports_fraction_of_peak():
  out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "bench.py"),
                        "--only", "matmul,pgd,ceiling", "--repeats", "1"],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  r = result["results"]
  assert r["matmul"]["gflops"] > 0
  pgd = r["pgd"]
  for name in ("python_loop", "unrolled_jit", "fori_loop", "library"):
    assert pgd[name]["image_steps_per_s"]["median"] > 0, name
    assert 0 < pgd[name]["fraction_of_peak"] < 1.5, name  # cost analysis and peak both present
  assert "pgd reference CNN: dreamjax" in out.stderr  # the readable table
  ceiling = r["ceiling"]
  assert len(ceiling["pieces"]) == 3 * 3 - 1 + 2 * 3  # no input gradient of the images
  assert abs(sum(p["ms"] for p in ceiling["pieces"].values()) - ceiling["sum_ms"]) < 1e-6
  assert 0 < ceiling["model_fraction_of_peak_bound"] < 1.5


def test_model_flops_count_the_reference_cnn_as_specified():
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  try:
    import bench
  finally:
    sys.path.pop(0)
  # Forward 61.47 MFLOP per image (convolutions 0.45 + 28.90 + 28.90, dense 3.21 + 0.005);
  # a train step is three times that, less the images' own gradient.
  assert abs(bench.model_flops_per_image("reference") / 1e6 - 183.96) < 0.01
