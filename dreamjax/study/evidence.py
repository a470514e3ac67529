"""The evidence a verdict reads: finished cells of one budget, their paired intervals,
and the power of every comparison that could not decide."""

import dataclasses
import math
from typing import Any

from dreamjax import power, stats
from dreamjax.configs import arms as arms_lib

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive (CI crosses zero)"


@dataclasses.dataclass
class Verdict:
  claim: str
  text: str
  arms: str
  numbers: str
  verdict: str
  rule: str
  budget: int = 0
  power: str = ""  # what an inconclusive comparison could have detected
  # The intervals the verdict was decided on, by name ("dream_online − baseline (robust,
  # ε = 0.03)": Interval.to_dict()): what a confirmation run is held to (same sign,
  # overlapping intervals).
  effects: dict = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    if not out["effects"]:  # a version-1 verdict (or a missing one): claims.json as it was
      del out["effects"]
    return out


def verdict(claim: str, text: str, rule: str, arms, numbers: str, verdict: str) -> Verdict:
  """A rule's verdict on claim ``claim`` (its ``text``), decided on ``arms``: their names,
  or a phrase that names them."""
  return Verdict(claim, text, arms if isinstance(arms, str) else ", ".join(arms), numbers,
                 verdict, rule)


def missing(claim: str, text: str, rule: str, arms, cells: "Cells") -> Verdict | None:
  """The verdict "missing (why)" of a claim one of whose ``arms`` has no finished cell,
  each such arm with its error; None when all of them have one."""
  gone = cells.missing(*arms)
  if not gone:
    return None
  why = "; ".join(f"{a}: {(cells.records.get(a) or {}).get('error', 'not run')}"[:160]
                  for a in gone)
  return verdict(claim, text, rule, arms, "", f"missing ({why})")


def _pp(iv: stats.Interval) -> str:
  """An accuracy-difference interval in percentage points."""
  if iv.n == 0 or not math.isfinite(iv.mean):
    return "n/a"
  if not math.isfinite(iv.hi):
    return f"{iv.mean * 100:+.1f} pp (1 seed)"
  return f"{iv.mean * 100:+.1f} pp [{iv.lo * 100:+.1f}, {iv.hi * 100:+.1f}]"


class Cells:
  """Looks up finished cells of one label budget by arm name."""

  def __init__(self, records: dict[str, dict[str, Any]], quality_gate: float = 0.0,
               alpha: float = 0.05):
    self.records = records
    self.quality_gate = quality_gate
    self.alpha = alpha
    self.notes: list[str] = []  # power of the inconclusive comparisons read so far
    self.deciding: dict[str, dict] = {}  # the deciding intervals read so far, by name

  def ok(self, arm: str) -> dict[str, Any] | None:
    r = self.records.get(arm)
    return r if r and r.get("status") == "ok" else None

  def values(self, arm: str, metric: str = "test_accuracy", eps: str | None = None):
    r = self.ok(arm)
    v = r.get(metric) if r else None
    return v.get(eps) if isinstance(v, dict) and eps is not None else v

  def diff(self, a: str, b: str, metric: str = "test_accuracy", eps: str | None = None,
           decides: bool = False) -> stats.Interval:
    """Paired interval of a − b; a deciding comparison whose CI crosses zero
    also gets a power note."""
    va, vb = self.values(a, metric, eps), self.values(b, metric, eps)
    if va is None or vb is None or isinstance(va, dict) or isinstance(vb, dict):
      return stats.Interval(float("nan"), float("nan"), float("nan"), 0)
    iv = stats.paired_difference(va, vb)
    if decides:
      what = f"{a} − {b}" + (f" (robust, ε = {eps})" if eps else "")
      self.deciding[what] = iv.to_dict()
      if stats.direction(iv) == "crosses" and iv.n >= 2:
        self._note(what, [x - y for x, y in zip(va, vb)])
    return iv

  def _note(self, what: str, diffs) -> None:
    s = power.power_summary(diffs, alpha=self.alpha)
    if not math.isfinite(s["min_detectable"]):
      return
    need = s["seeds_needed_for_observed"]
    self.notes.append(f"{what}: the smallest difference {s['n']} seeds detect with 80% power is"
                      f" {s['min_detectable'] * 100:.1f} pp; the observed"
                      f" {s['mean'] * 100:+.1f} pp would need "
                      + (f"{need} seeds" if need else "more seeds than is sensible"))

  def missing(self, *arms: str) -> list[str]:
    return [a for a in arms if not self.ok(a)]

  def under_trained(self, *arms: str) -> list[str]:
    """Generator arms whose samples' label preservation is below the quality gate: the
    cell's mean, and each of its pool generators (``"vae_pool generator 1 55%"``)."""
    out = []
    for a in arms:
      r = self.ok(a)
      if not r or arms_lib.get(a).group != "generator":
        continue
      lp = r.get("label_preservation")
      if lp is not None and lp < self.quality_gate:
        out.append(f"{a} {lp * 100:.0f}%")
      for g in pool_generators(r):
        if g.get("label_preservation") is not None and g["label_preservation"] < self.quality_gate:
          out.append(f"{a} generator {g['index']} {g['label_preservation'] * 100:.0f}%")
    return out


def pool_generators(record) -> list[dict[str, Any]]:
  """Each pool generator's row of a cell (index, seeds, quality), or [] for a cell with
  one generator, or made before there were several."""
  gens = ((record or {}).get("pool_generators") or {}).get("generators") or []
  return gens if len(gens) > 1 else []


def robust_eps(cells: Cells) -> str | None:
  """The ε C2 is decided at: the largest where the baseline keeps 20-60% robust accuracy
  (else the one closest to 40%)."""
  base = cells.values("baseline", "robust_accuracy")
  if not isinstance(base, dict) or not base:
    return None
  means = {e: sum(v) / len(v) for e, v in base.items() if v}
  inside = [e for e, m in means.items() if 0.2 <= m <= 0.6]
  if inside:
    return max(inside, key=float)
  return min(means, key=lambda e: abs(means[e] - 0.4))


def _num(x, pct: bool = False) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  return f"{x * 100:.1f}%" if pct else f"{x:.2f}"


def _gated(verdict: str, weak: list[str]) -> str:
  return f"inconclusive (under-trained generator: {', '.join(weak)})" if weak else verdict


def _cost(cells: Cells, arm: str) -> float:
  """Counted work of an arm: images through a gradient step, per seed (never seconds,
  so that the verdict is a function of the recorded results alone)."""
  cost = cells.ok(arm).get("cost") or {}
  return float(cost.get("gen_image_steps", 0)) + float(cost.get("train_image_steps", 0))


def _quality_text(cells: Cells, *arms: str) -> str:
  parts = []
  for a in arms:
    r = cells.ok(a) or {}
    cas = r.get("cas")
    gens = pool_generators(r)
    parts.append(f"{a} label preservation {_num(r.get('label_preservation'), pct=True)},"
                 f" Fréchet {_num(r.get('frechet'))}, CAS"
                 f" {_num(sum(cas) / len(cas) if cas else None, pct=True)}"
                 + (f" (mean of {len(gens)} pool generators)" if gens else ""))
  return "; quality: " + "; ".join(parts)
