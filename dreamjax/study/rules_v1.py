"""The verdict rules of protocol version 1, frozen.

Studies made before protocol version 2 (their ``study_config.json`` has no
``protocol_version``) are reported with these rules, so a published run's
report can be rebuilt as it was decided. New studies use
:mod:`dreamjax.study.claims`; nothing here changes.
"""

from typing import Any

from dreamjax import stats
from dreamjax.study import evidence
from dreamjax.study import records as records_lib
from dreamjax.study.evidence import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Cells, Verdict,
                                     _cost, _gated, _num, _pp, _quality_text, robust_eps)

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
          " paired accuracy change dream_strong − baseline has its CI below +margin (no real"
          " gain); not supported if that CI is above zero or the images stayed near the data;"
          " else inconclusive.",
    "C2": "at the largest PGD ε where the baseline keeps 20–60% robust accuracy, both needed"
          " for supported: (a) clean accuracy of dream_online − noise_online (the online forms)"
          " has its CI inside ±margin (acts like noise), (b) robust accuracy of dream_online −"
          " baseline has its CI above zero (helps against adversarial inputs). Not supported if"
          " (a)'s CI lies outside ±margin or (b)'s CI is below zero; else inconclusive. The"
          " offline pair (dream_subtle vs noise) and pgd_train are reported beside it.",
    "C3": "supported if the mean cosine between the class-logit dream direction and the"
          " adversarial (loss-ascent) direction exceeds 0.5 and its CI lies above the CI of the"
          " layer-objective dream's cosine; not supported if its CI lies below 0.5 or below the"
          " contrast's; else inconclusive.",
    "C4": "supported if, for both vae_small and gan_small, the paired accuracy change vs"
          " baseline has its CI below +margin (no real gain) and both pass the quality gate;"
          " not supported if either CI is above zero (a real gain); else inconclusive"
          " (naming any under-trained generator). classical_online vs baseline is reported"
          " beside it.",
    "C5": "classical_online against every rival arm (dreams, adversarial sets, generators),"
          " paired t-tests with Holm's correction at α: supported if no rival beats it and it"
          " beats at least half of the rivals that pass their quality gate; not supported if"
          " any rival beats it; else inconclusive.",
    "C6": "supported if vae_pool or gan_pool (Holm over the two) beats the baseline; not"
          " supported if both have CIs below +margin and pass the quality gate; else"
          " inconclusive. self_training, the same pool without a generator, is reported as the"
          " yardstick, and pool − small differences beside it.",
    "C7": "supported if the better of ae_pretrain / pretext_transfer is at least as accurate"
          " as the best of vae_pool / gan_pool (paired CI above −margin) and costs no more"
          " (image-steps of generation/pretraining + training, counted, per seed); not"
          " supported if its CI is below −margin or it costs more; else inconclusive.",
}

# C5's rivals under protocol 1: every dream, attack and generator arm of the study,
# stored or online, but the strength sweep and adversarial training.
RIVALS = ("dream_subtle", "dream_strong", "dream_logit", "dream_bn", "dream_online", "fgsm",
          "pgd", "vae_small", "gan_small", "vae_pool", "gan_pool")


def rivals() -> tuple[str, ...]:
  return RIVALS


def _missing(cid: str, arms: tuple[str, ...], cells: Cells) -> "Verdict | None":
  return evidence.missing(cid, CLAIMS[cid], RULES[cid], arms, cells)


def _verdict(cid, arms, numbers, verdict) -> Verdict:
  return evidence.verdict(cid, CLAIMS[cid], RULES[cid], arms, numbers, verdict)


def c1(cells: Cells, margin: float) -> Verdict:
  arms = ("baseline", "dream_strong")
  if v := _missing("C1", arms, cells):
    return v
  d = cells.diff("dream_strong", "baseline", decides=True)
  fd_strong = cells.ok("dream_strong").get("frechet")
  fd_real = cells.ok("baseline").get("frechet")
  left = fd_strong is not None and fd_real is not None and fd_strong > 2 * fd_real
  if left and d.hi < margin:
    verdict = SUPPORTED
  elif stats.direction(d) == "above" or (fd_strong is not None and not left):
    verdict = NOT_SUPPORTED
  else:
    verdict = INCONCLUSIVE
  lp = cells.ok("dream_strong").get("label_preservation")
  numbers = (f"Δacc(dream_strong − baseline) {_pp(d)}; Fréchet: dream_strong {_num(fd_strong)},"
             f" real labeled {_num(fd_real)}; label preservation {_num(lp, pct=True)}")
  if cells.ok("classical_online"):
    numbers += f"; Δacc(classical_online − baseline) {_pp(cells.diff('classical_online', 'baseline'))}"
  return _verdict("C1", arms, numbers, verdict)


def c2(cells: Cells, margin: float) -> Verdict:
  arms = ("dream_online", "noise_online", "baseline")
  if v := _missing("C2", arms, cells):
    return v
  eps = robust_eps(cells)
  like_noise = cells.diff("dream_online", "noise_online", decides=True)
  robust = cells.diff("dream_online", "baseline", "robust_accuracy", eps, decides=True)
  a_in = like_noise.n > 0 and -margin < like_noise.lo and like_noise.hi < margin
  a_out = like_noise.lo > margin or like_noise.hi < -margin
  b_dir = stats.direction(robust)
  if a_in and b_dir == "above":
    verdict = SUPPORTED
  elif a_out or b_dir == "below":
    verdict = NOT_SUPPORTED
  else:
    verdict = INCONCLUSIVE
  base = cells.values("baseline", "robust_accuracy", eps) or []
  numbers = (f"at ε = {eps} (baseline robust {_num(sum(base) / max(len(base), 1), pct=True)}):"
             f" Δclean(dream_online − noise_online) {_pp(like_noise)};"
             f" Δrobust(dream_online − baseline) {_pp(robust)}")
  for a, b, metric in (("dream_subtle", "noise", "test_accuracy"),
                       ("dream_subtle", "baseline", "robust_accuracy"),
                       ("pgd_train", "baseline", "robust_accuracy")):
    if cells.ok(a):
      label = "Δclean" if metric == "test_accuracy" else "Δrobust"
      numbers += f"; {label}({a} − {b}) {_pp(cells.diff(a, b, metric, eps))}"
  return _verdict("C2", arms, numbers, verdict)


def c3(alignment: dict[str, Any] | None) -> Verdict:
  arms = "dream_logit vs pgd (same model, same images); layer-objective dream as contrast"
  if not alignment or alignment.get("status") != "ok":
    err = (alignment or {}).get("error", "not run")
    return _verdict("C3", arms, "", f"missing ({err})")
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
  return _verdict("C3", arms, numbers, verdict)


def c4(cells: Cells, margin: float) -> Verdict:
  arms = ("vae_small", "gan_small", "baseline")
  if v := _missing("C4", arms, cells):
    return v
  dv = cells.diff("vae_small", "baseline", decides=True)
  dg = cells.diff("gan_small", "baseline", decides=True)
  if stats.direction(dv) == "above" or stats.direction(dg) == "above":
    verdict = NOT_SUPPORTED
  elif dv.hi < margin and dg.hi < margin:
    verdict = _gated(SUPPORTED, cells.under_trained("vae_small", "gan_small"))
  else:
    verdict = INCONCLUSIVE
  numbers = f"Δacc(vae_small − baseline) {_pp(dv)}; Δacc(gan_small − baseline) {_pp(dg)}"
  numbers += _quality_text(cells, "vae_small", "gan_small")
  if cells.ok("classical_online"):
    numbers += f"; Δacc(classical_online − baseline) {_pp(cells.diff('classical_online', 'baseline'))}"
  return _verdict("C4", arms, numbers, verdict)


def c5(cells: Cells, margin: float) -> Verdict:
  present = [a for a in rivals() if cells.ok(a)]
  if not cells.ok("classical_online") or not present:
    return _verdict("C5", "classical_online vs rival arms", "",
                    "missing (classical_online or every rival arm)")
  p = {a: stats.paired_p_value(cells.values("classical_online"), cells.values(a))
       for a in present}
  adjusted = stats.holm(p, alpha=cells.alpha)
  diffs = {a: cells.diff("classical_online", a, decides=True) for a in present}
  beaten = [a for a in present if adjusted[a].reject and diffs[a].mean < 0]
  weak = set(x.split(" ")[0] for x in cells.under_trained(*present))
  wins = [a for a in present if adjusted[a].reject and diffs[a].mean > 0 and a not in weak]
  counted = [a for a in present if a not in weak]
  if beaten:
    verdict = NOT_SUPPORTED
  elif counted and len(wins) * 2 >= len(counted):
    verdict = SUPPORTED
  else:
    verdict = INCONCLUSIVE
  numbers = (f"classical_online better than {len(wins)}/{len(counted)} gate-passing rivals,"
             f" beaten by {len(beaten)}" + (f" ({', '.join(beaten)})" if beaten else "")
             + f" (Holm, α = {cells.alpha:g}); "
             + "; ".join(f"vs {a} {_pp(d)} (p_Holm {adjusted[a].p_adjusted:.3f})"
                         for a, d in diffs.items()))
  if weak:
    numbers += f"; not counted, under-trained: {', '.join(sorted(weak))}"
  return _verdict("C5", "classical_online vs " + ", ".join(present), numbers, verdict)


def c6(cells: Cells, margin: float) -> Verdict:
  arms = ("vae_pool", "gan_pool", "baseline")
  if v := _missing("C6", arms, cells):
    return v
  pools = ("vae_pool", "gan_pool")
  p = {a: stats.paired_p_value(cells.values(a), cells.values("baseline")) for a in pools}
  adjusted = stats.holm(p, alpha=cells.alpha)
  d = {a: cells.diff(a, "baseline", decides=True) for a in pools}
  if any(adjusted[a].reject and d[a].mean > 0 for a in pools):
    verdict = SUPPORTED
  elif all(d[a].hi < margin for a in pools):
    verdict = _gated(NOT_SUPPORTED, cells.under_trained(*pools))
  else:
    verdict = INCONCLUSIVE
  numbers = "; ".join(f"Δacc({a} − baseline) {_pp(d[a])} (p_Holm {adjusted[a].p_adjusted:.3f})"
                      for a in pools)
  numbers += _quality_text(cells, *pools)
  for a, b in (("self_training", "baseline"), ("vae_pool", "vae_small"),
               ("gan_pool", "gan_small")):
    if cells.ok(a) and cells.ok(b):
      numbers += f"; Δacc({a} − {b}) {_pp(cells.diff(a, b))}"
  return _verdict("C6", arms, numbers, verdict)


def c7(cells: Cells, margin: float) -> Verdict:
  arms = ("ae_pretrain", "pretext_transfer", "vae_pool", "gan_pool")
  transfer = [a for a in arms[:2] if cells.ok(a)]
  gens = [a for a in arms[2:] if cells.ok(a)]
  if not transfer or not gens:
    return _missing("C7", arms, cells) or _verdict("C7", arms, "", "missing")
  mean_acc = lambda a: cells.diff(a, "baseline").mean if cells.ok("baseline") else 0.0
  best_t, best_g = max(transfer, key=mean_acc), max(gens, key=mean_acc)
  d = cells.diff(best_t, best_g, decides=True)
  cheaper = _cost(cells, best_t) <= _cost(cells, best_g)
  if d.lo > -margin and cheaper:
    verdict = SUPPORTED
  elif d.hi < -margin or not cheaper:
    verdict = NOT_SUPPORTED
  else:
    verdict = INCONCLUSIVE
  seconds = lambda a: (records_lib.generation_seconds(cells.ok(a))
                       + float(cells.ok(a).get("train_seconds", 0.0)))
  numbers = (f"Δacc({best_t} − {best_g}) {_pp(d)}; cost {best_t} {_cost(cells, best_t) / 1e6:.2f}M"
             f" vs {best_g} {_cost(cells, best_g) / 1e6:.2f}M image-steps per seed"
             f" (generation/pretraining + training; {seconds(best_t):.0f}s vs"
             f" {seconds(best_g):.0f}s on the machine that ran them)")
  if cells.ok("self_training"):
    numbers += f"; Δacc(self_training − {best_t}) {_pp(cells.diff('self_training', best_t))}"
  return _verdict("C7", arms, numbers, verdict)


RULE_FNS = {"C1": c1, "C2": c2, "C4": c4, "C5": c5, "C6": c6, "C7": c7}
