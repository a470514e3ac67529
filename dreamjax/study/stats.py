"""Confidence intervals over seeds and paired differences.

Seeds are the unit of replication: each seed draws its own labeled subset and
initial weights, and every arm trains from the same (subset, weights) for a
seed, so arm-vs-baseline differences are paired by seed.
"""

import dataclasses
import math
from typing import Sequence

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


def direction(interval: Interval, margin: float = 0.0) -> str:
  """'above' / 'below' when the interval clears ±margin, else 'crosses'."""
  if interval.n == 0 or not math.isfinite(interval.mean):
    return "missing"
  if interval.lo > margin:
    return "above"
  if interval.hi < -margin:
    return "below"
  return "crosses"
