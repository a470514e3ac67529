"""The benchmark script still runs against the library it measures (speed is not asserted)."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_bench_runs_and_reports_fraction_of_peak():
  out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "bench.py"),
                        "--only", "matmul,pgd", "--repeats", "1"],
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
