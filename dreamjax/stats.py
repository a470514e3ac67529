"""Confidence intervals over seeds and paired differences.

Seeds are the unit of replication: each seed draws its own labeled subset and
initial weights, and every arm trains from the same (subset, weights) for a
seed, so arm-vs-baseline differences are paired by seed.
"""

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sp_stats


@dataclasses.dataclass(frozen=True)
class Interval:
  mean: float
  lo: float
  hi: float
  n: int

  @property
  def half_width(self) -> float:
    return (self.hi - self.lo) / 2

  def excludes_zero(self) -> bool:
    return self.lo > 0 or self.hi < 0

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
    if self.n < 2 or not math.isfinite(self.hi):
      return f"{self.mean * scale:.{digits}f}"
    return f"{self.mean * scale:.{digits}f} ± {self.half_width * scale:.{digits}f}"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
  """Student-t interval for the mean; infinite width with one value."""
  x = np.asarray(values, np.float64)
  x = x[np.isfinite(x)]
  n = len(x)
  if n == 0:
    return Interval(float("nan"), float("nan"), float("nan"), 0)
  mean = float(x.mean())
  if n == 1:
    return Interval(mean, -math.inf, math.inf, 1)
  sem = float(x.std(ddof=1)) / math.sqrt(n)
  t = float(sp_stats.t.ppf(0.5 + confidence / 2, df=n - 1))
  return Interval(mean, mean - t * sem, mean + t * sem, n)


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = 0.95) -> Interval:
  """Interval for mean(a - b) over seeds paired by position."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired values need equal seeds: {a.shape} vs {b.shape}")
  return t_interval(a - b, confidence)


def unpaired_difference(a: Sequence[float], b: Sequence[float],
                        confidence: float = 0.95) -> Interval:
  """Interval for mean(a) - mean(b) over independent seeds (Welch: unequal variances,
  Welch–Satterthwaite degrees of freedom); for runs whose seeds are different draws,
  such as a confirmation run on fresh seeds against the exploratory one."""
  x, y = (np.asarray(v, np.float64) for v in (a, b))
  x, y = x[np.isfinite(x)], y[np.isfinite(y)]
  if len(x) == 0 or len(y) == 0:
    return Interval(float("nan"), float("nan"), float("nan"), 0)
  mean = float(x.mean() - y.mean())
  n = min(len(x), len(y))
  if len(x) < 2 or len(y) < 2:
    return Interval(mean, -math.inf, math.inf, n)
  vx, vy = float(x.var(ddof=1)) / len(x), float(y.var(ddof=1)) / len(y)
  se = math.sqrt(vx + vy)
  if se == 0:
    return Interval(mean, mean, mean, n)
  df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
  t = float(sp_stats.t.ppf(0.5 + confidence / 2, df=df))
  return Interval(mean, mean - t * se, mean + t * se, n)


def direction(interval: Interval, margin: float = 0.0) -> str:
  """'above' / 'below' when the interval clears ±margin, else 'crosses'."""
  if interval.n == 0 or not math.isfinite(interval.mean):
    return "missing"
  if interval.lo > margin:
    return "above"
  if interval.hi < -margin:
    return "below"
  return "crosses"


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float:
  """Two-sided paired t-test p-value for mean(a - b) = 0, seeds paired by position.

  Method: t = mean(d) / (sd(d) / sqrt(n)) on the differences d = a - b of the n
  pairs where both values are finite (a seed missing in either arm drops out of
  both, keeping the pairing), p = 2 * P(T_{n-1} > |t|).

  Returns nan with fewer than 2 finite pairs. When every difference is equal
  (sd = 0, where t is undefined) returns 0.0 if that common difference is
  nonzero and 1.0 if it is zero: an exactly repeated gap is as strong evidence
  as a t-test can see, and no gap at all is none.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired values need equal seeds: {a.shape} vs {b.shape}")
  d = (a - b).ravel()
  d = d[np.isfinite(d)]
  n = len(d)
  if n < 2:
    return float("nan")
  mean, sd = float(d.mean()), float(d.std(ddof=1))
  if sd == 0.0:
    return 0.0 if mean != 0.0 else 1.0
  t = mean / (sd / math.sqrt(n))
  return float(min(1.0, 2.0 * sp_stats.t.sf(abs(t), df=n - 1)))


@dataclasses.dataclass(frozen=True)
class Adjusted:
  """One hypothesis after a multiple-testing correction."""
  p: float           # the raw p-value (nan when missing)
  p_adjusted: float  # nan when missing
  reject: bool


def holm(p_values: "Mapping[str, float] | Sequence[float]",
         alpha: float = 0.05) -> "dict[str, Adjusted] | list[Adjusted]":
  """Holm-Bonferroni step-down correction over a family of hypotheses.

  Method: with the m finite p-values sorted p_(1) <= ... <= p_(m), reject
  H_(1), ..., H_(k-1) where k is the first index with p_(k) > alpha / (m-k+1)
  (all m when there is none); the adjusted p-value is
  min(1, max_{j<=i} (m-j+1) p_(j)), monotone in p, so H_(i) is rejected exactly
  when its adjusted p-value is <= alpha (up to float rounding; `reject` follows
  the step-down comparison). Ties get equal adjusted p-values.

  NaN (or None) p-values are missing: they are not counted in m, get a nan
  adjusted p-value and are never rejected.

  Returns, in the input's order, one `Adjusted` per hypothesis: a dict keyed
  like the input for a mapping, a list for a sequence.
  """
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")
  keys = list(p_values) if isinstance(p_values, Mapping) else None
  raw = [p_values[k] for k in keys] if keys is not None else list(p_values)
  p = np.array([np.nan if v is None else v for v in raw], np.float64)
  present = np.flatnonzero(np.isfinite(p))
  if np.any((p[present] < 0) | (p[present] > 1)):
    raise ValueError(f"p-values must lie in [0, 1]: {raw}")
  m = len(present)
  order = present[np.argsort(p[present], kind="stable")]
  adjusted = np.full(len(p), np.nan)
  reject = np.zeros(len(p), bool)
  running, stopped = 0.0, False
  for i, j in enumerate(order):
    running = max(running, (m - i) * p[j])  # monotone: never below an earlier step
    adjusted[j] = min(1.0, running)
    stopped = stopped or p[j] > alpha / (m - i)  # step-down: the first failure stops it
    reject[j] = not stopped
  out = [Adjusted(float(p[i]), float(adjusted[i]), bool(reject[i])) for i in range(len(p))]
  return dict(zip(keys, out)) if keys is not None else out
