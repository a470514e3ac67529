"""Paired tests, Holm, power and the real-label exchange rate against hand/published values."""

import math

import numpy as np
import pytest
from scipy import stats as sp_stats

from dreamjax import power, stats


def test_paired_p_value_matches_scipy_and_edge_cases():
  a = [0.81, 0.83, 0.80, 0.84, 0.82]
  b = [0.80, 0.81, 0.80, 0.82, 0.80]
  assert stats.paired_p_value(a, b) == pytest.approx(sp_stats.ttest_rel(a, b).pvalue, rel=1e-12)
  # d = [1, 3]: mean 2, sd sqrt(2), t = 2 / (sqrt(2) / sqrt(2)) = 2, p = 2 * (1 - F_1(2))
  # = 1 - 2 * atan(2) / pi (Cauchy) = 0.295167...
  assert stats.paired_p_value([1.0, 3.0], [0.0, 0.0]) == pytest.approx(1 - 2 * math.atan(2) / math.pi)
  # A seed missing in either arm drops out of both: same as the complete pairs alone.
  assert stats.paired_p_value(a + [np.nan], b + [0.5]) == stats.paired_p_value(a, b)
  assert math.isnan(stats.paired_p_value([0.8, np.nan], [0.7, 0.6]))
  assert math.isnan(stats.paired_p_value([], []))
  assert stats.paired_p_value([3.0, 4.0, 5.0], [2.0, 3.0, 4.0]) == 0.0  # constant gap, sd 0
  assert stats.paired_p_value([0.8, 0.9], [0.8, 0.9]) == 1.0  # no gap at all
  with pytest.raises(ValueError):
    stats.paired_p_value([1, 2], [1, 2, 3])


def test_holm_hand_computed():
  # m = 4. Sorted: 0.005 (#3), 0.01 (#0), 0.03 (#2), 0.04 (#1); multipliers 4, 3, 2, 1:
  # 0.02, 0.03, 0.06, 0.04; running max: 0.02, 0.03, 0.06, 0.06.
  # Step-down at 0.05: 0.005 <= 0.05/4 = 0.0125 yes; 0.01 <= 0.05/3 = 0.0167 yes;
  # 0.03 <= 0.05/2 = 0.025 no -> stop: #3 and #0 rejected, #2 and #1 not (0.04 <= 0.05
  # alone would pass but step-down has already stopped; its adjusted p is 0.06).
  out = stats.holm([0.01, 0.04, 0.03, 0.005])
  assert [o.p_adjusted for o in out] == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert [o.reject for o in out] == [True, False, False, True]
  assert [o.p for o in out] == [0.01, 0.04, 0.03, 0.005]


def test_holm_mapping_nan_cap_and_ties():
  # NaN is not in the family: m = 2 for {a, c}. a: 2 * 0.02 = 0.04 reject; c: max(0.04, 0.6) = 0.6.
  out = stats.holm({"a": 0.02, "b": float("nan"), "c": 0.6, "d": None})
  assert list(out) == ["a", "b", "c", "d"]
  assert out["a"].p_adjusted == pytest.approx(0.04) and out["a"].reject
  assert out["c"].p_adjusted == pytest.approx(0.6) and not out["c"].reject
  assert math.isnan(out["b"].p_adjusted) and not out["b"].reject
  assert math.isnan(out["d"].p_adjusted) and not out["d"].reject
  # Capped at 1: 3 * 0.5 = 1.5 -> 1.
  assert [o.p_adjusted for o in stats.holm([0.5, 0.6, 0.7])] == [1.0, 1.0, 1.0]
  # Ties get equal adjusted p: 3 * 0.01 = 0.03, max(0.03, 2 * 0.01) = 0.03.
  tied = stats.holm([0.01, 0.01, 0.2])
  assert tied[0].p_adjusted == tied[1].p_adjusted == pytest.approx(0.03)
  assert tied[2].p_adjusted == pytest.approx(0.2)
  # The stricter alpha: 0.005 needs <= 0.01/3 -> no; nothing rejected.
  assert not any(o.reject for o in stats.holm([0.005, 0.2, 0.3], alpha=0.01))
  assert stats.holm([]) == [] and stats.holm({}) == {}
  with pytest.raises(ValueError):
    stats.holm([1.2])


def test_holm_adjusted_agrees_with_reject():
  rng = np.random.default_rng(0)
  for _ in range(200):
    p = rng.uniform(0, 0.1, size=rng.integers(1, 8))
    out = stats.holm(list(p))
    assert all(o.reject == (o.p_adjusted <= 0.05) for o in out)
    order = np.argsort(p)
    adj = np.array([out[i].p_adjusted for i in order])
    assert np.all(np.diff(adj) >= 0) and np.all(adj >= p[order])


@pytest.mark.parametrize("d,n,power_at_n", [
    # G*Power 3.1, t tests, "means: difference between two dependent means (matched pairs)",
    # two tails, alpha 0.05, target power 0.80: total sample size and actual power.
    (0.5, 34, 0.8078), (0.8, 15, 0.8213), (1.0, 10, 0.8031), (0.2, 199, 0.8017), (0.3, 90, 0.8038)])
def test_seeds_needed_published_values(d, n, power_at_n):
  assert power.seeds_needed(d, 1.0) == n
  assert power.paired_power(d, 1.0, n) == pytest.approx(power_at_n, abs=1e-4)
  assert power.paired_power(d, 1.0, n - 1) < 0.8
  # Only the standardized effect matters, and its sign does not.
  assert power.seeds_needed(-d * 0.03, 0.03) == n


def test_power_at_zero_effect_is_alpha_and_monotone():
  assert power.paired_power(0.0, 1.0, 12) == pytest.approx(0.05, abs=1e-12)
  assert power.paired_power(0.0, 1.0, 12, alpha=0.01) == pytest.approx(0.01, abs=1e-12)
  ns = [power.paired_power(0.5, 1.0, n) for n in range(2, 60)]
  assert np.all(np.diff(ns) > 0)
  ds = [power.paired_power(d, 1.0, 8) for d in np.linspace(0, 3, 31)]
  assert np.all(np.diff(ds) > 0) and ds[-1] > 0.999
  assert power.paired_power(0.5, 1.0, 20) == power.paired_power(-0.5, 1.0, 20)
  assert power.paired_power(0.5, 1.0, 20, alpha=0.01) < power.paired_power(0.5, 1.0, 20)
  assert math.isnan(power.paired_power(0.5, 1.0, 1))
  assert math.isnan(power.paired_power(0.5, float("nan"), 5))
  assert power.paired_power(0.1, 0.0, 3) == 1.0 and power.paired_power(0.0, 0.0, 3) == 0.0


def test_min_detectable_difference_inverts_power():
  for n in [2, 3, 5, 10, 34]:
    mdd = power.min_detectable_difference(0.02, n)
    assert power.paired_power(mdd, 0.02, n) == pytest.approx(0.8, abs=1e-9)
  # d = 0.5 gives 0.8078 at n = 34, so the exact 80% effect is a little below 0.5.
  assert 0.49 < power.min_detectable_difference(1.0, 34) < 0.5
  mdds = [power.min_detectable_difference(1.0, n) for n in range(2, 40)]
  assert np.all(np.diff(mdds) < 0)  # more seeds resolve smaller gaps
  assert power.min_detectable_difference(1.0, 10, power=0.9) > power.min_detectable_difference(1.0, 10)
  assert power.min_detectable_difference(3.0, 10) == pytest.approx(3 * power.min_detectable_difference(1.0, 10))
  assert power.min_detectable_difference(0.0, 5) == 0.0
  assert math.isnan(power.min_detectable_difference(1.0, 1))
  with pytest.raises(ValueError):
    power.min_detectable_difference(1.0, 5, power=1.0)


def test_seeds_needed_edge_cases():
  assert power.seeds_needed(0.0, 1.0) is None
  assert power.seeds_needed(float("nan"), 1.0) is None
  assert power.seeds_needed(0.01, 1.0, max_n=100) is None  # needs ~78,000
  assert power.seeds_needed(0.2, 1.0, max_n=199) == 199 and power.seeds_needed(0.2, 1.0, max_n=198) is None
  assert power.seeds_needed(0.1, 0.0) == 2
  assert power.seeds_needed(5.0, 1.0) == 3  # n = 2 (1 df) has only 0.42 power even at d = 5
  ns = [power.seeds_needed(d, 1.0) for d in [0.3, 0.5, 0.8, 1.2, 2.0]]
  assert ns == sorted(ns, reverse=True)


def test_power_summary():
  diffs = [0.01, 0.02, 0.015, 0.005, 0.03, float("nan")]
  s = power.power_summary(diffs)
  d = np.array(diffs[:5])
  assert s["n"] == 5
  assert s["mean"] == pytest.approx(d.mean()) and s["sd"] == pytest.approx(d.std(ddof=1))
  assert s["min_detectable"] == pytest.approx(power.min_detectable_difference(d.std(ddof=1), 5))
  assert s["seeds_needed_for_observed"] == power.seeds_needed(d.mean(), d.std(ddof=1))
  assert s["power_at_observed"] == pytest.approx(power.paired_power(d.mean(), d.std(ddof=1), 5))
  one = power.power_summary([0.01])
  assert one["n"] == 1 and one["mean"] == 0.01 and math.isnan(one["sd"])
  assert math.isnan(one["min_detectable"]) and one["seeds_needed_for_observed"] is None
  assert power.power_summary([])["n"] == 0


def test_power_is_finite_where_scipy_nct_cdf_is_not():
  # At 1 df scipy's nct.cdf(-t_crit, 1, ncp) is nan for ncp ~ 8-30 (d = ncp / sqrt(2));
  # the power must stay finite, below 1 and rising there.
  ps = [power.paired_power(d, 1.0, 2) for d in np.linspace(4, 25, 50)]
  assert np.all(np.isfinite(ps)) and np.all(np.diff(ps) > 0) and ps[-1] < 1.0


BUDGETS = [1000, 1250, 1500, 2000]
OFFSETS = np.array([0.01, -0.02, 0.005, 0.0, 0.03, -0.012])  # per-seed level shifts


def _line(n, a=0.3, b=0.06):
  """Accuracy exactly a + b log N for every seed, plus that seed's offset."""
  return a + b * np.log(np.asarray(n, np.float64))[..., None] + OFFSETS


def test_exchange_rate_recovers_a_known_point_with_zero_width():
  base, arm = _line(BUDGETS), _line(1400.0)
  r = power.real_label_equivalent(BUDGETS, base, arm)
  assert r.n_eq == pytest.approx(1400.0, rel=1e-9)
  assert r.mean_extra == pytest.approx(400.0, rel=1e-9) and r.fraction == pytest.approx(0.4, rel=1e-9)
  # Seeds are resampled jointly for curve and arm, so each replicate keeps the arm on its
  # curve: the per-seed offsets, large against the gap, cancel and the interval has no width.
  assert r.lo == pytest.approx(400.0, abs=1e-6) and r.hi == pytest.approx(400.0, abs=1e-6)
  assert not (r.censored_above or r.censored_below or r.extrapolated or r.monotonized)
  assert r.n_seeds == 6 and r.boot_above == 0.0 and r.boot_below == 0.0
  # On a budget exactly, and at N0 exactly.
  assert power.real_label_equivalent(BUDGETS, base, _line(1500.0)).n_eq == pytest.approx(1500.0, rel=1e-9)
  at_n0 = power.real_label_equivalent(BUDGETS, base, _line(1000.0))
  assert at_n0.mean_extra == pytest.approx(0.0, abs=1e-6) and not at_n0.censored_above


def test_exchange_rate_interval_is_deterministic_and_covers_the_estimate():
  rng = np.random.default_rng(1)
  base = _line(BUDGETS) + rng.normal(0, 0.004, (4, 6))
  arm = _line(1400.0) + rng.normal(0, 0.004, 6)
  r = power.real_label_equivalent(BUDGETS, base, arm, n_boot=500)
  assert r == power.real_label_equivalent(BUDGETS, base, arm, n_boot=500)
  assert r.lo < r.mean_extra < r.hi and r.hi - r.lo > 10
  assert r != power.real_label_equivalent(BUDGETS, base, arm, n_boot=500, seed=7)
  narrow = power.real_label_equivalent(BUDGETS, base, arm, n_boot=500, confidence=0.5)
  assert r.lo < narrow.lo < narrow.hi < r.hi


def test_exchange_rate_censored_above_and_extrapolated_below():
  base = _line(BUDGETS)
  up = power.real_label_equivalent(BUDGETS, base, _line(5000.0))
  assert up.censored_above and up.mean_extra == 1000.0 and up.n_eq == 2000.0
  assert up.boot_above == 1.0 and up.fmt().startswith("> +1000 labels")
  # Below N0: extended along the first segment's slope, exact for a curve linear in log N.
  down = power.real_label_equivalent(BUDGETS, base, _line(500.0))
  assert down.censored_below and down.extrapolated and not down.censored_above
  assert down.n_eq == pytest.approx(500.0, rel=1e-9) and down.mean_extra == pytest.approx(-500.0, rel=1e-9)
  assert down.fraction == pytest.approx(-0.5) and "extrapolated" in down.fmt()
  # A baseline that never rises: the zero-slope limit, worth no labels at all.
  flat = power.real_label_equivalent(BUDGETS, np.full((4, 3), 0.8), [0.79, 0.79, 0.79])
  assert flat.n_eq == 0.0 and flat.mean_extra == -1000.0 and flat.censored_below and not flat.extrapolated


def test_exchange_rate_isotonizes_a_non_monotone_curve():
  # Mean curve 0.70, 0.72, 0.71, 0.75: pool-adjacent-violators merges 0.72, 0.71 -> 0.715.
  base = np.array([[0.70], [0.72], [0.71], [0.75]]) + np.array([[0.0, 0.02]])
  arm = np.array([0.73, 0.75])  # mean 0.74, offsets of the baseline's two seeds
  r = power.real_label_equivalent(BUDGETS, base, arm)
  assert r.monotonized
  # 0.74 lies between 1500 (0.725 after pooling) and 2000 (0.76).
  w = (0.74 - 0.725) / (0.76 - 0.725)
  assert r.n_eq == pytest.approx(math.exp(math.log(1500) + w * math.log(2000 / 1500)), rel=1e-9)
  # 0.72 (mean): between 1000 (0.71) and 1250 (0.725), the pooled level, not the raw 0.73.
  r = power.real_label_equivalent(BUDGETS, base, arm - 0.02)
  assert r.n_eq == pytest.approx(1000 * (1.25 ** ((0.72 - 0.71) / 0.015)), rel=1e-9)
  # On a pooled flat run the first budget reaching the level is taken.
  assert power.real_label_equivalent(BUDGETS, base, arm - 0.015).n_eq == pytest.approx(1250.0)


def test_exchange_rate_missing_seeds_and_validation():
  base, arm = _line(BUDGETS), _line(1400.0)
  holey_base = np.concatenate([base, [[0.5], [np.nan], [0.6], [0.7]]], axis=1)
  r = power.real_label_equivalent(BUDGETS, holey_base, np.append(arm, 0.9))
  assert r == power.real_label_equivalent(BUDGETS, base, arm)  # the incomplete seed drops out
  r = power.real_label_equivalent(BUDGETS, base, np.append(arm[:-1], np.nan))
  assert r.n_seeds == 5
  one = power.real_label_equivalent(BUDGETS, base[:, :1], arm[:1])
  assert one.n_eq == pytest.approx(1400.0) and math.isnan(one.lo) and math.isnan(one.hi)
  none = power.real_label_equivalent(BUDGETS, base, np.full(6, np.nan))
  assert none.n_seeds == 0 and math.isnan(none.mean_extra) and none.fmt() == "n/a"
  with pytest.raises(ValueError):
    power.real_label_equivalent([1000, 1000, 2000], base[:3], arm)
  with pytest.raises(ValueError):
    power.real_label_equivalent(BUDGETS, base, arm[:3])
