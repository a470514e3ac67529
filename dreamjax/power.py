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


def _isotonic(y: np.ndarray) -> np.ndarray:
  """Least-squares nondecreasing fit, equal weights (pool adjacent violators).

  Returns y itself, bit for bit, when it is already nondecreasing.
  """
  blocks = []  # [mean, count] of pooled runs
  for v in y:
    blocks.append([float(v), 1])
    while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
      (m2, c2), (m1, c1) = blocks.pop(), blocks.pop()
      blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
  return np.repeat([b[0] for b in blocks], [b[1] for b in blocks])


def _invert(log_n: np.ndarray, y: np.ndarray, target: float) -> "tuple[float, str]":
  """log N where the nondecreasing curve (log_n, y) first reaches target.

  Returns (log N, where) with where in {'in', 'below', 'above'}. Above the last
  budget: (log N_max, 'above'), a lower bound. Below the first: the line through
  the first point with the slope of the chord to the first higher point (the
  first segment's slope once flat runs are merged), extended down; a curve that
  never rises gives -inf (the zero-slope limit: N_eq -> 0).
  """
  if target > y[-1]:
    return float(log_n[-1]), "above"
  j = int(np.argmax(y >= target))
  if j > 0:  # y[j-1] < target <= y[j], so the segment rises strictly
    w = (target - y[j - 1]) / (y[j] - y[j - 1])
    return float(log_n[j - 1] + w * (log_n[j] - log_n[j - 1])), "in"
  if target == y[0]:
    return float(log_n[0]), "in"
  higher = np.flatnonzero(y > y[0])
  if not len(higher):
    return -math.inf, "below"
  k = higher[0]
  slope = (y[k] - y[0]) / (log_n[k] - log_n[0])
  return float(log_n[0] + (target - y[0]) / slope), "below"


@dataclasses.dataclass(frozen=True)
class LabelEquivalent:
  """Extra real labels an arm at N0 labels is worth (see `real_label_equivalent`)."""
  mean_extra: float       # N_eq - N0 at the seed-mean curve and arm (a bound if censored_above)
  lo: float               # percentile-bootstrap interval of N_eq - N0 (nan with < 2 seeds)
  hi: float
  n_eq: float             # N_eq; N_max (a lower bound) if censored_above
  n0: float
  n_max: float
  censored_above: bool    # arm mean above the baseline mean at N_max: value is "> N_max - N0"
  censored_below: bool    # arm mean below the baseline mean at N0: value is negative
  extrapolated: bool      # n_eq read off the first segment's slope extended below N0
  monotonized: bool       # the mean baseline curve was not monotone and was isotonized
  n_seeds: int            # complete seeds used
  boot_above: float       # share of bootstrap replicates censored above (counted at N_max - N0)
  boot_below: float       # share of bootstrap replicates below N0 (extrapolated)
  confidence: float

  @property
  def fraction(self) -> float:
    return self.mean_extra / self.n0

  @property
  def fraction_lo(self) -> float:
    return self.lo / self.n0

  @property
  def fraction_hi(self) -> float:
    return self.hi / self.n0

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def fmt(self) -> str:
    if not math.isfinite(self.mean_extra):
      return "n/a"
    if self.censored_above:
      return f"> {self.mean_extra:+.0f} labels (> {self.fraction:+.0%} of N0)"
    s = f"{self.mean_extra:+.0f} labels ({self.fraction:+.0%} of N0)"
    if math.isfinite(self.lo):
      hi = ">= " if self.boot_above > (1 - self.confidence) / 2 else ""
      s += f", {self.confidence:.0%} CI [{self.lo:+.0f}, {hi}{self.hi:+.0f}]"
    return s + (" (extrapolated below N0)" if self.extrapolated else "")


def real_label_equivalent(budgets: Sequence[float], baseline_acc, arm_acc, n_boot: int = 2000,
                          confidence: float = 0.95, seed: int = 0) -> LabelEquivalent:
  """How many real labels an arm trained at N0 labels (+ generated data) is worth.

  Method: average the baseline accuracy over seeds at each budget; if that
  curve is not nondecreasing, replace it by its least-squares isotonic fit
  (pool adjacent violators; flagged `monotonized`). Interpolate it linearly in
  log N and read off N_eq, the first N at which it reaches the arm's mean
  accuracy; extra labels = N_eq - N0 (also as a fraction of N0).
  - Arm above the curve at N_max: censored, reported as the lower bound
    N_max - N0 with `censored_above`.
  - Arm below the curve at N0: extrapolated (our choice over a bare "< 0"),
    along the first segment's slope in log N (the chord from N0 to the first
    budget with higher accuracy), so N_eq in (0, N0) and extra in (-N0, 0),
    flagged `censored_below` and `extrapolated`; a curve that never rises gives
    the zero-slope limit N_eq = 0, extra = -N0.
  Interval: percentile bootstrap over seeds, resampling seed indices with
  replacement jointly for the baseline curve and the arm (they are paired by
  seed), rerunning the whole estimator (isotonic fit included) per replicate;
  replicates censored above count at N_max - N0, so an upper end there is
  itself a lower bound (`boot_above` says how often). numpy Generator(seed):
  deterministic.

  Args:
    budgets: increasing label budgets, budgets[0] = N0 (the arm's budget).
    baseline_acc: [len(budgets), seeds] per-seed baseline accuracy.
    arm_acc: [seeds] per-seed arm accuracy at N0, seeds paired with the baseline.
  Missing seeds: a seed is used only when the arm and every budget of the
  baseline are finite for it (complete cases, to keep the pairing); with no
  complete seed everything is nan, with one the interval is nan.
  """
  log_n = np.log(np.asarray(budgets, np.float64))
  base = np.asarray(baseline_acc, np.float64)
  arm = np.asarray(arm_acc, np.float64)
  if len(log_n) < 2 or not np.all(np.isfinite(log_n)) or np.any(np.diff(log_n) <= 0):
    raise ValueError(f"budgets must be >= 2 positive, strictly increasing values: {budgets}")
  if base.ndim != 2 or base.shape[0] != len(log_n) or arm.shape != (base.shape[1],):
    raise ValueError(f"need baseline [budgets, seeds] and arm [seeds]: {base.shape}, {arm.shape}")
  keep = np.isfinite(arm) & np.all(np.isfinite(base), axis=0)
  base, arm = base[:, keep], arm[keep]
  n0, n_max, s = float(budgets[0]), float(budgets[-1]), int(keep.sum())
  nan = float("nan")
  if s == 0:
    return LabelEquivalent(nan, nan, nan, nan, n0, n_max, False, False, False, False, 0, nan, nan,
                           confidence)

  def n_eq(curve, target):
    log_eq, where = _invert(log_n, _isotonic(curve), target)
    return (n_max if where == "above" else math.exp(log_eq)), where  # the bound exactly

  mean_curve = base.mean(axis=1)
  point, where = n_eq(mean_curve, float(arm.mean()))
  lo = hi = above = below = nan
  if s >= 2:
    idx = np.random.default_rng(seed).integers(0, s, size=(n_boot, s))
    curves, arms = base[:, idx].mean(axis=2), arm[idx].mean(axis=1)  # [K, B], [B]
    reps = [n_eq(curves[:, b], arms[b]) for b in range(n_boot)]
    values = np.array([v for v, _ in reps]) - n0
    lo, hi = (float(q) for q in np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2]))
    above = float(np.mean([w == "above" for _, w in reps]))
    below = float(np.mean([w == "below" for _, w in reps]))
  return LabelEquivalent(
      mean_extra=point - n0, lo=lo, hi=hi, n_eq=point, n0=n0, n_max=n_max,
      censored_above=where == "above", censored_below=where == "below",
      extrapolated=where == "below" and point > 0,
      monotonized=bool(np.any(np.diff(mean_curve) < 0)), n_seeds=s,
      boot_above=above, boot_below=below, confidence=confidence)
