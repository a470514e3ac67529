"""Generator variance in the intervals: G pool generators per arm, each from its own
seed, cycled over the classifier seeds, cached by seed, gated and reported each."""

import json
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from conftest import REPO
from dreamjax import data as data_lib
from dreamjax.plumbing import sharding
from dreamjax.configs import arms as arms_lib
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import read_jsonl
from dreamjax.study import claims, records
from dreamjax.study import plan as plan_lib
from dreamjax.study.report import report, report_text
from dreamjax.study.run import artefacts, generate, progress
from dreamjax.study.run import runner
from dreamjax.study.run import cells as cells_lib
from dreamjax.study.run import context as context_lib
from dreamjax.study.report import tables
from dreamjax.study.evidence import Cells

TRAINED = re.compile(r"vae_pool: training pool generator (\d+)")


def _config(num_seeds=3, generators=2):
  cfg = study_configs.get_config("tiny")
  cfg.num_seeds, cfg.pool_generators = num_seeds, generators
  cfg.arm_settings.vae_pool.steps = 10
  return cfg


def _context(cfg, workdir, log):
  raw = context_lib.load_data(cfg)
  return context_lib.for_budget(cfg, raw, 100, str(workdir), sharding.make_mesh(), None,
                                log.append)


def _same(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_each_pool_generator_trains_from_its_own_seed_and_is_cached_by_it(
    tmp_path, real_data_dir, monkeypatch):
  """Seeds 0, 1, 2 with G = 2 read generators 0, 1, 0: generator 0 is trained once for
  seeds 0 and 2, generator 1 from another seed has other weights; a later study reuses
  each from the cache under its own generator seed, never the other's, and generator 0's
  key does not depend on G (a cache made with one generator serves it)."""
  monkeypatch.setenv("DREAMJAX_CACHE_DIR", str(tmp_path / "cache"))
  cfg = _config()
  cfg.generator_cache = True
  log = []
  ctx = _context(cfg, tmp_path / "first", log)
  assert [artefacts.pool_generator_index(ctx, s) for s in ctx.seeds] == [0, 1, 0]
  p0 = artefacts.pool_generator(ctx, "vae_pool", 0)[1]
  p2 = artefacts.pool_generator(ctx, "vae_pool", 2)[1]
  assert [m.group(1) for m in map(TRAINED.search, log) if m] == ["0"]
  assert _same(p0, p2)  # seed 2 reads seed 0's generator, trained once
  p1 = artefacts.pool_generator(ctx, "vae_pool", 1)[1]
  assert [m.group(1) for m in map(TRAINED.search, log) if m] == ["0", "1"]
  assert not _same(p0, p1)  # another generator seed, other weights
  assert sorted(os.listdir(tmp_path / "first" / "artefacts")) == [
      "vae_pool.msgpack", "vae_pool_g1.msgpack"]

  later = []
  ctx2 = _context(cfg, tmp_path / "second", later)
  assert _same(artefacts.pool_generator(ctx2, "vae_pool", 1)[1], p1)
  assert _same(artefacts.pool_generator(ctx2, "vae_pool", 0)[1], p0)
  assert not any(TRAINED.search(m) for m in later)
  assert sum("reusing" in m for m in later) == 2, later

  one = []
  ctx3 = _context(_with(cfg, pool_generators=1), tmp_path / "one", one)
  assert artefacts.pool_generator_index(ctx3, 1) == 0  # one generator: every seed reads it
  assert _same(artefacts.pool_generator(ctx3, "vae_pool", 1)[1], p0)
  assert not any(TRAINED.search(m) for m in one)


def _with(cfg, **fields):
  cfg = cfg.copy_and_resolve_references()
  for k, v in fields.items():
    cfg[k] = v
  return cfg


def test_the_seeds_of_a_study_cycle_over_the_generators_and_the_report_says_so(
    tmp_path, real_data_dir):
  """Three seeds, two generators: seed i's set is made by generator i mod 2, recorded
  in the set and the cell; each generator's quality is the mean of its seeds'; the
  report names the intervals' generator variance and gives a row per generator."""
  cfg = _config()
  cfg.arms = ("baseline", "vae_pool")
  cfg.exchange.arms = cfg.exchange.label_factors = ()
  log = []
  runner.run_study(cfg, str(tmp_path), log=log.append)
  assert [m.group(1) for m in map(TRAINED.search, log) if m] == ["0", "1"]
  cell = {r["cell"]: r for r in read_jsonl(str(tmp_path / "results.jsonl"))}["N100/vae_pool"]
  assert cell["status"] == "ok", cell.get("error")
  for i, seed in enumerate(cell["seeds"]):
    g = data_lib.augfile.load(str(tmp_path / "N100" / "vae_pool" / f"generated_seed{seed}.npz"))
    assert g.metadata["info"]["pool_generator"] == {"index": i % 2, "of": 2}
  gens = cell["pool_generators"]
  assert gens["per_seed"] == [0, 1, 0] and gens["of"] == 2
  assert [(g["index"], g["seeds"]) for g in gens["generators"]] == [(0, [0, 2]), (1, [1])]
  lp = cell["label_preservation_per_seed"]
  assert gens["generators"][0]["label_preservation"] == pytest.approx((lp[0] + lp[2]) / 2)
  assert gens["generators"][1]["cas"] == pytest.approx(cell["cas"][1])
  text = (tmp_path / "REPORT.md").read_text()
  assert ("The intervals of `vae_pool` include generator variance: each arm's 3 seeds read 2"
          " pool generators") in text
  assert "generator i mod 2" in text and "understate" in text
  assert "| vae_pool (mean of 2) |" in text and "| vae_pool generator 1 (seeds 1) |" in text
  # Generation seconds count each generator's training once, not once per seed; they
  # are wall-clock, so they live under timing, where a resumed study may differ.
  train = cell["timing"]["pool_generator_seconds"]
  assert sorted(train) == ["0", "1"] and min(train.values()) > 0
  expected = cell["gen_seconds"] - train["0"]
  assert records.generation_seconds(cell) == pytest.approx(expected)
  assert "seconds" not in json.dumps(gens)


def _pool_cell(lp_by_generator, per_seed=(0, 1, 2)):
  gens = [{"index": g, "seeds": [s for s, x in enumerate(per_seed) if x == g],
           "label_preservation": lp, "frechet": 10.0, "kid": 0.01, "cas": 0.7}
          for g, lp in enumerate(lp_by_generator)]
  lp = [lp_by_generator[g] for g in per_seed]
  return {"status": "ok", "arm": "vae_pool", "test_accuracy": [0.8, 0.81, 0.79],
          "label_preservation": float(np.mean(lp)), "label_preservation_per_seed": lp,
          "frechet": 10.0, "kid": 0.01, "cas": [0.7, 0.7, 0.7],
          "pool_generators": {"of": len(gens), "per_seed": list(per_seed), "generators": gens}}


def test_the_quality_gate_holds_each_generator_not_only_the_mean():
  cell = _pool_cell([0.9, 0.5, 0.8])  # mean 0.73 passes a 0.6 gate; generator 1 fails it
  assert Cells({"vae_pool": cell}, quality_gate=0.6).under_trained("vae_pool") == [
      "vae_pool generator 1 50%"]
  (q,) = tables.generator_quality({"vae_pool": cell}, 0.6)
  assert not q["passes"] and [g["passes"] for g in q["generators"]] == [True, False, True]
  rows = report_text._quality([q], 0.6)  # pylint: disable=protected-access
  assert any(r.startswith("| vae_pool generator 1 (seeds 1) |") and "under-trained" in r
             for r in rows)
  passing = _pool_cell([0.9, 0.7, 0.8])
  assert Cells({"vae_pool": passing}, quality_gate=0.6).under_trained("vae_pool") == []
  assert tables.generator_quality({"vae_pool": passing}, 0.6)[0]["passes"]


def test_a_generator_row_averages_the_seeds_that_measured_a_set():
  """A fresh pool arm's seed may keep no confident sample: its measures are None, and
  each generator's row is the mean of its other seeds (None where none has a value)."""
  empty = np.zeros((0, 28, 28, 1), np.float32)
  generated = {s: generate.Generated(empty, np.zeros(0, np.int32), np.zeros(0, np.int64), 0.0,
                                     {"pool_generator": {"index": s % 2, "of": 2}})
               for s in (0, 1, 2)}  # seeds 0 and 2 read generator 0, seed 1 generator 1
  record = {"label_preservation_per_seed": [None, 0.6, 0.8],
            "frechet_per_seed": [12.0, None, 10.0], "kid_per_seed": [None, 0.02, None],
            "cas": [0.5, 0.7, 0.9]}
  out = cells_lib._per_generator(record, generated, (0, 1, 2))  # pylint: disable=protected-access
  assert out["of"] == 2 and out["per_seed"] == [0, 1, 0]
  g0, g1 = out["generators"]
  assert g0 == {"index": 0, "seeds": [0, 2], "label_preservation": 0.8,
                "frechet": pytest.approx(11.0), "kid": None, "cas": pytest.approx(0.7)}
  assert g1 == {"index": 1, "seeds": [1], "label_preservation": 0.6, "frechet": None,
                "kid": 0.02, "cas": 0.7}


def test_one_generator_is_reported_as_leaving_generator_variance_out():
  one = _pool_cell([0.9], per_seed=(0, 0, 0))
  text = report_text.generator_variance_text(tables.generator_variance({"vae_pool": one}))
  assert text[0].startswith("The intervals of `vae_pool` leave out generator variance")
  three = _pool_cell([0.9, 0.8, 0.7])
  text = report_text.generator_variance_text(tables.generator_variance({"vae_pool": three}))
  assert "include generator variance" in text[0] and "understate" not in text[0]


def test_a_published_run_made_with_one_generator_reports_as_it_did():
  """The conclusions run's records hold no generators: its verdicts rebuild to its
  claims.json, and no generator variance is claimed for it."""
  folder = os.path.join(REPO, "docs", "results", "conclusions_1200")
  with open(os.path.join(folder, "study_config.json")) as f:
    recorded = records.upgrade_config(json.load(f)["config"])
  assert recorded["pool_generators"] == 1
  cfg = ml_collections.ConfigDict(recorded)
  every = read_jsonl(os.path.join(folder, "results.jsonl"))
  latest = list({r["cell"]: r for r in every}.values())
  rebuilt = [v.to_dict() for vs in report.verdicts_by_budget(cfg, latest).values() for v in vs]
  with open(os.path.join(folder, "claims.json")) as f:
    assert rebuilt == json.load(f)
  cells = tables.main_cells(latest)[int(cfg.primary_budget)]
  assert tables.generator_variance(cells) == {}
  assert all(not q["generators"] for q in tables.generator_quality(cells, cfg.quality_gate))


def test_g_enters_the_protocol_and_checkpoints_only_where_it_is_not_one():
  """G is part of the protocol; a config without it (one generator) keeps the digest
  and cell fingerprint it had before the field existed."""
  cfg = study_configs.get_config("quick")
  three = claims.protocol(cfg)["digest"]
  cfg.pool_generators = 1
  one = claims.protocol(cfg)
  assert one["digest"] != three
  before = json.loads(cfg.to_json())
  del before["pool_generators"]
  assert claims.protocol(before) == one
  assert records.cell_fingerprint(ml_collections.ConfigDict(before)) == records.cell_fingerprint(
      cfg)


def test_the_cost_model_counts_every_generator_a_seed_reads():
  cfg = study_configs.get_config("quick")  # 5 seeds, G = 3
  arms = arms_lib.resolve(cfg)
  jobs = plan_lib.jobs(cfg, arms)
  costs = progress.job_costs(cfg, jobs, arms)
  for g, trained in ((1, 1), (3, 3), (8, 5)):  # never more than the seeds read
    cfg.pool_generators = g
    assert progress.pool_generators_trained(cfg) == trained
    other = progress.job_costs(cfg, jobs, arms)
    for arm in ("vae_pool", "gan_pool", "diffusion_pool"):
      extra = (3 - trained) * progress.generator_work(arms[arm])
      assert costs[f"N1000/{arm}"] - other[f"N1000/{arm}"] == pytest.approx(extra)
    for arm in ("vae_pool", "gan_pool"):  # their exchange cells read what the main cell trained
      assert costs[f"N1000/{arm}/M2"] == other[f"N1000/{arm}/M2"]
  cfg.pool_generators = 3
  assert costs["N1000/ae_pretrain"] == progress.job_costs(cfg, jobs, arms)["N1000/ae_pretrain"]


@pytest.mark.parametrize("value", [0, -2])
def test_a_bad_number_of_generators_is_refused(value):
  cfg = study_configs.get_config("tiny")
  cfg.pool_generators = value
  with pytest.raises(ConfigError, match=rf"pool_generators={value} is invalid: must be a whole"):
    runner.validate_config(cfg)


def test_the_dry_run_counts_the_generators_and_the_command_line_refuses_a_bad_g(
    tmp_path, real_data_dir):
  script = os.path.join(REPO, "experiments", "study.py")
  base = [sys.executable, script, "--config", "dreamjax/configs/study.py:tiny",
          f"--workdir={tmp_path}", "--config.arms=('baseline','vae_pool')", "--dry_run"]
  out = subprocess.run(base + ["--config.pool_generators=0"], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
  assert out.returncode == 2
  assert "dreamjax error: pool_generators=0 is invalid" in out.stderr
  assert "Traceback" not in out.stderr
  out = subprocess.run(base, capture_output=True, text=True, cwd=REPO, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "pool generators: 2 trained per arm (vae_pool; pool_generators=2, 2 seeds)" in out.stderr
