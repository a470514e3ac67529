"""The study end to end on the tiny preset: outputs, resume, refusals, failures."""

import dataclasses
import json
import os
import signal
import subprocess
import re
import threading

import jax
import numpy as np
import pytest

from conftest import REPO, run_two_hosts, stray_files, tiny_study_cmd
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import read_jsonl
from dreamjax import generators
from dreamjax.training import metrics
from dreamjax.configs import arms as arms_lib
from dreamjax.study.run import artefacts, generate, runner
from dreamjax.study import plan as plan_lib
from dreamjax.study import records as records_lib

_cmd = tiny_study_cmd  # the tiny study, every arm, in one process


def _job_keys(cfg) -> set[str]:
  """Every job the study of ``cfg`` runs: its cells and C3 alignments."""
  return {c.key for c in plan_lib.jobs(cfg, arms_lib.resolve(cfg))}


def _comparable(records):
  """Records without wall-clock fields, which no two runs share."""
  out = []
  for r in records:
    r = {k: v for k, v in r.items() if k not in ("timing", "gen_seconds", "train_seconds")}
    if "generation" in r:
      r["generation"] = {k: v for k, v in r["generation"].items()
                         if "seconds" not in k and "per_s" not in k}
    out.append(r)
  return sorted(out, key=lambda r: r["cell"])


def test_tiny_study_writes_every_output(tiny_study):
  records = read_jsonl(os.path.join(tiny_study, "results.jsonl"))
  cells = {r["cell"]: r for r in records}
  tiny = study_configs.get_config("tiny")
  expected = {c.key for c in runner.plan(tiny, arms_lib.resolve(tiny))}
  assert expected | {"oracle", "N100/alignment"} == set(cells)
  failed = {k: r.get("error") for k, r in cells.items() if r["status"] != "ok"}
  assert not failed
  base = cells["N100/baseline"]
  assert len(base["test_accuracy"]) == 2 and len(base["robust_accuracy"]) == 2
  assert all(0 <= a <= 1 for a in base["test_accuracy"])
  n = study_configs.get_config("tiny").eval.frechet_num_images
  for key, r in cells.items():
    if r["arm"] not in ("oracle", "alignment"):
      assert r["label_preservation"] is not None and r["frechet"] is not None, key
      assert r["frechet_num_images"] == n and r["kid"] is not None, key
  # The instrument: its shift invariance is recorded and printed.
  shifts = cells["oracle"]["shift_invariance"]
  assert [r["pixels"] for r in shifts] == [1, 2]
  assert all(0 <= r["accuracy"] <= 1 and 0 <= r["agreement"] <= 1 for r in shifts)
  for f in ("summary.csv", "REPORT.md", "claims.json", "figures/forest.png",
            "figures/exchange.png", "figures/robustness.png", "figures/generators.png",
            "figures/sweep.png", "figures/frechet.png", "figures/curves.png",
            "figures/samples.png", "figures/dreamers.png"):
    assert os.path.getsize(os.path.join(tiny_study, f)) > 0, f
  report = open(os.path.join(tiny_study, "REPORT.md")).read()
  for claim in ("C1", "C2", "C3", "C4", "C5", "C6", "C7"):
    assert f"**{claim}**" in report
  assert "## The instrument" in report
  assert f"| 2 | {shifts[1]['accuracy'] * 100:.2f} |" in report
  claims = json.load(open(os.path.join(tiny_study, "claims.json")))
  assert len(claims) == 7 and all(c["verdict"] for c in claims)
  # Every trained cell also left TensorBoard events with its history.
  events = metrics.read_scalars(os.path.join(tiny_study, "N100", "baseline", metrics.LOGDIR))
  steps = [r["step"] for r in cells["N100/baseline"]["history"]]
  assert [s for s, _ in events["loss"]] == steps
  np.testing.assert_allclose([v for _, v in events["loss"]],
                             [np.mean(r["loss"]) for r in cells["N100/baseline"]["history"]],
                             rtol=1e-6)
  assert "loss/seed1" in events and "val_accuracy" in events
  # The run is on record: when, how long, on what, by which command.
  (run,) = records_lib.read_sessions(tiny_study)
  assert run["status"] == "finished" and run["cells_before"] == 0
  assert run["cells_run"] == run["cells_total"] == len(cells) - 1  # all but the oracle
  assert run["seconds"] > 0 and run["machine"]["cores"] >= 1 and "study.py" in run["command"]
  assert "Wall time of all runs:" in report and "study.py --config" in report


def test_a_registered_arm_runs_in_a_tiny_study(tmp_path, real_data_dir, monkeypatch):
  """Adding an arm is one registry entry plus its function: configs, runner,
  report and verdict rules pick it up from there."""
  monkeypatch.setattr(arms_lib, "REGISTRY", dict(arms_lib.REGISTRY))

  def flipped(ctx, arm, seed, s, key):
    return generate.Generated(s.labeled_images[:, :, ::-1], s.labeled_labels,
                              s.labeled_index, 0.0, {"flipped": 1.0})

  arms_lib.register(arms_lib.Arm("flip_copy", "dream", "stored", "a mirrored copy of every image",
                                 generate=flipped))
  cfg = study_configs.get_config("tiny")
  assert "flip_copy" in cfg.arms  # the default config runs every registered arm
  cfg.arms = ("baseline", "classical_online", "flip_copy")
  runner.run_study(cfg, str(tmp_path), log=lambda m: None)
  cells = {r["cell"]: r for r in read_jsonl(str(tmp_path / "results.jsonl"))}
  assert cells["N100/flip_copy"]["status"] == "ok"
  assert cells["N100/flip_copy"]["num_generated"] == 100
  assert cells["N100/flip_copy"]["generation"] == {"flipped": 1.0}
  report = (tmp_path / "REPORT.md").read_text()
  assert "| N100/flip_copy |" in report and "vs flip_copy" in report  # arms table and C5


def test_arms_of_a_new_generator_kind_and_with_settings_need_only_their_entries(
    tmp_path, real_data_dir, monkeypatch):
  """A generator family no code knows, named as today's generator arms are, and a
  dream arm with settings of its own: each is one entry (plus its function), its
  settings reach its function and take overrides by name, and C5 reads both."""
  monkeypatch.setattr(arms_lib, "REGISTRY", dict(arms_lib.REGISTRY))
  seen = {}

  def mixture_pool(ctx, arm, seed, s, key):
    settings = arms_lib.settings(ctx.config, arm)
    seen[seed] = (arms_lib.get(arm).source, int(settings.steps))
    model, variables = ctx.baseline_model(seed)
    pool = ctx.pool_images(seed)[:len(s.labeled_labels)]
    noisy = np.clip(pool + 0.05 * np.asarray(jax.random.normal(key, pool.shape)), 0, 1)
    labels = generators.probabilities(model, variables, noisy, mesh=ctx.mesh).argmax(-1)
    labels = labels.astype(np.int32)
    return generate.Generated(noisy.astype(np.float32), labels, np.full(len(labels), -1),
                              0.0, {"image_steps": int(settings.steps)})

  arms_lib.register(arms_lib.Arm(
      "mixture_pool", "generator", "generator", "a mixture model's samples from the pool",
      source=arms_lib.Generator("mixture", "pool"), settings={"steps": 7},
      generate=mixture_pool, needs_baseline=True))
  arms_lib.register(arms_lib.Arm(
      "dream_gentle", "dream", "stored", "a dream of its own preset",
      source=arms_lib.Classifier("baseline"), settings={"preset": "strong"},
      generate="dreamjax.study.run.generate:dream", needs_baseline=True, per_copy=True))
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "classical_online", "dream_subtle", "mixture_pool", "dream_gentle")
  cfg.arm_settings.mixture_pool.steps = 11   # overrides by name
  cfg.arm_settings.dream_gentle.preset = "subtle"
  runner.run_study(cfg, str(tmp_path), log=lambda m: None)
  cells = {r["cell"]: r for r in read_jsonl(str(tmp_path / "results.jsonl"))}
  assert {cells[f"N100/{a}"]["status"] for a in cfg.arms} == {"ok"}
  assert seen == {s: (arms_lib.Generator("mixture", "pool"), 11) for s in (0, 1)}
  assert cells["N100/mixture_pool"]["cost"]["gen_image_steps"] == 11
  assert "cas" in cells["N100/mixture_pool"]  # a generator's cell measures CAS
  # The subtle preset's step size, not the strong one's: its images move as little.
  gentle, subtle = cells["N100/dream_gentle"], cells["N100/dream_subtle"]
  assert gentle["generation"]["mean_linf"] == pytest.approx(subtle["generation"]["mean_linf"],
                                                            rel=0.5)
  verdicts = json.load(open(tmp_path / "claims.json"))
  c5 = next(v for v in verdicts if v["claim"] == "C5")
  assert "mixture_pool" in c5["arms"] and "dream_gentle" in c5["arms"]


# Enough arms to cover each kind of cell (offline set, dream, on-the-fly attack,
# pool generator, pretrained trunk) while keeping the interrupted runs short.
RESUME_ARM_NAMES = ("baseline", "classical", "dream_subtle", "pgd_train", "vae_pool", "ae_pretrain")
RESUME_ARMS = "--config.arms=" + repr(RESUME_ARM_NAMES).replace(" ", "")


def test_kill_and_resume_gives_identical_results(tmp_path, tiny_study):
  # Every cell depends only on its own arm, the oracle and the baselines, so the
  # uninterrupted full run is the reference for the cells of this subset.
  workdir = str(tmp_path / "killed")
  results = os.path.join(workdir, "results.jsonl")
  # Each run is interrupted the moment it logs the start of a given cell, so the
  # signal lands inside that cell's work whatever the speed of the machine.
  for sig, inside in ((signal.SIGKILL, "N100/classical"), (signal.SIGINT, "N100/pgd_train"),
                      (signal.SIGTERM, "N100/vae_pool")):
    # A suite started in the background inherits SIGINT ignored, and so would
    # the run (Python then never raises KeyboardInterrupt). A handled SIGINT
    # here becomes the default one in the run, so handle it while starting it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
      proc = subprocess.Popen(_cmd(workdir, RESUME_ARMS), cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    finally:
      signal.signal(signal.SIGINT, previous)
    watchdog = threading.Timer(600, proc.kill)
    watchdog.start()
    seen = []
    for line in iter(proc.stderr.readline, ""):
      seen.append(line)
      if re.search(rf"\] {re.escape(inside)}(,|$)", line.rstrip()):
        proc.send_signal(sig)
        break
    _, rest = proc.communicate(timeout=120)
    watchdog.cancel()
    err = "".join(seen) + rest
    # The run really was cut short: it did not finish every cell first.
    assert proc.returncode == {signal.SIGKILL: -9, signal.SIGINT: 130, signal.SIGTERM: 143}[sig], (
        err[-2000:])
    assert len(read_jsonl(results)) < 1 + len(RESUME_ARM_NAMES) + 3  # + exchange cells
    assert not any(r["cell"] == inside for r in read_jsonl(results)), inside
    if sig != signal.SIGKILL:
      assert "rerun the same command to resume" in err
  out = subprocess.run(_cmd(workdir, RESUME_ARMS), capture_output=True, text=True, cwd=REPO,
                       timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  resumed = _comparable(read_jsonl(results))
  cells = {r["cell"] for r in resumed}
  cfg = study_configs.get_config("tiny")
  cfg.arms = RESUME_ARM_NAMES
  assert cells == {"oracle"} | _job_keys(cfg)  # nothing missing
  reference = [r for r in read_jsonl(os.path.join(tiny_study, "results.jsonl"))
               if r["cell"] in cells]
  assert resumed == _comparable(reference)
  assert [r["status"] for r in records_lib.read_sessions(workdir)] == [
      "stopped (KeyboardInterrupt)", "stopped (Terminated)", "finished"]  # SIGKILL: no line


def test_other_config_is_refused(tiny_study):
  out = subprocess.run(_cmd(tiny_study, "--config.copies=2"), capture_output=True,
                       text=True, cwd=REPO, timeout=300)
  assert out.returncode == 2
  assert "another config" in out.stderr and "copies" in out.stderr
  assert "Traceback" not in out.stderr


def test_dry_run_plans_without_training(tmp_path, real_data_dir):
  out = subprocess.run(_cmd(tmp_path, "--dry_run"), capture_output=True, text=True, cwd=REPO,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "N100/dream_strong" in out.stderr and "estimated wall time" in out.stderr
  assert not os.path.exists(tmp_path / "results.jsonl")


def test_unwritable_workdir_fails_before_compute(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  out = subprocess.run(_cmd(blocker / "sub"), capture_output=True, text=True, cwd=REPO,
                       timeout=120)
  assert out.returncode == 2 and "not writable" in out.stderr
  assert "oracle" not in out.stderr


def test_failing_cell_is_recorded_and_study_goes_on(tmp_path, real_data_dir, monkeypatch):
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "noise", "classical")
  def broken(*args, **kwargs):
    raise FloatingPointError("noise generator diverged at step 3")
  monkeypatch.setitem(arms_lib.REGISTRY, "noise",
                      dataclasses.replace(arms_lib.REGISTRY["noise"], generate=broken))
  runner.run_study(cfg, str(tmp_path), log=lambda m: None)
  cells = {r["cell"]: r for r in read_jsonl(str(tmp_path / "results.jsonl"))}
  assert cells["N100/noise"]["status"] == "failed"
  assert "diverged at step 3" in cells["N100/noise"]["error"]
  assert cells["N100/classical"]["status"] == "ok"
  report = open(tmp_path / "REPORT.md").read()
  assert "Failed cells" in report and "N100/noise" in report
  # Fixed and rerun with retry_failed: the report reads the rerun and says a cell was rerun.
  monkeypatch.undo()
  runner.run_study(cfg, str(tmp_path), retry_failed=True, log=lambda m: None)
  report = open(tmp_path / "REPORT.md").read()
  assert "Failed cells" not in report and "FAILED" not in report
  assert "## Cells rerun" in report and "diverged at step 3" in report
  assert "| N100/noise | " in report
  rows = open(tmp_path / "summary.csv").read().splitlines()
  assert sum(r.startswith("N100/noise,") for r in rows) == 1


@pytest.mark.parametrize("field,value,match", [
    ("arms", ("baseline", "dream_wild"), "unknown arm"),
    ("num_seeds", 1, "num_seeds"),
    ("attack.train_fraction", 1.5, "attack.train_fraction"),
    ("eval.robust_eps", (0.03, -0.1), "eval.robust_eps"),
    ("exchange.arms", ("pgd_train",), "store no images"),
    ("pseudo_label_threshold", 2.0, "pseudo_label_threshold"),
    ("primary_budget", 7, "primary_budget"),
])
def test_bad_study_config(field, value, match):
  cfg = study_configs.get_config("tiny")
  target, name = cfg, field
  if "." in field:
    block, name = field.split(".")
    target = cfg[block]
  target[name] = value
  with pytest.raises(ConfigError, match=match):
    runner.validate_config(cfg)


def test_study_on_two_hosts_matches_one_host(tmp_path, tiny_study):
  """The study as a 2-process job (conftest.run_two_hosts): oracle, classifier
  training, dreams, Fréchet features and a pool VAE over 4 devices on 2 hosts,
  against the one-process, one-device run of the same cells."""
  workdir = tmp_path / "multi"
  # A hang guard, not a speed check: the pool arm trains G generators, and a loaded
  # machine takes minutes over the three cells.
  outs = run_two_hosts("study.py", *_cmd(workdir)[2:],
                       "--config.arms=('baseline','dream_subtle','vae_pool')", timeout=900)
  for out in outs:
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FAILED" not in out.stderr
  multi = {r["cell"]: r for r in read_jsonl(os.path.join(workdir, "results.jsonl"))}
  single = {r["cell"]: r for r in read_jsonl(os.path.join(tiny_study, "results.jsonl"))}
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "dream_subtle", "vae_pool")
  assert set(multi) == {"oracle"} | _job_keys(cfg)
  for key, r in multi.items():
    assert r["status"] == "ok", r
    # Only the float summation order differs (an all-reduce over 4 devices
    # against one device's sums), and 30 training steps carry it forward.
    if r["arm"] == "alignment":  # C3's job: cosines of the baselines' directions
      for k in ("logit", "layer_objective"):
        np.testing.assert_allclose(r[k]["mean"], single[key][k]["mean"], atol=1e-2)
      continue
    np.testing.assert_allclose(r["test_accuracy"], single[key]["test_accuracy"], atol=2e-3)
    if "frechet_per_seed" in r:
      np.testing.assert_allclose(r["frechet_per_seed"], single[key]["frechet_per_seed"],
                                 rtol=1e-3)
  assert "dream_subtle" in (workdir / "REPORT.md").read_text()
  assert not stray_files(workdir)  # process 1 wrote nothing there


def test_compile_count_does_not_grow_with_seeds(tmp_path, real_data_dir):
  """A study needs the same XLA programs whatever its seed count: seeds live in one
  program per cell, never one program per seed. Each run is a fresh process, so
  the count (compiled, or loaded from the persistent cache) is the study's own."""
  programs = {}
  for k in (2, 3):
    workdir = tmp_path / f"k{k}"
    out = subprocess.run(_cmd(workdir, f"--config.num_seeds={k}",
                              "--config.arms=('baseline','classical','noise')",
                              "--config.exchange.arms=()", "--config.exchange.label_factors=()"),
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    records = read_jsonl(str(workdir / "results.jsonl"))
    programs[k] = {r["cell"]: r["timing"]["xla"]["programs"] for r in records
                   if "xla" in r.get("timing", {})}
  assert programs[2] == programs[3], programs


def test_a_pool_generator_is_trained_once_across_studies(tmp_path, real_data_dir, monkeypatch):
  """A second study on the same data and generator config reuses the pool generator the
  first one trained (from the user cache, keyed by a hash of both) and gets the same
  numbers; another generator config trains its own."""
  monkeypatch.setenv("DREAMJAX_CACHE_DIR", str(tmp_path / "cache"))
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "vae_pool")
  cfg.exchange.arms = ()
  cfg.generator_cache = True
  logs = {}
  for name in ("first", "second"):
    logs[name] = []
    runner.run_study(cfg, str(tmp_path / name), log=logs[name].append)
  assert not any("reusing" in m for m in logs["first"])
  assert any("vae" in m and "reusing" in m for m in logs["second"]), logs["second"]
  first, second = (_comparable(read_jsonl(str(tmp_path / n / "results.jsonl")))
                   for n in ("first", "second"))
  assert [r["test_accuracy"] for r in first] == [r["test_accuracy"] for r in second]
  other = []
  cfg.arm_settings.vae_pool.steps = int(cfg.arm_settings.vae_pool.steps) + 1
  runner.run_study(cfg, str(tmp_path / "other"), log=other.append)
  assert not any("reusing" in m for m in other)


def test_labeled_subsets_are_nested_so_one_pool_serves_every_budget():
  """The shared pool (seed 0's pool at the pool budget) holds no image that a smaller
  budget labels: a seed's labeled subsets grow by budget, each holding the smaller ones."""
  labels = np.repeat(np.arange(10), 700)
  for seed in range(3):
    small, _, val = data_split_indices(labels, 100, seed)
    large, pool, val2 = data_split_indices(labels, 1000, seed)
    assert set(small) <= set(large) and (val == val2).all()
    assert not set(pool) & set(small) and not set(pool) & set(large)


def data_split_indices(labels, budget, seed):
  from dreamjax import data  # pylint: disable=g-import-not-at-top
  return data.split_indices(labels, 10, budget, 500, seed)


@pytest.fixture(scope="module")
def two_budget_study(tmp_path_factory, real_data_dir):
  """A tiny study at two budgets of the pool VAE and the deep dreamer's four arms:
  its workdir, its config and its log."""
  del real_data_dir  # the study reads it
  cfg = study_configs.get_config("tiny")
  cfg.budgets = (100, 200)
  cfg.arms = ("baseline", "vae_pool", "dream_subtle", "deep_dream_subtle", "deep_dream_strong",
              "deep_dream_online", "deep_dream_sweep")
  cfg.arm_settings.deep_dream_sweep.strengths = (0.1, 1.0)
  cfg.exchange.arms = ("deep_dream_subtle",)
  cfg.exchange.label_factors = ()
  workdir, log = tmp_path_factory.mktemp("two_budgets"), []
  runner.run_study(cfg, str(workdir), log=log.append)
  return workdir, cfg, log


def test_pool_models_train_once_for_every_budget(two_budget_study, tmp_path):
  """Two budgets share the pool generators: each (two in the tiny preset, one per
  seed) trained once, on a pool that excludes the larger budget's labeled images,
  saved once at the workdir's top."""
  workdir, cfg, log = two_budget_study
  finished = [m for m in log if re.match(r"vae: step (\d+)/\1\b", m)]
  assert len(finished) == cfg.pool_generators == 2, finished
  assert os.path.exists(workdir / "artefacts" / "vae_pool.msgpack")
  assert os.path.exists(workdir / "artefacts" / "vae_pool_g1.msgpack")
  assert not list(workdir.glob("N*/artefacts"))
  cells = {r["cell"]: r for r in read_jsonl(str(workdir / "results.jsonl"))}
  assert cells["N100/vae_pool"]["status"] == cells["N200/vae_pool"]["status"] == "ok"
  too_large = cfg.copy_and_resolve_references()  # the fixture's config stays as it ran
  too_large.pool_budget = 10 ** 6
  with pytest.raises(ConfigError, match="pool_budget"):
    runner.run_study(too_large, str(tmp_path / "too_large"), log=lambda m: None)


def test_the_deep_dreamer_is_pretrained_once_and_every_deep_arm_dreams_through_it(
    two_budget_study, real_data_dir):
  """Two budgets, two seeds, four deep arms: the pool dreamer pretrains once (one
  finished pretraining in the log, one file at the workdir's top), every cell is ok,
  the stored dreams keep their sources' labels, and dreamers.png shows them beside
  the small classifier's."""
  workdir, cfg, log = two_budget_study
  finished = [m for m in log if re.match(r"rotation pretext: step (\d+)/\1\b", m)]
  assert len(finished) == 1, finished
  assert os.path.exists(workdir / "artefacts" / "pool_dreamer.msgpack")
  cells = {r["cell"]: r for r in read_jsonl(str(workdir / "results.jsonl"))}
  deep = [k for k in cells if "/deep_dream" in k]
  assert sorted(deep) == sorted(["N100/deep_dream_subtle", "N100/deep_dream_strong",
                                 "N100/deep_dream_online", "N200/deep_dream_subtle",
                                 "N200/deep_dream_strong", "N200/deep_dream_online",
                                 "N100/deep_dream_sweep@0.1", "N100/deep_dream_sweep@1",
                                 "N100/deep_dream_subtle/M2"])
  assert {cells[k]["status"] for k in deep} == {"ok"}, {k: cells[k].get("error") for k in deep}
  steps = int(cfg.pool_dreamer.steps) * int(cfg.pool_dreamer.batch_size)
  for k in deep:
    if "online" not in k:
      assert cells[k]["generation"]["dreamer_pretrain_image_steps"] == steps, k
  sweep = [cells[f"N100/deep_dream_sweep@{s}"]["generation"]["mean_linf"] for s in ("0.1", "1")]
  assert sweep[0] < sweep[1]
  from dreamjax import data  # pylint: disable=g-import-not-at-top
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  for arm in ("deep_dream_subtle", "deep_dream_strong"):
    g = data.augfile.load(str(workdir / "N100" / arm / "generated_seed1.npz"), num_classes=10,
                          image_shape=(28, 28, 1))
    np.testing.assert_array_equal(g.labels, raw.train_labels[g.source_index])
  assert os.path.getsize(workdir / "figures" / "dreamers.png") > 0
  assert "dreamers.png" in (workdir / "REPORT.md").read_text()


def _generated_in(workdir, arm, copies, real_data_dir):
  """Seed 0's ``arm`` set at ``copies`` per image, made in ``workdir`` by the cells."""
  from dreamjax import data  # pylint: disable=g-import-not-at-top
  from dreamjax.plumbing import sharding  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import cells, context  # pylint: disable=g-import-not-at-top
  cfg = study_configs.get_config("tiny")
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  s = data.make_splits(raw, num_labeled=100, val_size=cfg.val_size, seed=0)
  log = []
  ctx = context.Context(config=cfg, workdir=str(workdir), mesh=sharding.default(None),
                        budget=100, seeds=(0,), splits=(s,), model=None, oracle=None,
                        log=log.append, copies=copies)
  cell = cells.Cell.of(100, arm, copies, int(cfg.copies))
  return cells.generated_sets(ctx, cell)[0], log


def test_exchange_cells_reuse_the_copies_a_smaller_m_made(tmp_path, real_data_dir):
  """A per-copy arm's M-copy set is the same whether made at once or from the copies of
  the M = 1 cell plus new ones: copy m comes from its own key, whatever M asks for it."""
  at_once, log = _generated_in(tmp_path / "a", "classical", 2, real_data_dir)
  assert not any("reuses" in m for m in log) and at_once.info["reused_copies"] == 0
  one, _ = _generated_in(tmp_path / "b", "classical", 1, real_data_dir)
  reused, log = _generated_in(tmp_path / "b", "classical", 2, real_data_dir)
  assert any("reuses 1 of 2 copies from N100/classical" in m for m in log), log
  assert reused.info["reused_copies"] == 1 and len(reused.labels) == 200
  np.testing.assert_array_equal(reused.images, at_once.images)
  np.testing.assert_array_equal(reused.labels, at_once.labels)
  np.testing.assert_array_equal(reused.images[:100], one.images)
  assert not np.array_equal(reused.images[100:], reused.images[:100])  # a new copy
  assert len(reused.info["per_copy"]) == len(at_once.info["per_copy"]) == 2


@pytest.mark.parametrize("arm", ["vae_small", "gan_small", "diffusion_small"])
def test_small_generators_of_all_seeds_in_one_program_equal_seed_by_seed(
    arm, real_data_dir, tmp_path):
  """vae_small/gan_small/diffusion_small train every seed's generator in one program (faster
  on CPU); each seed's samples and loss history are exactly what training it alone gives.
  Each way keeps its generators in a workdir of its own, so neither reads the other's."""
  from dreamjax import data  # pylint: disable=g-import-not-at-top
  from dreamjax.plumbing import sharding  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import context  # pylint: disable=g-import-not-at-top
  cfg = study_configs.get_config("tiny")
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  seeds = (0, 1)
  splits = tuple(data.make_splits(raw, num_labeled=100, val_size=cfg.val_size, seed=s)
                 for s in seeds)
  def ctx(workdir):
    return context.Context(config=cfg, workdir=str(workdir), mesh=sharding.default(None),
                           budget=100, seeds=seeds, splits=splits, model=None, oracle=None,
                           log=lambda m: None)
  keys = [artefacts.arm_key(s, arm) for s in seeds]
  together = generate.small_generators(ctx(tmp_path / "together"), arm, list(seeds),
                                       list(splits), keys)
  for seed, s, key in zip(seeds, splits, keys):
    alone = generate.small_generator(ctx(tmp_path / f"alone{seed}"), arm, seed, s, key)
    np.testing.assert_array_equal(together[seed].images, alone.images)
    np.testing.assert_array_equal(together[seed].labels, alone.labels)
    assert together[seed].info["history"] == alone.info["history"]
  assert not np.array_equal(together[0].images, together[1].images)


def test_the_sample_figures_show_the_study_s_first_seed(tmp_path):
  """A confirmation run on fresh seeds (first_seed=5) has no seed 0 whose sets to show."""
  from dreamjax.study.report import report  # pylint: disable=g-import-not-at-top
  cfg = study_configs.get_config("tiny")
  cells = {"dream_strong": {"cell": "N100/dream_strong"}, "classical": {"cell": "N100/classical/M2"},
           "alignment": {}}
  for first in (0, 5):
    cfg.first_seed = first
    assert report.stored_sets(str(tmp_path), cfg, cells) == {
        "dream_strong": str(tmp_path / "N100" / "dream_strong" / f"generated_seed{first}.npz"),
        "classical": str(tmp_path / "N100" / "classical_M2" / f"generated_seed{first}.npz")}
