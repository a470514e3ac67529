"""A budget's own training length (``train_steps_by_budget``): config, validation, extension."""

import json
import os
import types

import pytest

from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.study import records, spec
from dreamjax.study.run import runner


def _v1(preset):
  """``preset`` at version 1's lengths (1,200 steps; 2,400 at N = 5000 in conclusions),
  as the workdirs published before the length chooser were made."""
  cfg = study_configs.get_config(preset)
  cfg.train_steps_by_budget = {k: v for k, v in cfg.train_steps_by_budget.items()
                               if k != "N1000"}
  return cfg


def test_train_config_per_budget():
  quick = study_configs.get_config("quick")
  assert spec.train_config(quick, 1000).steps == study_configs.CHOSEN_STEPS[1000] == 600
  assert spec.steps_text(quick) == "600 training steps"
  old = _v1("quick")
  assert spec.train_config(old, 1000) is old.train  # no length of its own: the default
  assert spec.steps_text(_v1("quick")) == "1200 training steps"
  conc = study_configs.get_config("conclusions")
  assert spec.train_config(conc, 5000).steps == 2400
  assert spec.train_config(conc, 5000).warmup_steps == conc.train.warmup_steps
  assert spec.train_config(conc, 100).steps == 1200 and conc.train.steps == 1200
  assert spec.steps_text(conc) == "training steps N100: 1200, N1000: 600, N5000: 2400"
  runner.validate_config(conc)


@pytest.mark.parametrize("key, steps, match", [
    ("5000", 2400, "keys are label budgets"),
    ("N5000", 0, "whole numbers of steps"),
    ("N5000", 40, "train_steps_by_budget.N5000: train.warmup_steps=50"),
])
def test_bad_lengths_are_refused_before_compute(key, steps, match):
  cfg = study_configs.get_config("conclusions")
  cfg.train_steps_by_budget = {key: steps}
  with pytest.raises(ConfigError, match=match):
    runner.validate_config(cfg)


def _workdir(tmp_path, config, budgets):
  """A workdir made with ``config`` holding finished cells at ``budgets``."""
  record = {"config": json.loads(config.to_json())}
  record["config"].pop("train_steps_by_budget")  # made before the field existed
  with open(tmp_path / records.CONFIG_FILE, "w") as f:
    json.dump(record, f)
  with open(tmp_path / "results.jsonl", "w") as f:
    f.write("".join(json.dumps({"cell": f"N{b}/baseline", "budget": b, "status": "ok"}) + "\n"
                    for b in budgets))
  return str(tmp_path)


def test_a_length_extends_a_study_only_for_budgets_it_has_not_run(tmp_path):
  raw = types.SimpleNamespace(digest=None)
  workdir = _workdir(tmp_path, _v1("quick"), [1000, 1250])
  # A workdir made before the field existed reads as {}: its report can be rebuilt
  # (raw=None) and the same config runs on it.
  records.check_workdir(_v1("quick"), workdir, None)
  records.check_workdir(_v1("quick"), workdir, raw)
  # Today's presets train N = 1000 at the chosen length: not its cells' computation.
  with pytest.raises(ConfigError, match="another config"):
    records.check_workdir(study_configs.get_config("quick"), workdir, raw)
  conc = _v1("conclusions")
  records.check_workdir(conc, workdir, raw)  # adds N100, N5000 and N5000's length
  assert "extended_from" in json.load(open(os.path.join(workdir, records.CONFIG_FILE)))
  changed = _v1("conclusions")
  changed.train_steps_by_budget["N5000"] = 4800  # a length its recorded cells did not use
  with pytest.raises(ConfigError, match="another config"):
    records.check_workdir(changed, workdir, raw)
  for budget in ("N1000", "N1250"):  # budgets with finished cells keep their length
    other = study_configs.get_config("conclusions")
    other.train_steps_by_budget = {"N5000": 2400, budget: 2400}
    with pytest.raises(ConfigError, match="another config"):
      records.check_workdir(other, workdir, raw)
