"""The benchmark scripts still run against the library they measure.

Smoke tests only: tiny settings, keys present and numbers positive. Speed is
measured by benchmarks/bench.py on a quiet machine, never asserted here.
"""

import json
import os
import subprocess
import sys

from conftest import REPO

BENCH = os.path.join(REPO, "benchmarks")


def _import(name):
  sys.path.insert(0, BENCH)
  try:
    return __import__(name)
  finally:
    sys.path.remove(BENCH)


def test_bench_runs_and_reports_fraction_of_peak():
  out = subprocess.run([sys.executable, os.path.join(BENCH, "bench.py"), "--smoke",
                        "--only", "matmul,pgd,ceiling,study_step", "--repeats", "1",
                        "--study_seeds", "2"],
                       capture_output=True, text=True, cwd=REPO, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["machine"]["cpu_model"] is not None and result["smoke"]
  r = result["results"]
  assert r["matmul"]["gflops"] > 0
  pgd = r["pgd"]
  for name in ("python_loop", "unrolled_jit", "fori_loop", "library"):
    assert pgd[name]["image_steps_per_s"]["median"] > 0, name
    assert pgd[name]["fraction_of_peak"] > 0, name  # cost analysis and peak both present
  assert "pgd reference CNN: library" in out.stderr  # the readable table
  ceiling = r["ceiling"]
  assert len(ceiling["pieces"]) == 3 * 3 - 1 + 2 * 3  # no input gradient of the images
  assert abs(sum(p["ms"] for p in ceiling["pieces"].values()) - ceiling["sum_ms"]) < 1e-6
  assert ceiling["model_fraction_of_peak_bound"] > 0
  study = r["study_step"]
  for name, k in (("one_seed", 1), ("all_seeds", 2)):
    e = study[name]
    assert e["k"] == k and e["batch_size"] == 64, name
    assert e["images_per_s"]["median"] > 0 and e["images_per_s_per_seed"]["median"] > 0
    assert e["fraction_of_peak"] > 0 and e["model_fraction_of_peak"] > 0
  assert study["pgd"]["k"] == 2 and study["pgd"]["steps"] == 20
  assert study["pgd"]["image_steps_per_s"]["median"] > 0
  assert study["pgd"]["fraction_of_peak"] > 0
  assert "study BN CNN step, batch 64, K=2" in out.stderr


def test_comparison_takes_torch_s_fastest_mode():
  bench = _import("bench")
  rate = lambda v: {"median": v, "best": v}
  r = {"train_step": {"small": {"images_per_s": rate(300.0)}},
       "torch": {"workloads": {
           "train_small": {"unit": "images/s", "fastest": "eager_channels_last", "modes": {
               "eager_nchw": {"median": 100.0}, "eager_channels_last": {"median": 200.0},
               "compile_nchw": {"error": "no compiler"}}},
           "pgd": {"unit": "image·steps/s", "fastest": "eager_nchw",
                   "modes": {"eager_nchw": {"median": 5.0}}}}}}
  c = bench.compare(r, 5)
  assert set(c) == {"train_small"}  # no dreamjax PGD in this run: no PGD row
  assert c["train_small"]["torch_fastest_mode"] == "eager_channels_last"
  assert c["train_small"]["ratio"] == 1.5 and c["train_small"]["meets_goal"]
  assert c["train_small"]["torch_modes"]["compile_nchw"] is None


def test_model_flops_count_the_reference_cnn_as_specified():
  benchlib = _import("benchlib")
  # Forward 61.47 MFLOP per image (convolutions 0.45 + 28.90 + 28.90, dense 3.21 + 0.005);
  # a train step is three times that, less the images' own gradient.
  assert abs(benchlib.model_flops_per_image("reference") / 1e6 - 183.96) < 0.01


def test_study_bound_counts_a_tiny_study_by_hand():
  study_bound = _import("study_bound")
  from dreamjax.configs import study
  config = study.get_config("tiny")  # model conv (4, 8) pooled, dense 16, BatchNorm, 10 classes
  config.arms = ("baseline",)
  config.exchange.label_factors = ()
  # Forward per image: conv0 28·28·9·1·4·2 + conv1 14·14·9·4·8·2 + dense 7·7·8·16·2 + head 16·10·2.
  fwd = 56448 + 112896 + 12544 + 320
  step = 3 * fwd - 56448  # forward, input and weight gradients; none for the images
  u = study_bound.unit_flops(config, "model")
  assert u["forward_image"] == fwd and u["input_grad_image"] == 2 * fwd
  k, steps, batch = 2, 30, 32
  assert u["train_step"] == step * batch * k
  f = study_bound.study_flops(config, u)
  assert len(f["cells"]) == 1
  assert f["parts"]["training"] == steps * batch * k * step
  # 64 images at each of the 2 radii, 20 steps, clean + final pass.
  robust = 2 * 64 * k * (20 * 2 * fwd + fwd + fwd)
  clean = k * fwd * (10_000 + 3 * 200)  # test split, and 3 validation points of 200 images
  assert f["parts"]["evaluation"] == robust + clean
  assert f["parts"]["oracle"] == 40 * 64 * step + 10_000 * fwd
  assert f["parts"]["generation"] == f["parts"]["generator_training"] == 0
  b = study_bound.study_bound(config, 100.0, wall_s=10.0, count="model")
  assert abs(b["bound_s"] - f["total"] / 100e9) < 1e-12
  assert abs(b["achieved_fraction"] - b["bound_s"] / 10.0) < 1e-12
  # XLA's count of the compiled programs: same order as the hand count (it adds the
  # elementwise work and leaves out the padded border).
  x = study_bound.study_bound(config, 100.0, count="xla")
  assert 0.5 < x["parts_tflop"]["training"] / b["parts_tflop"]["training"] < 3


def test_profile_study_splits_cell_time(tmp_path):
  profile_study = _import("profile_study")
  rows = [{"cell": "oracle", "arm": "oracle", "timing": {"train_seconds": 10.0,
                                                        "xla": {"programs": 3, "compile_seconds": 2.0}}},
          {"cell": "N100/dream_subtle", "arm": "dream_subtle", "base_arm": "dream_subtle",
           "timing": {"gen_seconds": 6.0, "train_seconds": 3.0, "eval_seconds": 1.0,
                      "cell_seconds": 12.0, "xla": {"programs": 5, "compile_seconds": 5.0}}}]
  with open(tmp_path / "results.jsonl", "w") as f:
    f.write("\n".join(json.dumps(r) for r in rows) + "\n")
  p = profile_study.profile(str(tmp_path))
  assert p["cells"] == 2 and p["xla_programs"] == 8
  assert abs(p["total_s"] - 22.0) < 1e-9  # every second of cell time, once
  assert p["parts_s"]["compiling"] == 7.0
  assert abs(p["parts_s"]["host work and the rest"] - 2.0) < 1e-9
  assert abs(p["parts_s"]["generation"] - 6.0 * 0.5) < 1e-9  # 10 s measured, 5 s of it compiling
  # A cell reading a shared generator (its whole cost recorded in gen_seconds) and a
  # baseline trained before its cell's clock started: each second is counted once.
  rows = [{"cell": "N100/gan_pool/M2", "timing": {"gen_seconds": 600.0, "train_seconds": 16.0,
                                                  "eval_seconds": 2.0, "cell_seconds": 24.0}},
          {"cell": "N100/baseline", "timing": {"gen_seconds": 0.0, "train_seconds": 18.0,
                                               "eval_seconds": 33.0, "cell_seconds": 36.0}}]
  with open(tmp_path / "results.jsonl", "w") as f:
    f.write("\n".join(json.dumps(r) for r in rows) + "\n")
  p = profile_study.profile(str(tmp_path))
  assert abs(p["total_s"] - (24.0 + 36.0 + 18.0)) < 1e-9
  assert abs(p["parts_s"]["generation"] - 6.0) < 1e-9
  assert abs(p["parts_s"]["training"] - 34.0) < 1e-9 and p["parts_s"]["evaluation"] == 35.0


def test_generator_layers_im2col_is_the_same_convolution():
  """generator_layers.py times each generator convolution against an im2col rewrite;
  the rewrite must compute the same function (stride 1 and 2, 'SAME' padding)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  g = _import("generator_layers")
  for xs, ws, stride in (((2, 28, 28, 1), (4, 4, 1, 16), 2), ((2, 14, 14, 16), (3, 3, 16, 4), 1),
                         ((2, 7, 7, 3), (3, 3, 3, 5), 2)):
    x = jax.random.normal(jax.random.key(0), xs)
    w = jax.random.normal(jax.random.key(1), ws)
    np.testing.assert_allclose(g._im2col(x, w, stride), g._conv(x, w, stride),
                               rtol=1e-4, atol=1e-4)


def test_study_layers_times_the_study_classifiers_convolutions():
  """study_layers.py: the quick preset's two convolutions at batch 64, the first
  without an input gradient (training needs none for the image)."""
  s = _import("study_layers")
  from dreamjax.configs import study  # pylint: disable=g-import-not-at-top
  cfg = study.get_config("quick")
  got = s.cases(tuple(cfg.model.conv_features), tuple(cfg.model.pool), cfg.train.batch_size)
  assert [(xs, ws, needed) for _, xs, ws, needed in got] == [
      ((64, 28, 28, 1), (3, 3, 1, 16), ("forward", "weight_grad")),
      ((64, 14, 14, 16), (3, 3, 16, 32), s.PARTS)]
  assert abs(s.mflop((64, 28, 28, 1), (3, 3, 1, 16)) - 2 * 64 * 28 * 28 * 9 * 16 / 1e6) < 1e-9


def test_study_layers_parts_are_the_convolution_and_its_adjoints():
  """forward is the 'SAME' 3×3 correlation; input_grad and weight_grad are its
  adjoints for the cotangent g: <conv(x, w), g> = <x, input_grad> = <w, weight_grad>."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  s = _import("study_layers")
  parts = s.jax_parts()
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
  g = jax.random.normal(jax.random.key(2), (2, 5, 6, 4))
  y = np.asarray(parts["forward"](x, w, g))
  xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  ref = sum(np.einsum("bhwc,cf->bhwf", xp[:, i:i + 5, j:j + 6], np.asarray(w)[i, j])
            for i in range(3) for j in range(3))
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
  inner = float((y * np.asarray(g)).sum())
  np.testing.assert_allclose(float((np.asarray(x) * parts["input_grad"](x, w, g)).sum()), inner,
                             rtol=1e-4)
  np.testing.assert_allclose(float((np.asarray(w) * parts["weight_grad"](x, w, g)).sum()), inner,
                             rtol=1e-4)


def test_study_layers_summary_is_the_step_less_the_needed_parts():
  s = _import("study_layers")
  case_list = [("a", None, None, ("forward", "weight_grad")), ("b", None, None, s.PARTS)]
  rows = {"a": {"forward": 1.0, "input_grad": 100.0, "weight_grad": 2.0},
          "b": {"forward": 3.0, "input_grad": 4.0, "weight_grad": 5.0}}
  out = s.summarize(case_list, rows, {"modes": {"channels_last": rows}},
                    {"jax": 20.0, "torch_channels_last": 16.0})
  assert out["jax"] == {"conv_ms": 15.0, "step_ms": 20.0, "outside_conv_ms": 5.0}
  assert out["torch_channels_last"]["outside_conv_ms"] == 1.0


def test_conv_forms_are_the_convolution_and_the_taps_candidate_has_xlas_gradients():
  """conv_forms.py: im2col and the nine taps compute XLA's convolution (one channel and
  several); the candidate for the model's first layer runs the taps forward and
  XLA's own gradients, to the bit."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  c = _import("conv_forms")
  for xs, ws in (((2, 9, 7, 1), (3, 3, 1, 5)), ((2, 6, 5, 3), (3, 3, 3, 4))):
    x = jax.random.normal(jax.random.key(0), xs)
    w = jax.random.normal(jax.random.key(1), ws)
    g = jax.random.normal(jax.random.key(2), (*xs[:3], ws[3]))
    want = c.conv_xla(x, w)
    for form in ("im2col", "taps"):
      np.testing.assert_allclose(c.FORMS[form](x, w), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c.taps_forward(x, w), want, rtol=1e-5, atol=1e-5)
    got = jax.jit(lambda x, w, g: jax.vjp(c.taps_forward, x, w)[1](g))(x, w, g)
    ref = jax.jit(lambda x, w, g: jax.vjp(c.conv_xla, x, w)[1](g))(x, w, g)
    for a, b in zip(got, ref):
      np.testing.assert_array_equal(a, b)
