"""Verdict rules: each claim of the seed answer against the measured cells.

Every rule is stated in :data:`RULES` (and printed in REPORT.md) and decided
from 95% t-intervals over seeds. Accuracy differences are paired by seed.
``margin`` (default one accuracy point) is the smallest change the study calls
a real gain or loss: equivalence claims ("adds nothing", "acts like noise")
are supported only when the whole interval lies inside ±margin.
"""

import dataclasses
import math
from typing import Any, Callable

from dreamjax.study import arms as arms_lib
from dreamjax import stats

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive (CI crosses zero)"

def generator_arms() -> tuple[str, ...]:
  """Every arm C5 compares classical augmentation with (the registry says which)."""
  return tuple(a for a in arms_lib.claimed_by("C5") if a != "classical")

CLAIMS = {
    "C1": "Strong Deep Dream output leaves the input distribution and is a poor augmentation",
    "C2": "Subtle, label-preserving dreams act like noise augmentation and may help against"
          " adversarial inputs",
    "C3": "Making adversarial inputs is almost the same process as Deep Dream",
    "C4": "A VAE/GAN trained on the same small set does not add information",
    "C5": "Simple label-preserving transforms are usually the better choice",
    "C6": "A generator helps when it is trained on far more unlabeled data",
    "C7": "Transfer learning, or reusing an autoencoder's first layers, is easier",
}

RULES = {
    "C1": "supported if the Fréchet distance of dream_strong's images to real test images is"
          " more than twice that of the real labeled images (it left the distribution) AND the"
          " paired accuracy change dream_strong − baseline has its CI below zero; not supported"
          " if that CI is above zero or the images stayed near the data; else inconclusive.",
    "C2": "two parts, both needed for supported: (a) clean accuracy of dream_subtle − noise"
          " has its CI inside ±margin (acts like noise), (b) PGD robust accuracy of"
          " dream_subtle − baseline has its CI above zero (helps against adversarial inputs)."
          " Not supported if (a)'s CI lies outside ±margin or (b)'s CI is below zero; else"
          " inconclusive.",
    "C3": "supported if the mean cosine between the class-logit dream direction and the"
          " adversarial (loss-ascent) direction exceeds 0.5 and its CI lies above the CI of the"
          " layer-objective dream's cosine; not supported if its CI lies below 0.5 or overlaps"
          " nothing above the contrast; else inconclusive.",
    "C4": "supported if, for both vae_small and gan_small, the paired accuracy change vs"
          " baseline has its CI below +margin (no real gain); not supported if either CI is"
          " above zero (a real gain); else inconclusive.",
    "C5": "supported if no generator arm beats classical (no paired classical − arm CI below"
          " zero) and classical is better (CI above zero) than at least half of them; not"
          " supported if any generator arm beats classical; else inconclusive.",
    "C6": "supported if vae_pool − vae_small and gan_pool − gan_small both have CIs above"
          " zero; not supported if both are below zero, or neither is above and both pool"
          " arms' CIs vs baseline are below +margin; else inconclusive.",
    "C7": "supported if the better of ae_pretrain / pretext_transfer is at least as accurate"
          " as the best of vae_pool / gan_pool (paired CI above −margin) and costs less"
          " (image-steps of generation/pretraining + training, counted, per seed); not"
          " supported if its CI is below −margin or it costs more; else inconclusive.",
}


@dataclasses.dataclass
class Verdict:
  claim: str
  text: str
  arms: str
  numbers: str
  verdict: str
  rule: str

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _pp(iv: stats.Interval) -> str:
  """An accuracy-difference interval in percentage points."""
  if iv.n == 0 or not math.isfinite(iv.mean):
    return "n/a"
  if not math.isfinite(iv.hi):
    return f"{iv.mean * 100:+.1f} pp (1 seed)"
  return f"{iv.mean * 100:+.1f} pp [{iv.lo * 100:+.1f}, {iv.hi * 100:+.1f}]"


class Cells:
  """Looks up finished cells of one label budget by arm name."""

  def __init__(self, records: dict[str, dict[str, Any]]):
    self.records = records

  def ok(self, arm: str) -> dict[str, Any] | None:
    r = self.records.get(arm)
    return r if r and r.get("status") == "ok" else None

  def diff(self, a: str, b: str, metric: str = "test_accuracy") -> stats.Interval:
    ra, rb = self.ok(a), self.ok(b)
    if not ra or not rb or ra.get(metric) is None or rb.get(metric) is None:
      return stats.Interval(float("nan"), float("nan"), float("nan"), 0)
    return stats.paired_difference(ra[metric], rb[metric])

  def missing(self, *arms: str) -> list[str]:
    return [a for a in arms if not self.ok(a)]


def _missing_verdict(cid: str, arms: tuple[str, ...], cells: Cells) -> Verdict | None:
  gone = cells.missing(*arms)
  if not gone:
    return None
  why = "; ".join(f"{a}: {(cells.records.get(a) or {}).get('error', 'not run')}"[:160]
                  for a in gone)
  return Verdict(cid, CLAIMS[cid], ", ".join(arms), "", f"missing ({why})", RULES[cid])


def c1(cells: Cells, margin: float) -> Verdict:
  arms = ("baseline", "dream_strong", "classical")
  if v := _missing_verdict("C1", arms, cells):
    return v
  d = cells.diff("dream_strong", "baseline")
  fd_strong = cells.ok("dream_strong").get("frechet")
  fd_real = cells.ok("baseline").get("frechet")
  fd_classical = cells.ok("classical").get("frechet")
  left = fd_strong is not None and fd_real is not None and fd_strong > 2 * fd_real
  if left and stats.direction(d) == "below":
    verdict = SUPPORTED
  elif stats.direction(d) == "above" or (fd_strong is not None and not left):
    verdict = NOT_SUPPORTED
  else:
    verdict = INCONCLUSIVE
  lp = cells.ok("dream_strong").get("label_preservation")
  numbers = (f"Δacc(dream_strong − baseline) {_pp(d)}; Fréchet: dream_strong {_num(fd_strong)},"
             f" classical {_num(fd_classical)}, real labeled {_num(fd_real)};"
             f" label preservation {_num(lp, pct=True)}")
  return Verdict("C1", CLAIMS["C1"], ", ".join(arms), numbers, verdict, RULES["C1"])


def c2(cells: Cells, margin: float) -> Verdict:
  arms = ("dream_subtle", "noise", "pgd_train", "baseline")
  if v := _missing_verdict("C2", arms, cells):
    return v
  like_noise = cells.diff("dream_subtle", "noise")
  robust = cells.diff("dream_subtle", "baseline", "robust_accuracy")
  robust_pgd = cells.diff("pgd_train", "baseline", "robust_accuracy")
  a_in = like_noise.n > 0 and -margin < like_noise.lo and like_noise.hi < margin
  a_out = like_noise.lo > margin or like_noise.hi < -margin
  b_dir = stats.direction(robust)
  if a_in and b_dir == "above":
    verdict = SUPPORTED
  elif a_out or b_dir == "below":
    verdict = NOT_SUPPORTED
  else:
    verdict = INCONCLUSIVE
  numbers = (f"Δclean(dream_subtle − noise) {_pp(like_noise)}; Δrobust(dream_subtle − baseline)"
             f" {_pp(robust)}; Δrobust(pgd_train − baseline) {_pp(robust_pgd)}")
  return Verdict("C2", CLAIMS["C2"], ", ".join(arms), numbers, verdict, RULES["C2"])


def c3(alignment: dict[str, Any] | None) -> Verdict:
  arms = "dream_logit vs pgd (same model, same images); layer-objective dream as contrast"
  if not alignment or alignment.get("status") != "ok":
    err = (alignment or {}).get("error", "not run")
    return Verdict("C3", CLAIMS["C3"], arms, "", f"missing ({err})", RULES["C3"])
  logit = stats.Interval(**alignment["logit"])
  layer = stats.Interval(**alignment["layer"])
  if logit.mean > 0.5 and logit.lo > layer.hi:
    verdict = SUPPORTED
  elif logit.hi < 0.5 or logit.hi < layer.lo:
    verdict = NOT_SUPPORTED
  else:
    verdict = INCONCLUSIVE
  numbers = (f"cosine(logit dream, adversarial) {logit.mean:.2f} [{logit.lo:.2f}, {logit.hi:.2f}];"
             f" cosine(layer dream, adversarial) {layer.mean:.2f} [{layer.lo:.2f}, {layer.hi:.2f}]")
  return Verdict("C3", CLAIMS["C3"], arms, numbers, verdict, RULES["C3"])


def c4(cells: Cells, margin: float) -> Verdict:
  arms = ("vae_small", "gan_small", "baseline", "classical")
  if v := _missing_verdict("C4", arms[:3], cells):
    return v
  dv, dg = cells.diff("vae_small", "baseline"), cells.diff("gan_small", "baseline")
  if dv.hi < margin and dg.hi < margin:
    verdict = SUPPORTED
  elif stats.direction(dv) == "above" or stats.direction(dg) == "above":
    verdict = NOT_SUPPORTED
  else:
    verdict = INCONCLUSIVE
  fds = ", ".join(f"{a} {_num((cells.ok(a) or {}).get('frechet'))}" for a in arms[:2])
  numbers = (f"Δacc(vae_small − baseline) {_pp(dv)}; Δacc(gan_small − baseline) {_pp(dg)};"
             f" Δacc(classical − baseline) {_pp(cells.diff('classical', 'baseline'))};"
             f" Fréchet: {fds}")
  return Verdict("C4", CLAIMS["C4"], ", ".join(arms), numbers, verdict, RULES["C4"])


def c5(cells: Cells, margin: float) -> Verdict:
  present = [a for a in generator_arms() if cells.ok(a)]
  if not cells.ok("classical") or not present:
    return Verdict("C5", CLAIMS["C5"], "classical vs generator arms", "",
                   "missing (classical or every generator arm)", RULES["C5"])
  diffs = {a: cells.diff("classical", a) for a in present}
  beaten = [a for a, d in diffs.items() if stats.direction(d) == "below"]
  wins = [a for a, d in diffs.items() if stats.direction(d) == "above"]
  if beaten:
    verdict = NOT_SUPPORTED
  elif len(wins) * 2 >= len(diffs):
    verdict = SUPPORTED
  else:
    verdict = INCONCLUSIVE
  numbers = (f"classical better than {len(wins)}/{len(diffs)} generator arms (CI above zero),"
             f" beaten by {len(beaten)}" + (f" ({', '.join(beaten)})" if beaten else "")
             + "; " + "; ".join(f"vs {a} {_pp(d)}" for a, d in diffs.items()))
  return Verdict("C5", CLAIMS["C5"], "classical vs " + ", ".join(present), numbers, verdict,
                 RULES["C5"])


def c6(cells: Cells, margin: float) -> Verdict:
  arms = ("vae_pool", "gan_pool", "vae_small", "gan_small")
  if v := _missing_verdict("C6", arms, cells):
    return v
  dv, dg = cells.diff("vae_pool", "vae_small"), cells.diff("gan_pool", "gan_small")
  bv, bg = cells.diff("vae_pool", "baseline"), cells.diff("gan_pool", "baseline")
  dirs = {stats.direction(dv), stats.direction(dg)}
  if dirs == {"above"}:
    verdict = SUPPORTED
  elif dirs == {"below"} or ("above" not in dirs and bv.hi < margin and bg.hi < margin):
    verdict = NOT_SUPPORTED
  else:
    verdict = INCONCLUSIVE
  numbers = (f"Δacc(vae_pool − vae_small) {_pp(dv)}; Δacc(gan_pool − gan_small) {_pp(dg)};"
             f" vs baseline: vae_pool {_pp(bv)}, gan_pool {_pp(bg)}")
  return Verdict("C6", CLAIMS["C6"], ", ".join(arms), numbers, verdict, RULES["C6"])


def c7(cells: Cells, margin: float) -> Verdict:
  arms = ("ae_pretrain", "pretext_transfer", "vae_pool", "gan_pool")
  transfer = [a for a in arms[:2] if cells.ok(a)]
  gens = [a for a in arms[2:] if cells.ok(a)]
  if not transfer or not gens:
    return _missing_verdict("C7", arms, cells) or Verdict(
        "C7", CLAIMS["C7"], ", ".join(arms), "", "missing", RULES["C7"])
  mean_acc = lambda a: cells.diff(a, "baseline").mean if cells.ok("baseline") else 0.0
  best_t = max(transfer, key=mean_acc)
  best_g = max(gens, key=mean_acc)
  d = cells.diff(best_t, best_g)
  cheaper = _cost(cells, best_t) < _cost(cells, best_g)
  if d.lo > -margin and cheaper:
    verdict = SUPPORTED
  elif d.hi < -margin or not cheaper:
    verdict = NOT_SUPPORTED
  else:
    verdict = INCONCLUSIVE
  seconds = lambda a: (float(cells.ok(a).get("gen_seconds", 0.0))
                       + float(cells.ok(a).get("train_seconds", 0.0)))
  numbers = (f"Δacc({best_t} − {best_g}) {_pp(d)}; cost {best_t} {_cost(cells, best_t) / 1e6:.2f}M"
             f" vs {best_g} {_cost(cells, best_g) / 1e6:.2f}M image-steps per seed"
             f" (generation/pretraining + training; {seconds(best_t):.0f}s vs"
             f" {seconds(best_g):.0f}s on the machine that ran them)")
  return Verdict("C7", CLAIMS["C7"], ", ".join(arms), numbers, verdict, RULES["C7"])


def _cost(cells: Cells, arm: str) -> float:
  """Counted work of an arm: images through a gradient step, per seed (never seconds,
  so that the verdict is a function of the recorded results alone)."""
  cost = cells.ok(arm).get("cost") or {}
  return float(cost.get("gen_image_steps", 0)) + float(cost.get("train_image_steps", 0))


def _num(x, pct: bool = False) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  return f"{x * 100:.1f}%" if pct else f"{x:.2f}"


RULE_FNS: dict[str, Callable[[Cells, float], Verdict]] = {
    "C1": c1, "C2": c2, "C4": c4, "C5": c5, "C6": c6, "C7": c7}


def all_verdicts(records_by_arm: dict[str, dict[str, Any]], alignment: dict[str, Any] | None,
                 margin: float = 0.01) -> list[Verdict]:
  cells = Cells(records_by_arm)
  out = [RULE_FNS[c](cells, margin) if c != "C3" else c3(alignment) for c in CLAIMS]
  return out
