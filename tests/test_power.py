"""Paired tests, Holm, power and the real-label exchange rate against hand/published values."""

import math

import numpy as np
import pytest
from scipy import stats as sp_stats

from dreamjax.study import stats


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
