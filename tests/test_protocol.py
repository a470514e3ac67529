"""Protocol version 2: placebos through every rule, matched noise, the digest, the
validation-only length chooser."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from dreamjax import data, dream
from dreamjax.methods import augment
from dreamjax.plumbing import lock
from dreamjax.training import models
from dreamjax.configs import dream as dream_configs
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import read_jsonl
from dreamjax.study import claims, rules_v1
from dreamjax.study.report import report, report_text
from dreamjax.study.run import choose, runner
from dreamjax.study.evidence import Cells

BASE = [0.80, 0.82, 0.81]


def _shift(d, noise=(0.0, 0.001, -0.001)):
  return [b + d + n for b, n in zip(BASE, noise)]


def _cell(acc, frechet=None, lp=None, gen=0.0):
  lp_seeds = None if lp is None else [lp + e for e in (0.0, 0.002, -0.002)]
  return {"status": "ok", "test_accuracy": list(acc), "frechet": frechet,
          "frechet_per_seed": None if frechet is None else [frechet] * 3,
          "label_preservation": lp, "label_preservation_per_seed": lp_seeds,
          "cost": {"gen_image_steps": gen, "train_image_steps": 1000}, "gen_seconds": 0.0,
          "train_seconds": 1.0}


def test_v1_c1_accepted_stored_classical_copies_v2_does_not():
  """The published numbers' shape: classical copies far by Fréchet (44 vs 1.3 for the real
  set) with no real gain passed version 1's C1; version 2 reads them as a placebo."""
  cells = {"baseline": _cell(BASE, frechet=1.3, lp=0.95),
           "classical": _cell(_shift(0.003), frechet=44.0, lp=0.90),
           "noise": _cell(_shift(0.0), frechet=20.0, lp=0.93),
           "dream_strong": _cell(_shift(0.0), frechet=160.0, lp=0.55)}
  v1 = {**cells, "dream_strong": cells["classical"]}
  assert rules_v1.c1(Cells(v1), 0.01).verdict == claims.SUPPORTED
  assert claims.c1(Cells(cells), 0.01, dream="classical").verdict == claims.NOT_SUPPORTED
  assert claims.c1(Cells(cells), 0.01, dream="noise").verdict == claims.NOT_SUPPORTED
  assert claims.c1(Cells(cells), 0.01).verdict == claims.SUPPORTED


def test_c1_reads_the_dose_response_over_the_sweep():
  cells = {"baseline": _cell(BASE, frechet=1.3, lp=0.95),
           "classical": _cell(_shift(0.003), frechet=44.0, lp=0.90),
           "noise": _cell(_shift(0.0), frechet=20.0, lp=0.93),
           "dream_strong": _cell(_shift(0.0), frechet=160.0, lp=0.55)}
  # Further-off dreams gain more, on every seed: going off the data helps here.
  for i, (fd, gain) in enumerate(((5.0, 0.0), (50.0, 0.01), (500.0, 0.02))):
    cells[f"dream_sweep@{i}"] = _cell(_shift(gain), frechet=fd, lp=0.9 - 0.1 * i)
  slope = claims.dose_response(Cells(cells), "dream_sweep")
  assert slope.lo > 0 and slope.mean == pytest.approx(0.02 / np.log(100), rel=0.05)
  assert claims.c1(Cells(cells), 0.01).verdict == claims.NOT_SUPPORTED
  for i, (fd, gain) in enumerate(((5.0, 0.0), (50.0, -0.01), (500.0, -0.02))):
    cells[f"dream_sweep@{i}"] = _cell(_shift(gain), frechet=fd, lp=0.9 - 0.1 * i)
  v = claims.c1(Cells(cells), 0.01)
  assert v.verdict == claims.SUPPORTED and "per log Fréchet" in v.numbers


def test_c5_and_c7_no_longer_hold_when_nothing_helps():
  """With the baseline in the place of the arm said to be better, version 1's C5 and C7
  held (most rivals cost accuracy); version 2 asks for a gain over the baseline."""
  rivals = {"dream_subtle": _cell(_shift(-0.02)), "pgd": _cell(_shift(-0.03)),
            "vae_pool": _cell(_shift(-0.02), lp=0.9, gen=10**6),
            "gan_pool": _cell(_shift(-0.025), lp=0.9, gen=10**6)}
  cells = {"baseline": _cell(BASE), "classical_online": _cell(BASE), **rivals,
           "ae_pretrain": _cell(BASE), "pretext_transfer": _cell(BASE)}
  assert rules_v1.c5(Cells(cells), 0.01).verdict == claims.SUPPORTED
  assert rules_v1.c7(Cells(cells), 0.01).verdict == claims.SUPPORTED
  assert claims.c5(Cells(cells), 0.01).verdict != claims.SUPPORTED
  assert claims.c7(Cells(cells), 0.01).verdict != claims.SUPPORTED
  placebos = claims.placebo_verdicts(cells, None, 0.01)
  assert all(p["passes"] for p in placebos if p["claim"] in ("C5", "C7"))


def test_c2_needs_the_dream_to_match_noise_of_its_size_on_robust_accuracy_too():
  rob = lambda d: {"0.03": [x + d for x in (0.35, 0.37, 0.36)]}
  cells = {"baseline": {**_cell(BASE), "robust_accuracy": rob(0.0)},
           "noise_matched_online": {**_cell(_shift(0.0)), "robust_accuracy": rob(0.06)},
           "dream_online": {**_cell(_shift(0.001)), "robust_accuracy": rob(0.03)}}
  # Clean like noise and a robust gain over the baseline passed version 1...
  v1 = {**cells, "noise_online": cells["noise_matched_online"]}
  assert rules_v1.c2(Cells(v1), 0.01).verdict == claims.SUPPORTED
  # ...but matched noise is 3 points more robust: the dream does not act like it.
  assert claims.c2(Cells(cells), 0.01).verdict == claims.NOT_SUPPORTED
  cells["noise_matched_online"]["robust_accuracy"] = rob(0.03)
  assert claims.c2(Cells(cells), 0.01).verdict == claims.SUPPORTED
  assert claims.c2(Cells(cells), 0.01, dream="baseline").verdict != claims.SUPPORTED


def test_c3_rests_on_the_layer_dream_with_the_logit_dream_as_reference():
  iv = lambda m: {"mean": m, "lo": m - 0.03, "hi": m + 0.03, "n": 5}
  alignment = {"status": "ok", "logit": iv(0.78), "layer": iv(0.08), "random": iv(0.0)}
  assert rules_v1.c3(alignment).verdict == claims.SUPPORTED
  v = claims.c3(alignment)
  assert v.verdict == claims.NOT_SUPPORTED and "class-logit dream" in v.numbers
  assert claims.c3({**alignment, "layer": iv(0.7)}).verdict == claims.SUPPORTED
  assert claims.c3({**alignment, "layer": iv(0.7)}, dream="random").verdict != claims.SUPPORTED


def test_inconclusive_verdicts_name_their_reason():
  cells = {"baseline": _cell(BASE, frechet=1.3, lp=0.95),
           "classical": _cell(BASE, frechet=44.0, lp=0.90),
           "noise": _cell(BASE, frechet=20.0, lp=0.93),
           "dream_strong": _cell([0.79, 0.84, 0.83], frechet=160.0, lp=0.55)}
  v = claims.c1(Cells(cells), 0.01)
  assert v.verdict == "inconclusive (accuracy change CI crosses +margin)"


@pytest.mark.parametrize("digest", sorted(claims.FROZEN))
def test_the_frozen_protocol_is_what_the_presets_run(digest):
  """A change to a rule, a threshold or an arm-defining field of a frozen preset fails here:
  it is a new protocol version, and needs its own confirmation run (docs/protocol.md)."""
  preset, day = claims.FROZEN[digest]
  p = claims.protocol(study_configs.get_config(preset))
  assert p == {"version": 2, "digest": digest, "frozen": day}, (
      f"the {preset} preset no longer runs the protocol frozen on {day}")
  assert claims.protocol(study_configs.get_config(preset), version=1)["frozen"] is None


def test_protocol_digest_changes_with_a_rule_or_threshold_not_with_seeds(monkeypatch):
  cfg = study_configs.get_config("quick")
  p = claims.protocol(cfg)
  assert p["version"] == 2
  fresh = study_configs.get_config("quick")
  fresh.first_seed, fresh.num_seeds = 5, 8
  assert claims.protocol(fresh) == p
  margin = study_configs.get_config("quick")
  margin.verdict_margin = 0.02
  assert claims.protocol(margin)["digest"] != p["digest"]
  longer = study_configs.get_config("quick")
  longer.train.steps = 2400
  assert claims.protocol(longer)["digest"] != p["digest"]
  monkeypatch.setattr(claims, "SAME_DIRECTION", 0.6)
  assert claims.protocol(cfg)["digest"] != p["digest"]
  monkeypatch.undo()
  monkeypatch.setitem(claims.RULES, "C4", claims.RULES["C4"] + " Also.")
  assert claims.protocol(cfg)["digest"] != p["digest"]
  monkeypatch.undo()
  assert claims.protocol(cfg, version=1)["digest"] != p["digest"]


def test_matched_noise_has_the_dreams_mean_distance(real_data_dir):
  """C2's comparator: noise with the subtle dream's mean L2 size, within 5%."""
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  s = data.make_splits(raw, num_labeled=100, val_size=100, seed=0)
  model = models.make_model(study_configs.get_config("tiny").model, 10)
  variables = models.init_variables(model, jax.random.key(0), s.image_shape)
  cfg = dream_configs.with_steps(dream_configs.get_preset("subtle"), 5)
  res = dream.dream_dataset(model, variables, s.labeled_images, s.labeled_labels,
                            dream.from_config(cfg, model), jax.random.key(1))
  target = float(np.mean(res.l2))
  std = augment.match_noise_std(s.labeled_images, target, jax.random.key(2))
  # Fresh draws, on other images of the same data: the size holds.
  got, _ = augment.noise_distances(s.pool_images[:500], std, jax.random.key(3))
  assert abs(got - target) / target < 0.05
  assert std > target / np.sqrt(np.prod(s.image_shape))  # clipping eats part of the noise


def test_the_length_chooser_reads_no_test_label(real_data_dir):
  cfg = study_configs.get_config("tiny")
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  kwargs = dict(lengths=(10, 20, 40), arms=("baseline", "classical_online"), log=lambda m: None)
  real = choose.choose_length(cfg, raw, 100, **kwargs)
  rng = np.random.default_rng(0)
  scrambled = dataclasses.replace(raw, test_labels=rng.permutation(raw.test_labels),
                                  test_images=raw.test_images[::-1].copy())
  again = choose.choose_length(cfg, scrambled, 100, **kwargs)
  assert again["val_accuracy"] == real["val_accuracy"] and again["steps"] == real["steps"]
  assert real["steps"] in (10, 20, 40) and set(real["val_accuracy"]) == set(kwargs["arms"])
  assert len(choose.without_test(raw).test_labels) == 0


def test_the_chooser_picks_the_shortest_length_after_which_doubling_stops_gaining(monkeypatch):
  curve = {10: 0.50, 20: 0.60, 40: 0.602, 80: 0.603}

  class FakeRes:
    def __init__(self, steps):
      self.state = dataclasses.make_dataclass("S", ["variables"])(steps)
      self.seconds = 1.0

  monkeypatch.setattr(choose.train, "fit", lambda model, tcfg, *a, **k: FakeRes(tcfg.steps))
  monkeypatch.setattr(choose.evaluate, "accuracy",
                      lambda model, steps, *a, **k: np.full(2, curve[steps]))
  cfg = study_configs.get_config("tiny")
  raw = data.RawDataset("fake", np.zeros((400, 28, 28, 1), np.uint8), np.arange(400) % 10,
                        np.zeros((10, 28, 28, 1), np.uint8), np.arange(10) % 10, 10,
                        tuple(str(c) for c in range(10)))
  out = choose.choose_length(cfg, raw, 100, lengths=(10, 20, 40, 80), arms=("baseline",),
                             log=lambda m: None)
  assert out["steps"] == 20 and not out["still_gaining"]
  out = choose.choose_length(cfg, raw, 100, lengths=(10, 20), arms=("baseline",),
                             log=lambda m: None)
  assert out["steps"] == 20 and out["still_gaining"]


class _Killed(Exception):
  """A run stopped part-way (a kill, a lost machine)."""


def _without_wall_clock(choices):
  return [{k: v for k, v in c.items() if k != "seconds"} for c in choices]


def _counting_fit(monkeypatch):
  """The descriptions of the runs choose trains from now on (each trains for real)."""
  trained, fit = [], choose.train.fit
  def counting(*args, **kwargs):
    trained.append(kwargs["desc"])
    return fit(*args, **kwargs)
  monkeypatch.setattr(choose.train, "fit", counting)
  return trained


def test_an_interrupted_length_chooser_resumes_with_what_it_measured(tmp_path, monkeypatch):
  cfg = study_configs.get_config("tiny")
  kwargs = dict(lengths=(10, 20), arms=("baseline", "classical_online"))
  trained = _counting_fit(monkeypatch)
  choose.choose_lengths(cfg, str(tmp_path / "whole"), log=lambda m: None, **kwargs)
  assert len(trained) == 4

  measured = []
  def killed_after_two(message):
    if message.startswith("N100/") and "validation accuracy" in message:
      measured.append(message)
      if len(measured) == 2:
        raise _Killed
  workdir = tmp_path / "resumed"
  with pytest.raises(_Killed):
    choose.choose_lengths(cfg, str(workdir), log=killed_after_two, **kwargs)
  assert not (workdir / "length_choice.json").exists()
  assert len(read_jsonl(str(workdir / "length_measurements.jsonl"))) == 2
  trained.clear()
  logged = []
  summary = choose.choose_lengths(cfg, str(workdir), log=logged.append, **kwargs)
  assert trained == ["choose N100/classical_online@10", "choose N100/classical_online@20"]
  assert any("2 measurement(s) already made" in m for m in logged)
  assert sum("(measured before, reused)" in m for m in logged) == 2
  whole = json.loads((tmp_path / "whole" / "length_choice.json").read_text())
  resumed = json.loads((workdir / "length_choice.json").read_text())
  assert _without_wall_clock(resumed) == _without_wall_clock(whole)
  trained.clear()  # a finished chooser run again trains nothing and writes the same choice
  assert choose.choose_lengths(cfg, str(workdir), log=lambda m: None, **kwargs) == summary
  assert trained == []
  assert json.loads((workdir / "length_choice.json").read_text()) == resumed


def test_a_length_chooser_with_another_config_refuses_the_workdir(tmp_path, monkeypatch):
  cfg = study_configs.get_config("tiny")
  kwargs = dict(lengths=(10, 20), arms=("baseline",), log=lambda m: None)
  choose.choose_lengths(cfg, str(tmp_path), **kwargs)
  trained = _counting_fit(monkeypatch)
  for field, value in (("val_size", 100), ("first_seed", 1), ("num_seeds", 3)):
    other = study_configs.get_config("tiny")
    setattr(other, field, value)
    with pytest.raises(ConfigError, match=f"differs in: config.{field}.*fresh --workdir"):
      choose.choose_lengths(other, str(tmp_path), **kwargs)
  other = study_configs.get_config("tiny")
  other.train.batch_size = 16
  with pytest.raises(ConfigError, match="config.train.batch_size.*fresh --workdir"):
    choose.choose_lengths(other, str(tmp_path), **kwargs)
  with pytest.raises(ConfigError, match="differs in: tolerance"):
    choose.choose_lengths(cfg, str(tmp_path), **{**kwargs, "tolerance": 0.01})
  with pytest.raises(ConfigError, match="differs in: lengths"):
    choose.choose_lengths(cfg, str(tmp_path), **{**kwargs, "lengths": (10, 40)})
  assert trained == []
  # Another budget measures apart from the recorded one: it is added, N100's reused.
  more = study_configs.get_config("tiny")
  more.budgets = (100, 200)
  choose.choose_lengths(more, str(tmp_path), **kwargs)
  assert trained == ["choose N200/baseline@10", "choose N200/baseline@20"]


def test_a_length_chooser_refuses_a_busy_or_unwritable_workdir_before_training(
    tmp_path, monkeypatch):
  cfg = study_configs.get_config("tiny")
  trained = _counting_fit(monkeypatch)
  with lock.workdir_lock(str(tmp_path)):
    with pytest.raises(ConfigError, match="is in use"):
      choose.choose_lengths(cfg, str(tmp_path), lengths=(10, 20), log=lambda m: None)
  (tmp_path / "file").write_text("")
  with pytest.raises(ConfigError, match="is a file, not a folder"):
    choose.choose_lengths(cfg, str(tmp_path / "file"), lengths=(10, 20), log=lambda m: None)
  assert trained == []


def test_a_placebo_through_every_rule_of_a_tiny_study(tmp_path, real_data_dir):
  """The report runs each rule on its placebos and prints the result."""
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "classical", "noise", "classical_online", "noise_matched_online",
              "dream_strong", "dream_online", "dream_sweep")
  cfg.exchange.arms = ("classical",)
  runner.run_study(cfg, str(tmp_path), log=lambda m: None)
  records = read_jsonl(str(tmp_path / "results.jsonl"))
  placebos = report.placebos_by_budget(cfg, records)
  c1 = [p for p in placebos if p["claim"] == "C1"]
  assert {p["placebo"] for p in c1} == {"dream=classical", "dream=noise"}
  assert all(p["verdict"] != claims.SUPPORTED for p in c1), c1
  matched = next(r for r in records if r["arm"] == "noise_matched_online")
  info = matched["transform_info"]
  assert abs(info["noise_mean_l2"] - info["dream_mean_l2"]) / info["dream_mean_l2"] < 0.05
  text = (tmp_path / "REPORT.md").read_text()
  assert "## Placebo checks" in text and "Protocol version 2, digest" in text
  assert os.path.exists(tmp_path / "protocol.json")


def test_the_deep_dream_claims_are_read_under_the_deep_dreamer_too():
  cells = {"baseline": _cell(BASE, frechet=1.3, lp=0.95),
           "classical": _cell(_shift(0.003), frechet=44.0, lp=0.90),
           "noise": _cell(_shift(0.0), frechet=20.0, lp=0.93),
           "dream_strong": _cell(_shift(0.0), frechet=160.0, lp=0.55),
           "deep_dream_strong": _cell(_shift(0.03), frechet=300.0, lp=0.40)}
  out = claims.dreamer_verdicts(cells, 0.01, budget=1000)
  assert [(d, v.claim) for d, v in out] == [("deep dreamer", "C1")]  # C2's arm did not run
  assert out[0][1].verdict == claims.NOT_SUPPORTED and "deep_dream_strong" in out[0][1].numbers
  own = {v.claim: v for v in claims.all_verdicts(cells, None, budget=1000)}
  assert own["C1"].verdict == claims.SUPPORTED
  md = "\n".join(report_text._dreamers({1000: out}, {1000: list(own.values())}))
  assert "C1 at N = 1000 (deep dreamer: not supported; own classifier: supported)" in md


def test_c4_and_c6_are_decided_on_every_arm_of_their_generators_that_ran():
  """A fresh-sample (or diffusion) arm of a small-set generator that gains refutes C4 as
  the stored VAE/GAN would; one of a pool generator that gains supports C6."""
  flat = {a: _cell(_shift(0.0), lp=0.9) for a in ("vae_small", "gan_small")}
  cells = {"baseline": _cell(BASE), "noise": _cell(_shift(0.0)), **flat,
           "vae_pool": _cell(_shift(0.0), lp=0.9), "gan_pool": _cell(_shift(0.0), lp=0.9)}
  assert claims.c4(Cells(cells), 0.01).verdict == claims.SUPPORTED
  assert claims.c6(Cells(cells), 0.01).verdict == claims.NOT_SUPPORTED
  gains = {**cells, "gan_small_online": _cell(_shift(0.03), lp=0.9),
           "gan_pool_online": _cell(_shift(0.03), lp=0.9)}
  c4, c6 = claims.c4(Cells(gains), 0.01), claims.c6(Cells(gains), 0.01)
  assert c4.verdict == claims.NOT_SUPPORTED and "gan_small_online" in c4.arms
  assert c6.verdict == claims.SUPPORTED and "gan_pool_online" in c6.arms
  assert "Δacc(gan_pool_online − gan_small_online)" in c6.numbers  # same form, small set
  # An arm that failed leaves the claim missing, as a required arm does.
  failed = {**cells, "diffusion_small_online": {"status": "failed", "error": "boom"}}
  assert claims.c4(Cells(failed), 0.01).verdict.startswith("missing")
  # An under-trained fresh-sample generator cannot support "adds nothing".
  weak = {**cells, "vae_small_online": _cell(_shift(0.0), lp=0.3)}
  assert claims.c4(Cells(weak, quality_gate=0.6), 0.01).verdict == (
      "inconclusive (under-trained generator: vae_small_online 30%)")
