"""Statistics against hand-computed values; verdict rules on constructed cells."""

import math

import numpy as np
import pytest

from dreamjax import power, stats
from dreamjax.study import claims, records, rules_v1
from dreamjax.study.report import report_text, tables


def test_t_interval_hand_computed():
  # mean 2, sd 1, n 3: half width = t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.732051
  iv = stats.t_interval([1.0, 2.0, 3.0])
  assert iv.mean == pytest.approx(2.0)
  assert iv.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
  assert iv.n == 3


def test_t_interval_edge_cases():
  one = stats.t_interval([0.5])
  assert one.mean == 0.5 and math.isinf(one.hi)
  assert stats.t_interval([]).n == 0
  flat = stats.t_interval([0.7, 0.7, 0.7])
  assert flat.lo == pytest.approx(0.7) and flat.hi == pytest.approx(0.7)


def test_paired_difference_uses_pairs():
  a, b = [0.80, 0.90, 0.70], [0.78, 0.88, 0.68]  # a constant +0.02 gap, large spread
  d = stats.paired_difference(a, b)
  assert d.mean == pytest.approx(0.02) and d.half_width == pytest.approx(0.0, abs=1e-12)
  assert stats.direction(d) == "above"
  unpaired = stats.t_interval(a).lo < stats.t_interval(b).hi
  assert unpaired  # unpaired intervals overlap; pairing is what detects the gap
  with pytest.raises(ValueError):
    stats.paired_difference([1, 2], [1, 2, 3])


def test_direction_with_margin():
  iv = stats.Interval(0.005, 0.002, 0.008, 3)
  assert stats.direction(iv) == "above"
  assert stats.direction(iv, margin=0.01) == "crosses"
  assert stats.direction(stats.Interval(-0.05, -0.06, -0.04, 3)) == "below"


def _cell(acc, robust=None, frechet=None, lp=None, gen=0.0, train=10.0, seconds=None, cas=None):
  """A finished cell; ``gen``/``train`` are its counted cost (thousands of image-steps);
  ``robust``: {eps: per-seed robust accuracy}."""
  gen_s, train_s = seconds or (gen, train)
  return {"status": "ok", "test_accuracy": list(acc), "robust_accuracy": robust,
          "frechet": frechet, "label_preservation": lp, "gen_seconds": gen_s,
          "train_seconds": train_s, "cas": cas,
          "cost": {"gen_image_steps": gen * 1000, "train_image_steps": train * 1000}}


BASE = [0.80, 0.82, 0.81]


def _shift(d, noise=(0.0, 0.001, -0.001)):
  return [b + d + n for b, n in zip(BASE, noise)]


def test_c1_rules():
  cells = {"baseline": _cell(BASE, frechet=1.0)}
  cells["dream_strong"] = _cell(_shift(-0.05), frechet=10.0)
  assert rules_v1.c1(claims.Cells(cells), 0.01).verdict == claims.SUPPORTED
  cells["dream_strong"] = _cell(_shift(0.0), frechet=10.0)  # no real gain: still "poor"
  assert rules_v1.c1(claims.Cells(cells), 0.01).verdict == claims.SUPPORTED
  cells["dream_strong"] = _cell(_shift(0.03), frechet=10.0)
  assert rules_v1.c1(claims.Cells(cells), 0.01).verdict == claims.NOT_SUPPORTED
  cells["dream_strong"] = _cell(_shift(-0.05), frechet=1.5)  # stayed near the data
  assert rules_v1.c1(claims.Cells(cells), 0.01).verdict == claims.NOT_SUPPORTED
  cells["dream_strong"] = _cell([0.79, 0.83, 0.81], frechet=10.0)
  assert rules_v1.c1(claims.Cells(cells), 0.01).verdict == claims.INCONCLUSIVE


def test_c2_reads_the_online_arms_at_the_eps_where_the_baseline_is_not_at_the_floor():
  base_rob = {"0.01": [0.7, 0.72, 0.71], "0.03": [0.35, 0.37, 0.36], "0.1": [0.01, 0.0, 0.02]}
  cells = {"baseline": _cell(BASE, robust=base_rob),
           "noise_online": _cell(_shift(0.0)),
           "dream_online": _cell(_shift(0.001), robust={
               "0.01": [0.7, 0.72, 0.71], "0.03": [0.45, 0.47, 0.46], "0.1": [0.0, 0.0, 0.01]})}
  c = claims.Cells(cells)
  assert claims.robust_eps(c) == "0.03"  # 36% keeps the baseline inside 20-60%
  v = rules_v1.c2(c, 0.01)
  assert v.verdict == claims.SUPPORTED and "ε = 0.03" in v.numbers
  cells["dream_online"]["test_accuracy"] = _shift(0.05)  # does not act like noise
  assert rules_v1.c2(claims.Cells(cells), 0.01).verdict == claims.NOT_SUPPORTED
  cells["dream_online"] = _cell(_shift(0.0), robust={k: [x - 0.1 for x in v]
                                                     for k, v in base_rob.items()})
  assert rules_v1.c2(claims.Cells(cells), 0.01).verdict == claims.NOT_SUPPORTED  # hurts robustness


def test_c4_and_c6_rules_and_the_quality_gate():
  cells = {"baseline": _cell(BASE), "vae_small": _cell(_shift(0.0), lp=0.9),
           "gan_small": _cell(_shift(-0.02), lp=0.8),
           "vae_pool": _cell(_shift(0.03), lp=0.9), "gan_pool": _cell(_shift(0.02), lp=0.9)}
  assert rules_v1.c4(claims.Cells(cells, quality_gate=0.6), 0.01).verdict == claims.SUPPORTED
  assert rules_v1.c6(claims.Cells(cells, quality_gate=0.6), 0.01).verdict == claims.SUPPORTED
  # A strawman generator cannot support "adds nothing".
  cells["gan_small"] = _cell(_shift(-0.02), lp=0.13)
  v = rules_v1.c4(claims.Cells(cells, quality_gate=0.6), 0.01)
  assert v.verdict.startswith("inconclusive (under-trained generator: gan_small 13%")
  cells["vae_small"] = _cell(_shift(0.05), lp=0.9)  # a real gain decides even so
  assert rules_v1.c4(claims.Cells(cells, quality_gate=0.6), 0.01).verdict == claims.NOT_SUPPORTED
  flat = dict(cells, vae_pool=_cell(_shift(0.0), lp=0.9), gan_pool=_cell(_shift(-0.01), lp=0.3))
  v = rules_v1.c6(claims.Cells(flat, quality_gate=0.6), 0.01)
  assert v.verdict.startswith("inconclusive (under-trained generator: gan_pool")
  flat["gan_pool"]["label_preservation"] = 0.9
  assert rules_v1.c6(claims.Cells(flat, quality_gate=0.6), 0.01).verdict == claims.NOT_SUPPORTED


def test_c5_rule_holm_and_missing_arm():
  cells = {"baseline": _cell(BASE), "classical_online": _cell(_shift(0.03)),
           "dream_subtle": _cell(_shift(0.0)), "vae_small": _cell(_shift(-0.01), lp=0.9)}
  v = rules_v1.c5(claims.Cells(cells, quality_gate=0.6), 0.01)
  assert v.verdict == claims.SUPPORTED and "Holm" in v.numbers
  cells["pgd"] = _cell(_shift(0.06))
  assert rules_v1.c5(claims.Cells(cells), 0.01).verdict == claims.NOT_SUPPORTED
  # Wins over an under-trained generator do not count towards "better than half".
  weak = {"baseline": _cell(BASE), "classical_online": _cell(_shift(0.03)),
          "dream_subtle": _cell([0.79, 0.84, 0.80]), "vae_small": _cell(_shift(-0.01), lp=0.1)}
  v = rules_v1.c5(claims.Cells(weak, quality_gate=0.6), 0.01)
  assert v.verdict == claims.INCONCLUSIVE and "under-trained: vae_small" in v.numbers
  v = rules_v1.c1(claims.Cells({"baseline": _cell(BASE),
                              "dream_strong": {"status": "failed", "error": "DivergenceError: x"}}), 0.01)
  assert v.verdict.startswith("missing") and "DivergenceError" in v.verdict


def test_c3_c7_rules():
  strong = {"status": "ok", "logit": stats.Interval(0.8, 0.75, 0.85, 3).to_dict(),
            "layer": stats.Interval(0.1, 0.0, 0.2, 3).to_dict()}
  assert rules_v1.c3(strong).verdict == claims.SUPPORTED
  weak = dict(strong, logit=stats.Interval(0.2, 0.1, 0.3, 3).to_dict())
  assert rules_v1.c3(weak).verdict == claims.NOT_SUPPORTED
  t = {"baseline": _cell(BASE), "ae_pretrain": _cell(_shift(0.04), gen=20, train=10),
       "pretext_transfer": _cell(_shift(0.01), gen=20, train=10),
       "vae_pool": _cell(_shift(0.0), gen=60, train=10), "gan_pool": _cell(_shift(-0.01), gen=90, train=10)}
  assert rules_v1.c7(claims.Cells(t), 0.01).verdict == claims.SUPPORTED
  # The verdict reads counted cost, never wall-clock seconds: the same cells timed
  # the other way round (a resumed run, a busier machine) give the same verdict.
  slow = dict(t, ae_pretrain=_cell(_shift(0.04), gen=20, train=10, seconds=(300, 10)))
  assert rules_v1.c7(claims.Cells(slow), 0.01).verdict == claims.SUPPORTED
  t["ae_pretrain"] = _cell(_shift(-0.05), gen=20, train=10)
  t["pretext_transfer"] = _cell(_shift(-0.05), gen=20, train=10)
  assert rules_v1.c7(claims.Cells(t), 0.01).verdict == claims.NOT_SUPPORTED


def test_inconclusive_verdicts_state_what_the_seeds_could_detect():
  cells = {"baseline": _cell(BASE, frechet=1.0),
           "dream_strong": _cell([0.79, 0.84, 0.82], frechet=10.0)}
  v = {x.claim: x for x in claims.all_verdicts(cells, None, budget=1000, version=1)}["C1"]
  assert v.verdict == claims.INCONCLUSIVE and v.budget == 1000
  diffs = np.subtract([0.79, 0.84, 0.82], BASE)
  expected = power.min_detectable_difference(np.std(diffs, ddof=1), 3)
  assert f"{expected * 100:.1f} pp" in v.power and "3 seeds" in v.power


def test_all_verdicts_covers_every_claim():
  out = claims.all_verdicts({}, None)
  assert [v.claim for v in out] == list(claims.CLAIMS)
  assert all(v.verdict.startswith("missing") for v in out)
  assert np.all([v.rule for v in out])


def test_report_flags_classical_gain_below_the_literature():
  oracle = {"status": "ok", "test_accuracy": [0.91]}
  base = _cell([0.80, 0.81, 0.82])
  weak = report_text._sanity(oracle, base, 1000, _cell([0.801, 0.809, 0.821]))
  assert any("Mismatch with the literature" in line and "+0.0 pp" in line for line in weak)
  strong = report_text._sanity(oracle, base, 1000, _cell([0.83, 0.84, 0.85]))
  assert any("in line with" in line and "+3.0 pp" in line for line in strong)
  assert not any("Mismatch" in line for line in strong)
  assert len(report_text._sanity(oracle, base, 1000, None)) == 2  # no classical arm: no line


def test_the_oracle_is_held_to_fashion_mnists_range_on_fashion_mnist_alone():
  oracle = {"status": "ok", "test_accuracy": [0.91]}
  base = _cell([0.80, 0.81, 0.82])
  (fmnist, _) = report_text._sanity(oracle, base, 1000)
  assert "inside the 87.6–92.5%" in fmnist and "Fashion-MNIST" in fmnist
  (other, _) = report_text._sanity(oracle, base, 1000, dataset="tfds:cifar10")
  assert "Fashion-MNIST" not in other and "Oracle 91.0%" in other
  assert "no published accuracy range for tfds:cifar10" in other


def test_convergence_notes_name_the_arms_still_rising():
  def cell(*vals, status="ok"):
    return {"status": status, "history": [{"step": 50 * (i + 1), "val_accuracy": [v, v]}
                                          for i, v in enumerate(vals)]}

  cells = {"baseline": cell(0.70, 0.80, 0.805), "pgd_train": cell(0.60, 0.70, 0.72),
           "noise": cell(0.70, 0.75, 0.74), "fgsm": cell(0.5, 0.9, status="failed"),
           "classical": {"status": "ok", "history": []}}
  notes = report_text.convergence_notes(cells, steps=150)
  assert len(notes) == 2
  assert "2 of 3 arms" in notes[0] and "+0.5 pp" in notes[0] and "more `train.steps`" in notes[0]
  assert "`pgd_train` +2.0 pp" in notes[1] and "150 training steps" in notes[1]
  assert "baseline" not in notes[1] and "fgsm" not in " ".join(notes)
  assert report_text.convergence_notes({"baseline": cell(0.7, 0.7)}, steps=10)[0].startswith(
      "- Convergence: 1 of 1")
  assert report_text.convergence_notes({}, steps=10) == []


def test_a_generator_shared_by_the_seeds_is_timed_once():
  # Three seeds read one pool generator trained in 100 s; each seed sampled for 2 s.
  # The record sums the seeds' parts (3 × 102 s); the cell cost 100 + 3 × 2 s.
  pool = dict(_cell(_shift(0.0), gen=60, train=10, seconds=(306.0, 30.0)), seeds=[0, 1, 2],
              generation={"generator_train_seconds": 100.0})
  assert records.generation_seconds(pool) == pytest.approx(106.0)
  own = dict(_cell(_shift(0.0), seconds=(12.0, 30.0)), seeds=[0, 1, 2])  # nothing shared
  assert records.generation_seconds(own) == pytest.approx(12.0)
  t = {"baseline": _cell(BASE), "pretext_transfer": _cell(_shift(0.01), gen=20, train=10,
                                                            seconds=(50.0, 30.0)),
       "vae_pool": pool}
  assert "80s vs 136s" in rules_v1.c7(claims.Cells(t), 0.01).numbers
  rows = tables.summary_rows([dict(_cell(BASE), cell="N1000/baseline", arm="baseline", budget=1000),
                              dict(pool, cell="N1000/vae_pool", arm="vae_pool", budget=1000)])
  assert [r["gen_seconds"] for r in rows] == [pytest.approx(0.0), pytest.approx(106.0)]


def test_forest_draws_a_panel_per_budget_at_the_paired_differences(monkeypatch, tmp_path):
  from dreamjax.figures import charts  # pylint: disable=g-import-not-at-top
  from dreamjax.configs import arms  # pylint: disable=g-import-not-at-top
  drawn = []
  monkeypatch.setattr(charts, "save_figure", lambda fig, path, **kw: drawn.append(fig))

  def rec(acc):
    return {"status": "ok", "test_accuracy": acc}

  cells = {100: {"baseline": rec([0.70, 0.72, 0.74]), "classical_online": rec([0.71, 0.74, 0.74]),
                 "vae_pool": rec([0.69, 0.70, 0.74]), "alignment": {"status": "ok"}},
           5000: {"baseline": rec([0.86, 0.87, 0.88]), "classical_online": rec([0.88, 0.88, 0.89])}}
  assert charts.forest(cells, str(tmp_path / "f.png"), arms.sort_key, arms.color)
  axes = drawn[0].axes
  assert [ax.get_title() for ax in axes] == ["N = 100 (baseline 72.0%)",
                                             "N = 5000 (baseline 87.0%)"]
  labels = [t.get_text() for t in axes[0].get_yticklabels()]
  assert labels == ["classical_online", "vae_pool"]  # rows shared, in report order

  def means(ax):  # x of each drawn point (a marker-only line), keyed by its row
    return {round(float(line.get_ydata()[0])): float(line.get_xdata()[0]) for line in ax.lines
            if line.get_marker() == "o"}

  # Rows from the top: classical_online at y = 1, vae_pool at y = 0; mean paired change in pp.
  assert means(axes[0]) == pytest.approx({1: 1.0, 0: -1.0})
  assert means(axes[1]) == pytest.approx({1: 1.333333})  # N = 5000 has no vae_pool
  # One budget keeps the single panel and the baseline in its axis label.
  drawn.clear()
  assert charts.forest({1000: cells[100]}, str(tmp_path / "g.png"), arms.sort_key, arms.color)
  assert len(drawn[0].axes) == 1 and "baseline 72.0%" in drawn[0].axes[0].get_xlabel()
  assert not charts.forest({100: {"baseline": rec([0.7])}}, str(tmp_path / "h.png"),
                           arms.sort_key, arms.color)


def test_report_says_where_each_claim_holds_across_budgets():
  def v(cid, budget, verdict, numbers):
    return claims.Verdict(cid, claims.CLAIMS[cid], "", numbers, verdict, "", budget=budget)

  by_claim = {1000: {"C1": v("C1", 1000, "supported", "a"), "C3": v("C3", 1000, "supported", "b")},
              100: {"C1": v("C1", 100, "inconclusive (CI crosses zero)", "c100"),
                    "C3": v("C3", 100, "supported", "d")},
              5000: {"C1": v("C1", 5000, "supported", "e5000"), "C3": v("C3", 5000, "supported", "f")}}
  md = report_text.by_budget(by_claim, [1000, 100, 5000])
  assert "The same verdict at every budget: C3 (supported)." in md
  assert ("- **C1**: supported at N = 1000; inconclusive (CI crosses zero) at N = 100;"
          " supported at N = 5000") in md
  assert "  - N = 100: c100" in md and "  - N = 5000: e5000" in md
  assert not any("b" == line or ": a" in line for line in md)  # the first budget's are in the table
  assert report_text.by_budget({1000: by_claim[1000]}, [1000]) == []  # one budget: nothing to say


def test_claims_table_has_each_arms_real_label_worth_at_its_largest_copies():
  base = [[0.80, 0.81, 0.82], [0.84, 0.85, 0.86]]  # N0 = 1000 and 2000
  eq = {m: power.real_label_equivalent([1000, 2000], base, [a, a + 0.01, a + 0.02], n_boot=200)
        for m, a in ((1, 0.81), (4, 0.83))}
  row = report_text._exchange_row({"equivalent": {"classical": eq}}, 1000, columns=3)
  assert len(row) == 1 and row[0].startswith("| **Exchange rate**")
  assert f"classical at M = 4: {eq[4].fmt()}" in row[0] and "M = 1" not in row[0]
  assert row[0].count("|") == 3 + 3  # claim, numbers, then one empty cell per budget column
  assert report_text._exchange_row(None, 1000, columns=3) == []


def test_unpaired_difference_is_welch():
  from scipy import stats as sp_stats
  a, b = [0.9, 0.8, 0.85, 0.95], [0.7, 0.75]
  iv = stats.unpaired_difference(a, b)
  t = sp_stats.ttest_ind(a, b, equal_var=False)
  ci = t.confidence_interval(0.95)
  assert iv.mean == pytest.approx(np.mean(a) - np.mean(b))
  assert (iv.lo, iv.hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
  assert stats.unpaired_difference([0.5], [0.4]).hi == float("inf")


def test_a_verdict_carries_the_intervals_it_was_decided_on():
  rob = lambda d: {"0.03": [0.35 + d, 0.37 + d, 0.36 + d]}
  cells = {"baseline": _cell(BASE, robust=rob(0.0)),
           "dream_online": _cell(_shift(0.001), robust=rob(0.1)),
           "noise_matched_online": _cell(_shift(0.0), robust=rob(0.1))}
  (c2,) = [v for v in claims.all_verdicts(cells, None) if v.claim == "C2"]
  assert set(c2.effects) == {"dream_online − noise_matched_online",
                             "dream_online − noise_matched_online (robust, ε = 0.03)",
                             "dream_online − baseline (robust, ε = 0.03)"}
  robust_gain = c2.effects["dream_online − baseline (robust, ε = 0.03)"]
  assert robust_gain["mean"] == pytest.approx(0.1) and robust_gain["n"] == 3
  assert c2.to_dict()["effects"] == c2.effects  # written to claims.json
  (c3,) = [v for v in claims.all_verdicts(
      cells, {"status": "ok", "layer": {"mean": 0.1, "lo": 0.05, "hi": 0.15, "n": 3}})
      if v.claim == "C3"]
  assert c3.effects == {"cosine(layer dream, adversarial)":
                        {"mean": 0.1, "lo": 0.05, "hi": 0.15, "n": 3}}
  (c1,) = [v for v in claims.all_verdicts(cells, None) if v.claim == "C1"]
  assert c1.verdict.startswith("missing") and c1.effects == {}
