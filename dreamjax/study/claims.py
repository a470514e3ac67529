"""Verdict rules: each claim of the seed answer against the measured cells of one budget.

This is protocol version :data:`PROTOCOL_VERSION`. Every rule is stated in
:data:`RULES` (printed in REPORT.md and docs/protocol.md) and decided from 95%
t-intervals over seeds, accuracy differences paired by seed. ``margin`` (one
accuracy point by default) is the smallest change called a real gain or loss:
"adds nothing" / "acts like noise" are supported only when the whole interval
lies inside ±margin. Comparators are in their strongest honest form. A
generator that fails the quality gate cannot support a claim that it adds
nothing. Every inconclusive verdict names its reason, and every inconclusive
comparison carries the smallest difference the run could have detected and the
seeds the observed difference would need (:mod:`dreamjax.power`). Verdicts are
a function of the recorded results alone (cost is counted work, never seconds).

Each rule is a function of *roles* (``dream=``, ``noise=``, ...) filled by the
arms it reads (:func:`reads`); :data:`PLACEBOS` fills them with arms for which
the claim must not hold, and the report prints what each rule says of them: a
rule that a placebo satisfies does not test its claim. The protocol's version
and digest (:func:`protocol`) are printed in every report; changing a rule, a
threshold or an arm-defining config field changes the digest. Studies made
under version 1 are reported with :mod:`dreamjax.study.rules_v1`.
"""

import hashlib
import json
import math
from typing import Any

import numpy as np

from dreamjax import stats
from dreamjax.configs import arms as arms_lib
from dreamjax.study import evidence
from dreamjax.study import records as records_lib
from dreamjax.study import rules_v1
from dreamjax.study.evidence import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Cells, Verdict,
                                     _cost, _gated, _num, _pp, _quality_text, robust_eps)

__all__ = ["SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE", "Verdict", "Cells"]

PROTOCOL_VERSION = 2

CLAIMS = rules_v1.CLAIMS

# Fixed before any run of version 2 (conventions, not fitted to data): how much
# further than label-preserving transforms counts as leaving the distribution, and
# the cosine above which two directions count as "almost the same".
FRECHET_RATIO = 2.0
SAME_DIRECTION = 0.5

def generator_arms(data: str) -> tuple[str, ...]:
  """Every registered arm of a generator trained on ``data`` (``labeled``: the seed's small
  labeled set; ``pool``: the unlabeled pool): the stored samples and their fresh-sample
  forms, of every family, in report order."""
  return tuple(a.name for a in arms_lib.REGISTRY.values()
               if isinstance(a.source, arms_lib.Generator) and a.source.data == data)


# The arms C4 and C6 cannot be decided without: the claim's own VAE and GAN. Every other
# arm of the same generators (diffusion, fresh samples) decides with them where it ran.
C4_REQUIRED = ("vae_small", "gan_small")
C6_REQUIRED = ("vae_pool", "gan_pool")

RULES = {
    "C1": "with stored classical and noise copies as the label-preserving references:"
          " supported if dream_strong left the distribution further than every reference"
          f" (Fréchet distance, every set measured on the same number of its images"
          f" (eval.frechet_num_images), more than {FRECHET_RATIO:g}× the largest reference's, AND label"
          " preservation below every reference's, paired CI below zero), AND it is a poor"
          " augmentation (paired Δacc dream_strong − baseline with CI below +margin), AND"
          " going further off the distribution does not help (over the dream_sweep cells,"
          " the per-seed slope of Δacc against log Fréchet has a CI that is not above zero)."
          " Not supported if dream_strong gains (CI above zero), stayed as near as the"
          " references, or further-off dreams gain more (slope CI above zero); else"
          " inconclusive.",
    "C2": "at the largest PGD ε where the baseline keeps 20–60% robust accuracy, against"
          " noise_matched_online (fresh Gaussian noise on the same share of every batch, its"
          " σ set so the mean L2 distance from the source image equals the subtle dream's):"
          " supported if (a) dream_online acts like noise, on clean AND on robust accuracy"
          " (both paired CIs of dream_online − noise_matched_online inside ±margin), and (b)"
          " it helps against adversarial inputs (robust dream_online − baseline, CI above"
          " zero). Not supported if either CI of (a) lies outside ±margin or (b)'s CI is below"
          " zero; else inconclusive. noise_online (σ 0.1), the offline pair (dream_subtle vs"
          " noise), pgd_train and classical_online are reported beside it.",
    "C3": "on the seeds' baselines and the same test images: supported if the mean cosine"
          " between the layer-objective dream direction (what Deep Dream ascends: a layer's"
          " mean squared activation) and the adversarial (loss-ascent) direction has its CI"
          f" above {SAME_DIRECTION:g}; not supported if its CI lies below {SAME_DIRECTION:g};"
          " else inconclusive. The procedure (projected gradient ascent on the input) is the"
          " same by construction; the rule asks whether the direction is. The class-logit"
          " dream is reported as a reference that aligns by construction (−∇CE = ∇z_y −"
          " Σ_k p_k ∇z_k contains ∇z_y), a random direction as the chance floor.",
    "C4": "over every arm of a generator trained on the seed's small labeled set that ran"
          " (vae_small and gan_small always; " + ", ".join(
              a for a in generator_arms("labeled") if a not in C4_REQUIRED) + " where they"
          " ran: stored samples and fresh samples in every batch): supported if every one's"
          " paired accuracy change vs baseline has its CI below +margin (no real gain) and"
          " every one passes the quality gate; not supported if any beats the baseline"
          " (paired t-tests, Holm over those arms, at α); else inconclusive (naming any"
          " under-trained generator). classical_online vs baseline is reported beside it.",
    "C5": "classical_online against every rival arm (dreams, attacks, generators), paired"
          " t-tests with Holm's correction at α: supported if classical_online beats the"
          " baseline (paired CI above zero), no rival beats it, and it beats at least half of"
          " the rivals that pass their quality gate; not supported if any rival beats it or the"
          " baseline is at least as good (CI below zero); else inconclusive.",
    "C6": "for the generators trained on the unlabeled pool and pseudo-labeled by the seed's"
          " baseline (this is the use the study tests), over every such arm that ran"
          " (vae_pool and gan_pool always; " + ", ".join(
              a for a in generator_arms("pool") if a not in C6_REQUIRED) + " where they ran:"
          " stored samples and fresh samples in every batch): supported if any of them (Holm"
          " over those arms) beats the baseline AND beats stored noise copies (extra images"
          " that carry no new information; paired CI above zero); not supported if all have"
          " CIs below +margin against the baseline and pass the quality gate; else"
          " inconclusive. self_training and fixmatch, the same pool without a generator, are"
          " reported as the yardstick, and each pool arm − its small-set counterpart beside"
          " it.",
    "C7": "supported if the better of ae_pretrain / pretext_transfer beats the baseline"
          " (paired CI above zero), is at least as accurate as the best of vae_pool / gan_pool"
          " (paired CI above −margin) and costs no more (image-steps of generation or"
          " pretraining + training, counted, per seed); not supported if it is below the"
          " generator (CI below −margin), the baseline is at least as good (CI below zero), or"
          " it costs more; else inconclusive.",
}

# The arms each rule reads: those that decide it first, then those reported beside it.
# C5's rivals and C4's and C6's generators are read from the registry by what the arms
# are (:func:`reads`), so a newly registered dream, attack or generator arm is one of them.
_READS = {
    "C1": ("baseline", "dream_strong", "classical", "noise", "dream_sweep", "classical_online",
           "deep_dream_strong", "deep_dream_sweep"),
    "C2": ("dream_online", "noise_matched_online", "baseline", "noise_online", "dream_subtle",
           "noise", "pgd_train", "classical_online", "deep_dream_online"),
    "C3": ("dream_subtle", "dream_strong", "dream_logit", "pgd"),
    "C7": ("ae_pretrain", "pretext_transfer", "vae_pool", "gan_pool", "baseline",
           "self_training", "fixmatch"),
}
# Claims that read robust accuracy: the cells of the arms they read measure it.
READS_ROBUSTNESS = ("C2",)

# Arms in the roles of a rule for which its claim must not hold (a "placebo"), and why.
PLACEBOS = {
    "C1": ((dict(dream="classical"), "stored classical copies: label-preserving by design"),
           (dict(dream="noise"), "stored noise copies: label-preserving by design")),
    "C2": ((dict(dream="baseline"), "no perturbation at all"),
           (dict(dream="classical_online"), "a geometric transform, not noise")),
    "C3": ((dict(dream="random"), "a random direction"),),
    "C4": ((dict(gens=("classical_online",)),
            "online classical augmentation, known to add information"),),
    "C5": ((dict(classical="baseline"), "no augmentation at all"),),
    "C6": ((dict(pools=("noise",)), "stored noise copies: no pool information"),),
    "C7": ((dict(ae="baseline", pretext="baseline"), "no pretraining at all"),),
}

# The Deep Dream claims read again under another dreamer, when its arms ran: the same
# rules, its arms in the dream's roles. The deep dreamer is a deeper network trained
# once per study on the unlabeled pool, the closest offline proxy for the answer's
# "a network trained on far more, and other, data". (C3 compares a dream with an
# attack on the same classifier, and the pool dreamer classifies no labels.)
DREAMERS = {
    "deep dreamer": {"C1": dict(dream="deep_dream_strong", sweep="deep_dream_sweep"),
                     "C2": dict(dream="deep_dream_online")},
}

# Config fields that do not define the protocol: how many seeds and which, where the data
# lives, caches and chunk sizes (they change no number).
NOT_PROTOCOL = ("num_seeds", "first_seed", "data_dir", "generator_cache", "dream_chunk")
# The protocol as frozen before its confirmation on fresh seeds (docs/protocol.md, "Order
# of work"): version 2's digest for each preset it was frozen for, and the day. A rule,
# threshold or arm-defining field changed since gives another digest, which a report
# prints as not frozen: such a change is a new version and needs its own confirmation.
FROZEN = {"e0f473b552c4e1a2": ("first", "2026-12-07"),
          "c532267a286da70b": ("quick", "2026-12-07")}


def rivals() -> tuple[str, ...]:
  """The arms C5 compares classical_online with: every registered arm that makes
  training data with a dream, an attack or a generator, stored or online (not the
  strength sweep, which is a dose–response, nor adversarial training, a robustness
  method C2 reads)."""
  return tuple(a.name for a in arms_lib.REGISTRY.values()
               if a.group in ("dream", "adversarial", "generator") and not a.variants
               and a.kind in ("stored", "online", "generator", "bank"))


def reads(cid: str) -> tuple[str, ...]:
  """The arms claim ``cid``'s rule reads."""
  if cid == "C5":
    return ("classical_online", "baseline", *rivals())
  if cid == "C4":
    return (*generator_arms("labeled"), "baseline", "classical_online")
  if cid == "C6":
    return (*generator_arms("pool"), "baseline", "noise", "self_training", "fixmatch",
            *generator_arms("labeled"))
  return _READS[cid]


def _deciding(cells: Cells, required: tuple[str, ...], data: str) -> tuple[str, ...]:
  """The arms that decide C4 (``data="labeled"``) or C6 (``"pool"``): the required ones
  and every other arm of such a generator with a record (a failed one leaves the claim
  missing, as a required one does)."""
  return tuple(dict.fromkeys((*required, *(a for a in generator_arms(data)
                                           if a in cells.records))))


def _counterpart(arm: str) -> str | None:
  """The small-set arm of a pool generator arm's family and form (``vae_pool_online`` ->
  ``vae_small_online``), or None."""
  entry = arms_lib.get(arm)
  if not isinstance(entry.source, arms_lib.Generator):
    return None
  for other in arms_lib.REGISTRY.values():
    if (other.kind == entry.kind and other.source == arms_lib.Generator(entry.source.family,
                                                                          "labeled")):
      return other.name
  return None


def claims_of(arm: str) -> tuple[str, ...]:
  """The claims whose rules read ``arm`` (a variant reads as its base arm)."""
  return tuple(c for c in CLAIMS if arms_lib.base_name(arm) in reads(c))


def measures_robustness(arm: str) -> bool:
  return any(arms_lib.base_name(arm) in reads(c) for c in READS_ROBUSTNESS)


def protocol(config, version: int | None = None) -> dict[str, Any]:
  """The protocol a study runs under: its version, a digest of its rules, thresholds,
  placebos and arm-defining config (not its seeds), and the day it was frozen
  (:data:`FROZEN`; None where it is not the frozen protocol)."""
  version = int(version if version is not None else config.get("protocol_version", 1))
  cfg = json.loads(config.to_json()) if hasattr(config, "to_json") else dict(config)
  cfg = records_lib.without_old_defaults(cfg)
  for field in NOT_PROTOCOL:
    cfg.pop(field, None)
  if version == 1:
    rules = {"rules": rules_v1.RULES, "rivals": rules_v1.RIVALS}
  else:
    rules = {"rules": RULES, "reads": {c: reads(c) for c in CLAIMS},
             "placebos": {c: [p for p, _ in ps] for c, ps in PLACEBOS.items()},
             "dreamers": DREAMERS,
             "thresholds": {"frechet_ratio": FRECHET_RATIO, "same_direction": SAME_DIRECTION}}
  blob = json.dumps({"version": version, "claims": CLAIMS, **rules, "config": cfg},
                    sort_keys=True, default=str)
  digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
  frozen = FROZEN.get(digest) if version == 2 else None
  return {"version": version, "digest": digest, "frozen": frozen[1] if frozen else None}


# --- helpers -----------------------------------------------------------------------

def _missing(cid: str, arms, cells: Cells) -> Verdict | None:
  return evidence.missing(cid, CLAIMS[cid], RULES[cid], arms, cells)


def _verdict(cid, arms, numbers, verdict) -> Verdict:
  return evidence.verdict(cid, CLAIMS[cid], RULES[cid], arms, numbers, verdict)


def _decides(cells: Cells, name: str, iv: stats.Interval) -> stats.Interval:
  """Records an interval a rule decides on that is not a paired accuracy difference."""
  if iv.n > 0:
    cells.deciding[name] = iv.to_dict()
  return iv


def _inconclusive(reason: str) -> str:
  return f"inconclusive ({reason})"


def _inside(iv: stats.Interval, margin: float) -> bool:
  return iv.n > 0 and -margin < iv.lo and iv.hi < margin


def _outside(iv: stats.Interval, margin: float) -> bool:
  return iv.lo > margin or iv.hi < -margin


def _per_seed(cells: Cells, arm: str, metric: str):
  v = (cells.ok(arm) or {}).get(metric)
  return list(v) if isinstance(v, list) else None


def dose_response(cells: Cells, sweep: str, against: str = "frechet") -> stats.Interval:
  """Per-seed slope of Δacc (each sweep cell − baseline) against log Fréchet distance
  (``frechet``) or label preservation (``label_preservation``) over the sweep's
  cells, with its t-interval over seeds: the dose–response of accuracy to how far
  off the data a dream goes."""
  nan = stats.Interval(float("nan"), float("nan"), float("nan"), 0)
  points = [a for a in cells.records if arms_lib.base_name(a) == sweep and cells.ok(a)]
  base = cells.values("baseline")
  if len(points) < 2 or not base:
    return nan
  slopes = []
  for s in range(len(base)):
    xs, ys = [], []
    for a in points:
      x, acc = _per_seed(cells, a, f"{against}_per_seed"), cells.values(a)
      if not x or s >= len(x) or s >= len(acc) or x[s] is None or x[s] <= 0:
        continue
      xs.append(math.log(x[s]) if against == "frechet" else x[s])
      ys.append(acc[s] - base[s])
    if len(xs) >= 2 and np.ptp(xs) > 0:
      slopes.append(float(np.polyfit(xs, ys, 1)[0]))
  return stats.t_interval(slopes) if len(slopes) >= 2 else nan


def _slope_text(iv: stats.Interval, unit: str) -> str:
  if iv.n == 0 or not math.isfinite(iv.mean):
    return "n/a"
  if not math.isfinite(iv.hi):
    return f"{iv.mean * 100:+.2f} pp {unit} (1 seed)"
  return f"{iv.mean * 100:+.2f} pp {unit} [{iv.lo * 100:+.2f}, {iv.hi * 100:+.2f}]"


# --- the rules ---------------------------------------------------------------------

def c1(cells: Cells, margin: float, dream: str = "dream_strong",
       refs: tuple[str, ...] = ("classical", "noise"), sweep: str = "dream_sweep") -> Verdict:
  arms = ("baseline", dream, *refs)
  if v := _missing("C1", arms, cells):
    return v
  d = cells.diff(dream, "baseline", decides=True)
  fd = cells.ok(dream).get("frechet")
  fd_refs = [cells.ok(r).get("frechet") for r in refs]
  lp_diffs = [_decides(cells, f"label preservation {dream} − {r}",
                       cells.diff(dream, r, "label_preservation_per_seed")) for r in refs]
  known = fd is not None and all(f is not None for f in fd_refs)
  further = known and fd > FRECHET_RATIO * max(fd_refs)
  less_kept = all(iv.n > 0 and iv.hi < 0 for iv in lp_diffs)
  far = further and less_kept
  slope = _decides(cells, f"slope of Δacc per log Fréchet over {sweep}",
                   dose_response(cells, sweep))
  further_helps = slope.n > 0 and slope.lo > 0
  if far and d.hi < margin and not further_helps:
    verdict = SUPPORTED
  elif stats.direction(d) == "above" or (known and not far) or further_helps:
    verdict = NOT_SUPPORTED
  elif not far:
    verdict = _inconclusive("distance from the data not measured")
  else:
    verdict = _inconclusive("accuracy change CI crosses +margin")
  lp = cells.ok(dream).get("label_preservation")
  numbers = (f"Δacc({dream} − baseline) {_pp(d)}; Fréchet: {dream} {_num(fd)}, "
             + ", ".join(f"{r} {_num(f)}" for r, f in zip(refs, fd_refs))
             + f"; label preservation {dream} {_num(lp, pct=True)}, "
             + ", ".join(f"Δ vs {r} {_pp(iv)}" for r, iv in zip(refs, lp_diffs))
             + f"; dose–response over {sweep}: Δacc {_slope_text(slope, 'per log Fréchet')},"
             f" {_slope_text(dose_response(cells, sweep, 'label_preservation'), 'per unit label preservation')}")
  if cells.ok("classical_online") and dream != "classical_online":
    numbers += f"; Δacc(classical_online − baseline) {_pp(cells.diff('classical_online', 'baseline'))}"
  return _verdict("C1", arms, numbers, verdict)


def c2(cells: Cells, margin: float, dream: str = "dream_online",
       noise: str = "noise_matched_online") -> Verdict:
  arms = (dream, noise, "baseline")
  if v := _missing("C2", arms, cells):
    return v
  eps = robust_eps(cells)
  clean = cells.diff(dream, noise, decides=True)
  robust_like = cells.diff(dream, noise, "robust_accuracy", eps, decides=True)
  helps = cells.diff(dream, "baseline", "robust_accuracy", eps, decides=True)
  like = _inside(clean, margin) and _inside(robust_like, margin)
  unlike = _outside(clean, margin) or _outside(robust_like, margin)
  if like and stats.direction(helps) == "above":
    verdict = SUPPORTED
  elif unlike or stats.direction(helps) == "below":
    verdict = NOT_SUPPORTED
  elif not like:
    verdict = _inconclusive("a CI of dream vs matched noise crosses ±margin")
  else:
    verdict = _inconclusive("robust gain over the baseline: CI crosses zero")
  base = cells.values("baseline", "robust_accuracy", eps) or []
  numbers = (f"at ε = {eps} (baseline robust {_num(sum(base) / max(len(base), 1), pct=True)}):"
             f" Δclean({dream} − {noise}) {_pp(clean)}; Δrobust({dream} − {noise})"
             f" {_pp(robust_like)}; Δrobust({dream} − baseline) {_pp(helps)}")
  info = (cells.ok(noise) or {}).get("transform_info") or {}
  if info:
    numbers += (f"; matched size: dream mean L2 {_num(info.get('dream_mean_l2'))}, noise"
                f" {_num(info.get('noise_mean_l2'))} (σ {_num(info.get('std'))}); mean L∞"
                f" {_num(info.get('dream_mean_linf'))} vs {_num(info.get('noise_mean_linf'))}")
  for a, b, metric in (("noise_online", "baseline", "robust_accuracy"),
                       ("dream_subtle", "noise", "test_accuracy"),
                       ("dream_subtle", "baseline", "robust_accuracy"),
                       ("pgd_train", "baseline", "robust_accuracy"),
                       ("classical_online", "baseline", "robust_accuracy")):
    if cells.ok(a) and cells.ok(b) and a != dream:
      label = "Δclean" if metric == "test_accuracy" else "Δrobust"
      numbers += f"; {label}({a} − {b}) {_pp(cells.diff(a, b, metric, eps))}"
  return _verdict("C2", arms, numbers, verdict)


def c3(alignment: dict[str, Any] | None, dream: str = "layer") -> Verdict:
  arms = ("layer-objective dream vs loss-ascent direction on each seed's baseline; the"
          " class-logit dream and a random direction as references")
  if not alignment or alignment.get("status") != "ok" or not alignment.get(dream):
    err = (alignment or {}).get("error", "not run")
    return _verdict("C3", arms, "", f"missing ({err})")
  iv = stats.Interval(**alignment[dream])
  if iv.lo > SAME_DIRECTION:
    verdict = SUPPORTED
  elif iv.hi < SAME_DIRECTION:
    verdict = NOT_SUPPORTED
  else:
    verdict = _inconclusive(f"cosine CI crosses {SAME_DIRECTION:g}")
  parts = []
  for name, label in (("layer", "layer dream"), ("logit", "class-logit dream"),
                      ("random", "random direction")):
    if alignment.get(name):
      x = stats.Interval(**alignment[name])
      parts.append(f"cosine({label}, adversarial) {x.mean:.2f} [{x.lo:.2f}, {x.hi:.2f}]")
  v = _verdict("C3", arms, "; ".join(parts) + (f" (tested: {dream})" if dream != "layer"
                                                else ""), verdict)
  v.effects = {f"cosine({dream} dream, adversarial)": iv.to_dict()}
  return v


def c4(cells: Cells, margin: float, gens: tuple[str, ...] | None = None) -> Verdict:
  """``gens``: the arms in the generators' role (default: :func:`_deciding`'s)."""
  gens = tuple(gens) if gens else _deciding(cells, C4_REQUIRED, "labeled")
  arms = (*gens, "baseline")
  if v := _missing("C4", arms, cells):
    return v
  d = {a: cells.diff(a, "baseline", decides=True) for a in gens}
  p = {a: stats.paired_p_value(cells.values(a), cells.values("baseline")) for a in gens}
  adjusted = stats.holm(p, alpha=cells.alpha)
  if any(adjusted[a].reject and d[a].mean > 0 for a in gens):
    verdict = NOT_SUPPORTED
  elif all(d[a].hi < margin for a in gens):
    verdict = _gated(SUPPORTED, cells.under_trained(*gens))
  else:
    verdict = _inconclusive("a CI crosses +margin")
  numbers = "; ".join(f"Δacc({a} − baseline) {_pp(d[a])} (p_Holm {adjusted[a].p_adjusted:.3f})"
                      for a in gens)
  numbers += _quality_text(cells, *gens)
  if cells.ok("classical_online") and "classical_online" not in gens:
    numbers += f"; Δacc(classical_online − baseline) {_pp(cells.diff('classical_online', 'baseline'))}"
  return _verdict("C4", arms, numbers, verdict)


def c5(cells: Cells, margin: float, classical: str = "classical_online") -> Verdict:
  present = [a for a in rivals() if cells.ok(a) and a != classical]
  if not cells.ok(classical) or not cells.ok("baseline") or not present:
    return _verdict("C5", f"{classical} vs rival arms", "",
                    f"missing ({classical}, the baseline or every rival arm)")
  over_base = cells.diff(classical, "baseline", decides=True)
  p = {a: stats.paired_p_value(cells.values(classical), cells.values(a)) for a in present}
  adjusted = stats.holm(p, alpha=cells.alpha)
  diffs = {a: cells.diff(classical, a, decides=True) for a in present}
  beaten = [a for a in present if adjusted[a].reject and diffs[a].mean < 0]
  weak = set(x.split(" ")[0] for x in cells.under_trained(*present))
  wins = [a for a in present if adjusted[a].reject and diffs[a].mean > 0 and a not in weak]
  counted = [a for a in present if a not in weak]
  helps = stats.direction(over_base) == "above"
  if beaten or stats.direction(over_base) == "below":
    verdict = NOT_SUPPORTED
  elif helps and counted and len(wins) * 2 >= len(counted):
    verdict = SUPPORTED
  elif not helps:
    verdict = _inconclusive(f"{classical} − baseline: CI crosses zero")
  else:
    verdict = _inconclusive(f"beats {len(wins)} of {len(counted)} rivals, fewer than half")
  numbers = (f"Δacc({classical} − baseline) {_pp(over_base)}; {classical} better than"
             f" {len(wins)}/{len(counted)} gate-passing rivals, beaten by {len(beaten)}"
             + (f" ({', '.join(beaten)})" if beaten else "")
             + f" (Holm, α = {cells.alpha:g}); "
             + "; ".join(f"vs {a} {_pp(d)} (p_Holm {adjusted[a].p_adjusted:.3f})"
                         for a, d in diffs.items()))
  if weak:
    numbers += f"; not counted, under-trained: {', '.join(sorted(weak))}"
  return _verdict("C5", f"{classical} vs " + ", ".join(present), numbers, verdict)


def c6(cells: Cells, margin: float, pools: tuple[str, ...] | None = None,
       null: str = "noise") -> Verdict:
  """``pools``: the arms in the pool generators' role (default: :func:`_deciding`'s)."""
  pools = tuple(pools) if pools else _deciding(cells, C6_REQUIRED, "pool")
  arms = (*pools, "baseline", null)
  if v := _missing("C6", arms, cells):
    return v
  p = {a: stats.paired_p_value(cells.values(a), cells.values("baseline")) for a in pools}
  adjusted = stats.holm(p, alpha=cells.alpha)
  d = {a: cells.diff(a, "baseline", decides=True) for a in pools}
  over_null = {a: _decides(cells, f"{a} − {null}", cells.diff(a, null)) for a in pools}
  if any(adjusted[a].reject and d[a].mean > 0 and over_null[a].lo > 0 for a in pools):
    verdict = SUPPORTED
  elif all(d[a].hi < margin for a in pools):
    verdict = _gated(NOT_SUPPORTED, cells.under_trained(*pools))
  elif any(adjusted[a].reject and d[a].mean > 0 for a in pools):
    verdict = _inconclusive(f"beats the baseline, not {null} copies")
  else:
    verdict = _inconclusive("a CI against the baseline crosses +margin")
  numbers = "; ".join(f"Δacc({a} − baseline) {_pp(d[a])} (p_Holm {adjusted[a].p_adjusted:.3f});"
                      f" Δacc({a} − {null}) {_pp(over_null[a])}" for a in pools)
  numbers += _quality_text(cells, *pools)
  for a, b in (("self_training", "baseline"), ("fixmatch", "baseline")):
    if cells.ok(a) and cells.ok(b) and a not in pools + (null,):
      numbers += f"; Δacc({a} − {b}) {_pp(cells.diff(a, b))}"
  for a in pools:  # what the pool adds over the same generator on the labeled set
    b = _counterpart(a)
    if b and cells.ok(a) and cells.ok(b):
      numbers += f"; Δacc({a} − {b}) {_pp(cells.diff(a, b))}"
  return _verdict("C6", arms, numbers, verdict)


def c7(cells: Cells, margin: float, ae: str = "ae_pretrain",
       pretext: str = "pretext_transfer") -> Verdict:
  arms = tuple(dict.fromkeys((ae, pretext, "vae_pool", "gan_pool", "baseline")))
  transfer = [a for a in dict.fromkeys((ae, pretext)) if cells.ok(a)]
  gens = [a for a in ("vae_pool", "gan_pool") if cells.ok(a)]
  if not transfer or not gens or not cells.ok("baseline"):
    return _missing("C7", arms, cells) or _verdict("C7", arms, "", "missing")
  mean_acc = lambda a: cells.diff(a, "baseline").mean
  best_t, best_g = max(transfer, key=mean_acc), max(gens, key=mean_acc)
  d = cells.diff(best_t, best_g, decides=True)
  over_base = cells.diff(best_t, "baseline", decides=True)
  cheaper = _cost(cells, best_t) <= _cost(cells, best_g)
  if d.lo > -margin and cheaper and stats.direction(over_base) == "above":
    verdict = SUPPORTED
  elif d.hi < -margin or not cheaper or stats.direction(over_base) == "below":
    verdict = NOT_SUPPORTED
  elif stats.direction(over_base) != "above":
    verdict = _inconclusive(f"{best_t} − baseline: CI crosses zero")
  else:
    verdict = _inconclusive(f"{best_t} − {best_g}: CI crosses −margin")
  seconds = lambda a: (records_lib.generation_seconds(cells.ok(a))
                       + float(cells.ok(a).get("train_seconds", 0.0)))
  numbers = (f"Δacc({best_t} − baseline) {_pp(over_base)}; Δacc({best_t} − {best_g}) {_pp(d)};"
             f" cost {best_t} {_cost(cells, best_t) / 1e6:.2f}M vs {best_g}"
             f" {_cost(cells, best_g) / 1e6:.2f}M image-steps per seed (generation/pretraining"
             f" + training; {seconds(best_t):.0f}s vs {seconds(best_g):.0f}s on the machine that"
             " ran them)")
  for yardstick in ("self_training", "fixmatch"):  # what the pool gives without a generator
    if cells.ok(yardstick) and best_t != yardstick:
      numbers += f"; Δacc({yardstick} − {best_t}) {_pp(cells.diff(yardstick, best_t))}"
  return _verdict("C7", arms, numbers, verdict)


RULE_FNS = {"C1": c1, "C2": c2, "C4": c4, "C5": c5, "C6": c6, "C7": c7}


def all_verdicts(records_by_arm: dict[str, dict[str, Any]], alignment: dict[str, Any] | None,
                 margin: float = 0.01, *, budget: int = 0, quality_gate: float = 0.0,
                 alpha: float = 0.05, version: int = PROTOCOL_VERSION) -> list[Verdict]:
  """Every claim's verdict at one budget (``records_by_arm``: its main cells), under
  protocol ``version``."""
  rules = rules_v1 if version == 1 else None
  out = []
  for cid in CLAIMS:
    cells = Cells(records_by_arm, quality_gate=quality_gate, alpha=alpha)
    if rules is not None:
      v = rules.c3(alignment) if cid == "C3" else rules.RULE_FNS[cid](cells, margin)
    else:
      v = c3(alignment) if cid == "C3" else RULE_FNS[cid](cells, margin)
      v.effects = v.effects or dict(cells.deciding)
    v.budget = budget
    if v.verdict.startswith("inconclusive"):
      v.power = " | ".join(cells.notes)
    out.append(v)
  return out


def dreamer_verdicts(records_by_arm: dict[str, dict[str, Any]], margin: float = 0.01, *,
                     budget: int = 0, quality_gate: float = 0.0,
                     alpha: float = 0.05) -> list[tuple[str, Verdict]]:
  """``(dreamer, verdict)`` for each claim of :data:`DREAMERS` whose dream arm ran."""
  out = []
  for dreamer, by_claim in DREAMERS.items():
    for cid, roles in by_claim.items():
      if roles["dream"] not in records_by_arm:
        continue
      cells = Cells(records_by_arm, quality_gate=quality_gate, alpha=alpha)
      v = RULE_FNS[cid](cells, margin, **roles)
      v.effects = dict(cells.deciding)
      v.budget = budget
      if v.verdict.startswith("inconclusive"):
        v.power = " | ".join(cells.notes)
      out.append((dreamer, v))
  return out


def placebo_verdicts(records_by_arm: dict[str, dict[str, Any]],
                     alignment: dict[str, Any] | None, margin: float = 0.01, *,
                     budget: int = 0, quality_gate: float = 0.0,
                     alpha: float = 0.05) -> list[dict[str, Any]]:
  """Each rule run on its placebos: ``{claim, placebo, why, verdict, numbers}``. A
  placebo's verdict must not be "supported"."""
  out = []
  for cid, placebos in PLACEBOS.items():
    for roles, why in placebos:
      cells = Cells(records_by_arm, quality_gate=quality_gate, alpha=alpha)
      v = c3(alignment, **roles) if cid == "C3" else RULE_FNS[cid](cells, margin, **roles)
      out.append({"claim": cid, "budget": budget,
                  "placebo": ", ".join(f"{r}={a if isinstance(a, str) else '+'.join(a)}"
                                       for r, a in roles.items()), "why": why,
                  "verdict": v.verdict, "numbers": v.numbers,
                  "passes": v.verdict != SUPPORTED})
  return out
