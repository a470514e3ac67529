"""Power of the paired t-test over seeds, and the real-label exchange rate.

Seeds are the unit of replication and arms are paired with the baseline by
seed, so the test behind every arm-vs-baseline comparison is the two-sided
paired t-test on the per-seed differences (`stats.paired_p_value`). This module
says how many seeds such a test needs, and converts an arm's accuracy into the
number of real labels the baseline needs to match it.
"""

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
from scipy import optimize
from scipy import stats as sp_stats


def _check_levels(alpha: float, power: float = 0.5) -> None:
  if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
    raise ValueError(f"alpha and power must lie in (0, 1), got {alpha}, {power}")


def paired_power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
  """Exact power of the two-sided paired t-test at level alpha.

  Method: with d = delta / sd, T = mean / (s / sqrt(n)) is noncentral t with
  n - 1 degrees of freedom and noncentrality d * sqrt(n); power =
  P(T > t_crit) + P(T < -t_crit), t_crit = t_{1-alpha/2, n-1} (the values
  G*Power reports for "matched pairs").

  delta: the true mean of the per-seed differences; sd: their standard
  deviation; n: the number of seeds. nan when n < 2 or an input is nan. sd = 0
  follows `stats.paired_p_value`: power 1 when delta != 0, else 0.
  """
  _check_levels(alpha)
  if n < 2 or not (math.isfinite(delta) and math.isfinite(sd)) or sd < 0:
    return float("nan")
  if sd == 0.0:
    return 1.0 if delta != 0.0 else 0.0
  df, ncp = n - 1, abs(delta) / sd * math.sqrt(n)  # the test is symmetric in delta's sign
  t_crit = sp_stats.t.ppf(1.0 - alpha / 2.0, df)
  upper = sp_stats.nct.sf(t_crit, df, ncp)
  # P(T < -t_crit; ncp) written as P(T > t_crit; -ncp): scipy's nct.cdf returns nan
  # deep in the lower tail at 1 df (ncp ~ 8-30), its sf with -ncp stays finite.
  lower = sp_stats.nct.sf(t_crit, df, -ncp)
  return float(np.clip(upper + lower, 0.0, 1.0))  # clip, not min(): keeps a nan visible


def min_detectable_difference(sd: float, n: int, alpha: float = 0.05,
                              power: float = 0.8) -> float:
  """Smallest |mean difference| the paired t-test detects with the given power.

  Method: solves paired_power(delta, sd, n, alpha) = power for delta > 0 with
  brentq (power rises with |delta|), in units of sd, then rescales. nan when
  n < 2 or sd is nan; 0 when sd = 0 (any gap is then certain) or when
  power <= alpha (delta = 0 already reaches it).
  """
  _check_levels(alpha, power)
  if n < 2 or not math.isfinite(sd) or sd < 0:
    return float("nan")
  if sd == 0.0 or power <= alpha:
    return 0.0
  f = lambda d: paired_power(d, 1.0, n, alpha) - power
  hi = 1.0
  while f(hi) < 0:  # power -> 1 as d grows, so this ends (80% needs d = 11.5 at n = 2)
    hi *= 2.0
  return float(sd * optimize.brentq(f, 0.0, hi, xtol=1e-12, rtol=1e-12))


def seeds_needed(delta: float, sd: float, alpha: float = 0.05, power: float = 0.8,
                 max_n: int = 10_000) -> Optional[int]:
  """Smallest number of seeds n >= 2 at which paired_power(delta, sd, n) >= power.

  Method: power rises with n, so a bisection over n in [2, max_n] on the exact
  noncentral-t power. Symmetric in the sign of delta. None when delta is 0 or
  nan, sd is nan, or max_n seeds do not reach the power; 2 when sd = 0.
  """
  _check_levels(alpha, power)
  if not (math.isfinite(delta) and math.isfinite(sd)) or delta == 0.0 or sd < 0:
    return None
  reaches = lambda n: paired_power(abs(delta), sd, n, alpha) >= power
  if reaches(2):
    return 2
  if max_n < 2 or not reaches(max_n):
    return None
  lo, hi = 2, max_n  # invariant: not reaches(lo), reaches(hi)
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
  return hi


def power_summary(diffs: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> dict:
  """What the seeds of one paired comparison can and cannot resolve.

  diffs: per-seed paired differences (arm - baseline); non-finite ones (a seed
  missing in either arm) are dropped. Returns n (finite seeds), mean, sd
  (ddof=1), min_detectable (the |difference| detected with `power` at this sd
  and n), seeds_needed_for_observed (seeds to detect a true difference equal to
  the observed mean at this sd; None if unreachable), power_at_observed (power
  at n if the true difference were the observed mean: descriptive only, since
  post-hoc power is a function of the p-value and adds no evidence). With
  n < 2 the sd-based entries are nan / None.
  """
  d = np.asarray(diffs, np.float64).ravel()
  d = d[np.isfinite(d)]
  n = len(d)
  mean = float(d.mean()) if n else float("nan")
  sd = float(d.std(ddof=1)) if n >= 2 else float("nan")
  return {
      "n": n, "mean": mean, "sd": sd,
      "min_detectable": min_detectable_difference(sd, n, alpha, power),
      "seeds_needed_for_observed": seeds_needed(mean, sd, alpha, power),
      "power_at_observed": paired_power(mean, sd, n, alpha),
  }
