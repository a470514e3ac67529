"""The first command's preset: the claims about Deep Dream, and what it leaves to fuller
presets (their commands and estimated times in its report)."""

import json
import os
import shutil
import sys
import types

import pytest

from conftest import REPO, finished_run
from dreamjax.configs import arms as arms_lib
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import read_jsonl
from dreamjax.study import claims, records
from dreamjax.study import plan as plan_lib
from dreamjax.study.report import report
from dreamjax.study.run import fuller, runner

SCRIPT = os.path.join(REPO, "experiments", "study.py")
FIRST = study_configs.get_config("first")


def _tiny_first():
  """The tiny preset cut to what the first preset runs and decides."""
  cfg = study_configs.get_config("tiny")
  cfg.arms = FIRST.arms
  cfg.claims = FIRST.claims
  return cfg


def test_first_is_the_default_and_a_part_of_quick():
  assert study_configs.get_config().arms == FIRST.arms
  assert tuple(FIRST.claims) == ("C1", "C2", "C3")
  quick = study_configs.get_config("quick")
  assert set(FIRST.arms) <= set(quick.arms) and tuple(quick.claims) == tuple(claims.CLAIMS)
  assert FIRST.budgets == quick.budgets and FIRST.num_seeds == quick.num_seeds == 5
  assert FIRST.train.to_dict() == quick.train.to_dict()  # the protocol's training length
  first_arms = runner.validate_config(FIRST)
  # Its cells are quick's cells: every one of them is in quick's plan, the same key.
  assert {c.key for c in runner.plan(FIRST, first_arms)} <= {
      c.key for c in runner.plan(quick, arms_lib.resolve(quick))}


@pytest.mark.parametrize("value", [(), ("C8",), ("c1",)])
def test_bad_claims_are_refused(value):
  cfg = study_configs.get_config("tiny")
  cfg.claims = value
  with pytest.raises(ConfigError, match="claims=.*name one or more of"):
    runner.validate_config(cfg)


@pytest.fixture(scope="module")
def first_study(tmp_path_factory, real_data_dir):
  del real_data_dir  # the study reads it
  arms = "--config.arms=(" + ",".join(f"'{a}'" for a in FIRST.arms) + ",)"
  return finished_run(tmp_path_factory, "first", lambda w: [
      sys.executable, SCRIPT, "--config", "dreamjax/configs/study.py:tiny", f"--workdir={w}",
      arms, "--config.claims=('C1','C2','C3')"], timeout=900)


def test_the_first_arms_decide_c1_to_c3_and_the_report_names_the_rest(first_study):
  recs = read_jsonl(os.path.join(first_study, "results.jsonl"))
  assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
  cfg = _tiny_first()
  verdicts = report.verdicts_by_budget(cfg, recs)[100]
  assert [v.claim for v in verdicts] == ["C1", "C2", "C3"]
  # Each decided: no rule is missing an arm the preset left out.
  assert not [v for v in verdicts if v.verdict.startswith("missing")], verdicts
  assert all(p["claim"] in FIRST.claims for p in report.placebos_by_budget(cfg, recs))
  text = open(os.path.join(first_study, "REPORT.md")).read()
  assert "## Claims left to fuller presets" in text
  for cid in ("C4", "C5", "C6", "C7"):
    assert f"| **{cid}** {claims.CLAIMS[cid]} | left to a fuller preset (below) |" in text
  rows = {f.preset: f for f in fuller.fuller_presets(cfg, recs, first_study)}
  assert set(rows) == {"quick", "conclusions"}
  quick = rows["quick"]
  assert quick.claims == ("C4", "C5", "C6", "C7")
  assert quick.command == ("./launch.sh study --config dreamjax/configs/study.py:quick"
                           f" --workdir {first_study}")
  assert quick.command in text
  # Priced from this study's own cells: more cells, more time; none of its cells again.
  assert quick.seconds is not None and 0 < quick.seconds < rows["conclusions"].seconds
  quick_cfg = fuller.preset_config(cfg, "quick")
  planned = runner.job_order(quick_cfg, runner.plan(quick_cfg, arms_lib.resolve(quick_cfg)),
                             True)
  done = {r["cell"] for r in recs}
  assert quick.jobs_left == len([c for c in planned if c.key not in done]) > 0


def test_a_study_of_every_claim_leaves_none(first_study):
  recs = read_jsonl(os.path.join(first_study, "results.jsonl"))
  assert fuller.fuller_presets(study_configs.get_config("tiny"), recs, first_study) == []


def test_quick_extends_the_first_workdir_in_place(tmp_path):
  record = {"config": json.loads(FIRST.to_json())}
  with open(tmp_path / records.CONFIG_FILE, "w") as f:
    json.dump(record, f)
  with open(tmp_path / "results.jsonl", "w") as f:
    f.write(json.dumps({"cell": "N1000/baseline", "budget": 1000, "status": "ok"}) + "\n")
  raw = types.SimpleNamespace(digest=None)
  records.check_workdir(study_configs.get_config("quick"), str(tmp_path), raw)
  records.check_workdir(study_configs.get_config("conclusions"), str(tmp_path), raw)
  changed = study_configs.get_config("quick")
  changed.train.steps = 600  # not an extension: its cells would be another computation
  with pytest.raises(ConfigError):
    records.check_workdir(changed, str(tmp_path), raw)


def test_a_workdir_from_before_the_field_decides_every_claim():
  old = json.loads(study_configs.get_config("quick").to_json())
  old.pop("claims")
  assert records.upgrade_config(old)["claims"] == list(claims.CLAIMS)
