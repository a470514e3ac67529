"""Two study runs compared: paired changes against hand-computed values, refusals, the command."""

import json
import os
import subprocess
import sys

import pytest
from scipy import stats as sp_stats

from conftest import REPO
from dreamjax.errors import ConfigError
from dreamjax.study.report import compare

DIGEST = "ab" * 32


def _study(folder, steps, baseline, arm, verdict, *, digest=DIGEST, val_size=1000, seeds=3,
           claims=True):
  os.makedirs(folder, exist_ok=True)
  config = {"dataset": "fashion_mnist", "val_size": val_size, "num_seeds": seeds,
            "train": {"steps": steps, "batch_size": 64}}
  with open(os.path.join(folder, "study_config.json"), "w") as f:
    json.dump({"config": config, "data": {"digest": digest}}, f)
  rows = [{"cell": "oracle", "arm": "oracle", "status": "ok", "test_accuracy": [0.9]},
          {"cell": "N1000/baseline", "arm": "baseline", "budget": 1000, "status": "ok",
           "test_accuracy": baseline},
          {"cell": "N1000/classical_online", "arm": "classical_online", "budget": 1000,
           "status": "ok", "test_accuracy": arm},
          {"cell": "N1000/pgd", "arm": "pgd", "budget": 1000, "status": "failed",
           "error": "diverged"}]
  with open(os.path.join(folder, "results.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  with open(os.path.join(folder, "sessions.jsonl"), "w") as f:
    f.write(json.dumps({"started": "2026-12-03T10:00:00Z", "seconds": 600.0, "status":
                        "finished", "command": "experiments/study.py",
                        "machine": {"cpu": "test cpu", "device": "1 × cpu"}}) + "\n")
  if claims:
    with open(os.path.join(folder, "claims.json"), "w") as f:
      json.dump([{"claim": "C5", "budget": 1000, "text": "simple transforms", "numbers": "",
                  "verdict": verdict},
                 {"claim": "C1", "budget": 1000, "text": "strong dreams", "numbers": "",
                  "verdict": "missing (dream_strong: not run)"}], f)
  return str(folder)


def test_paired_change_matches_hand_computation(tmp_path):
  a = _study(tmp_path / "a", 300, [0.80, 0.81, 0.82], [0.81, 0.82, 0.83], "supported")
  b = _study(tmp_path / "b", 1200, [0.80, 0.82, 0.84], [0.83, 0.85, 0.87], "inconclusive")
  out = compare.compare(a, b)
  assert out["seeds"] == 3
  assert out["config_changes"] == [("train.steps", 300, 1200)]
  cells = {r["cell"]: r for r in out["cells"]}
  assert set(cells) == {"N1000/baseline", "N1000/classical_online", "oracle"}  # pgd failed
  # classical_online's change per seed is 0.02, 0.03, 0.04: mean 0.03, sd 0.01.
  half = sp_stats.t.ppf(0.975, 2) * 0.01 / 3 ** 0.5
  change = cells["N1000/classical_online"]["change"]
  assert change["mean"] == pytest.approx(0.03)
  assert change["lo"] == pytest.approx(0.03 - half) and change["hi"] == pytest.approx(0.03 + half)
  # Against the baseline of the same run: A +0.01 at every seed; B +0.03 at every seed.
  assert cells["N1000/classical_online"]["a_vs_baseline"]["mean"] == pytest.approx(0.01)
  assert cells["N1000/classical_online"]["b_vs_baseline"]["mean"] == pytest.approx(0.03)
  assert "a_vs_baseline" not in cells["N1000/baseline"]
  (c5,) = [c for c in out["claims"] if c["claim"] == "C5"]
  assert (c5["a"], c5["b"]) == ("supported", "inconclusive")
  md = compare.markdown(out, "300 steps", "1200 steps")
  assert "| C5 | 1000 | **supported** | **inconclusive** |" in md
  assert "| C1 | 1000 | missing (dream_strong: not run) |" in md  # not compared, not bold
  assert "`train.steps` 300 → 1200" in md
  assert "| N1000/classical_online | 82.0 | 85.0 | +3.0 [" in md


def test_seeds_pair_over_the_runs_common_seeds(tmp_path):
  a = _study(tmp_path / "a", 300, [0.80, 0.81], [0.81, 0.83], "supported", seeds=2)
  b = _study(tmp_path / "b", 300, [0.80, 0.81, 0.5], [0.82, 0.84, 0.5], "supported")
  out = compare.compare(a, b)
  cells = {r["cell"]: r for r in out["cells"]}
  assert out["seeds"] == 2 and cells["N1000/classical_online"]["change"]["mean"] == pytest.approx(0.01)


def test_refuses_what_cannot_be_paired(tmp_path):
  a = _study(tmp_path / "a", 300, [0.8] * 3, [0.8] * 3, "supported")
  other_data = _study(tmp_path / "b", 300, [0.8] * 3, [0.8] * 3, "supported", digest="cd" * 32)
  with pytest.raises(ConfigError, match="different data"):
    compare.compare(a, other_data)
  other_val = _study(tmp_path / "c", 300, [0.8] * 3, [0.8] * 3, "supported", val_size=500)
  with pytest.raises(ConfigError, match="val_size"):
    compare.compare(a, other_val)
  no_claims = _study(tmp_path / "d", 300, [0.8] * 3, [0.8] * 3, "supported", claims=False)
  with pytest.raises(ConfigError, match="--report_only"):
    compare.compare(a, no_claims)
  with pytest.raises(ConfigError, match="not a finished study"):
    compare.compare(a, str(tmp_path / "nothing"))


def test_command_writes_markdown_json_and_figure(tmp_path):
  a = _study(tmp_path / "a", 300, [0.80, 0.81, 0.82], [0.81, 0.82, 0.83], "supported")
  b = _study(tmp_path / "b", 1200, [0.80, 0.82, 0.84], [0.83, 0.85, 0.87], "supported")
  out = subprocess.run([sys.executable, "experiments/compare.py", f"--a={a}", f"--b={b}",
                        f"--out={tmp_path / 'out'}", "--name_b=longer"], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  for name in (compare.MARKDOWN, compare.JSON, compare.FIGURE):
    assert os.path.getsize(tmp_path / "out" / name) > 0
  assert "# longer against A" in (tmp_path / "out" / compare.MARKDOWN).read_text()
  out = subprocess.run([sys.executable, "experiments/compare.py", f"--a={a}"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
  assert out.returncode != 0 and "pass both --a and --b" in out.stderr


def test_runs_of_several_budgets_get_a_figure_per_budget(tmp_path):
  studies = []
  for name, arm in (("a", [0.81, 0.82, 0.83]), ("b", [0.83, 0.85, 0.87])):
    folder = _study(tmp_path / name, 300, [0.80, 0.81, 0.82], arm, "supported")
    with open(os.path.join(folder, "results.jsonl"), "a") as f:  # a second budget, N = 100
      for arm_name, acc in (("baseline", [0.60, 0.62, 0.64]), ("classical_online", arm)):
        f.write(json.dumps({"cell": f"N100/{arm_name}", "arm": arm_name, "budget": 100,
                            "status": "ok", "test_accuracy": acc}) + "\n")
    studies.append(folder)
  paths = compare.write(*studies, str(tmp_path / "out"))
  assert set(paths) == {"markdown", "json", "figure_N100", "figure_N1000"}
  assert not os.path.exists(tmp_path / "out" / compare.FIGURE)
  text = (tmp_path / "out" / compare.MARKDOWN).read_text()
  for budget in (100, 1000):
    assert os.path.getsize(paths[f"figure_N{budget}"]) > 0
    assert f"({compare.figure_name(budget)})" in text


def _with_effects(folder, first_seed, effects, verdict="supported"):
  """Gives a study of :func:`_study` a first seed, a protocol and C5's deciding intervals."""
  with open(os.path.join(folder, "study_config.json")) as f:
    study = json.load(f)
  study["config"]["first_seed"] = first_seed
  with open(os.path.join(folder, "study_config.json"), "w") as f:
    json.dump(study, f)
  with open(os.path.join(folder, "protocol.json"), "w") as f:
    json.dump({"version": 2, "digest": "0123456789abcdef", "placebos": []}, f)
  with open(os.path.join(folder, "claims.json"), "w") as f:
    json.dump([{"claim": "C5", "budget": 1000, "text": "simple transforms", "numbers": "",
                "verdict": verdict, "effects": effects}], f)
  return folder


def test_fresh_seeds_compare_unpaired_and_report_agreement(tmp_path):
  iv = lambda mean, lo, hi: {"mean": mean, "lo": lo, "hi": hi, "n": 3}
  a = _with_effects(_study(tmp_path / "a", 300, [0.80, 0.81, 0.82], [0.81, 0.82, 0.83],
                           "supported"), 0,
                    {"classical_online − baseline": iv(0.01, 0.005, 0.015),
                     "classical_online − pgd": iv(0.02, 0.01, 0.03)})
  b = _with_effects(_study(tmp_path / "b", 300, [0.70, 0.80, 0.90], [0.85, 0.86, 0.87],
                           "inconclusive (a CI crosses zero)"), 5,
                    {"classical_online − baseline": iv(0.012, 0.002, 0.02),
                     "classical_online − pgd": iv(-0.01, -0.02, 0.0)},
                    verdict="supported")
  out = compare.compare(a, b)
  assert not out["paired"] and out["seeds_a"] == [0, 1, 2] and out["seeds_b"] == [5, 6, 7]
  cells = {r["cell"]: r for r in out["cells"]}
  # Welch by hand: means 0.86 − 0.82, both sd 0.01, n 3: se = 0.01·sqrt(2/3), df = 4.
  change = cells["N1000/classical_online"]["change"]
  half = sp_stats.t.ppf(0.975, 4) * 0.01 * (2 / 3) ** 0.5
  assert change["mean"] == pytest.approx(0.04)
  assert change["hi"] - change["mean"] == pytest.approx(half)
  # Within each run the arm is still paired with its own baseline.
  assert cells["N1000/classical_online"]["b_vs_baseline"]["mean"] == pytest.approx(0.06)
  (c5,) = out["claims"]
  assert c5["agreement"] == {"same_verdict": True, "intervals": 2, "same_sign": 1,
                             "overlap": 1, "sign_differs": ["classical_online − pgd"],
                             "disjoint": ["classical_online − pgd"]}
  md = compare.markdown(out, "exploratory", "confirmation")
  assert "Seeds 0–2 of A and 5–7 of B" in md and "Welch" in md
  assert "| C5 | 1000 | supported | supported | yes | 1/2 | 1/2 |" in md
  assert "digest `0123456789abcdef` (the same)" in md
  # A confirmation run under the frozen protocol says so; its exploratory run, made before
  # the freeze, recorded no day.
  with open(os.path.join(b, "protocol.json"), "w") as f:
    json.dump({"version": 2, "digest": "0123456789abcdef", "frozen": "2026-12-07"}, f)
  frozen = compare.markdown(compare.compare(a, b), "exploratory", "confirmation")
  assert "digest `0123456789abcdef` (the same, frozen on 2026-12-07)" in frozen
  assert "`classical_online − pgd` changes sign" in md
  assert "`first_seed` 0 → 5" in md


def test_agreement_of_verdicts_in_other_classes():
  iv = {"mean": 0.01, "lo": 0.0, "hi": 0.02, "n": 5}
  same_class = compare.agreement({"verdict": "inconclusive (CI crosses zero)", "effects": {}},
                                 {"verdict": "inconclusive (margin)", "effects": {}})
  assert same_class["same_verdict"] and same_class["intervals"] == 0
  differ = compare.agreement({"verdict": "supported", "effects": {"x": iv}},
                             {"verdict": "not supported", "effects": {"x": iv}})
  assert not differ["same_verdict"] and differ["overlap"] == 1
  assert compare.agreement({"verdict": "missing (not run)"}, {"verdict": "supported"}) is None
