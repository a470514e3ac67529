"""The text of REPORT.md: claims per budget, exchange rates, generator quality, arms."""

import datetime
import json
import os
from typing import Any

import jax
import numpy as np

from dreamjax import stats
from dreamjax.plumbing import provenance
from dreamjax.configs import arms as arms_lib
from dreamjax.study import claims, rules_v1, spec
from dreamjax.study.report import tables
from dreamjax.study.run import fuller as fuller_lib
from dreamjax.study import records as records_lib


# Smallest gain (accuracy points) read as "a few points" from classical augmentation.
CLASSICAL_ANCHOR_PP = 1.0

# Largest rise of validation accuracy (points, mean over seeds) over an arm's last
# evaluation interval that still counts as converged on its training budget.
CONVERGED_PP = 1.0

# What changed in the verdict rules since the first published reports (offline comparators).
RULE_CHANGES = (
    "Comparators are now in their strongest honest form: C2, C4 and C5 compare with classical"
    " augmentation and noise *online* (a fresh transform of half of every batch, the form"
    " practitioners use), where they compared with one stored copy per image, which the"
    " literature and our own runs found to help less; the offline arms are still run and"
    " reported. C2 reads dream_online (a subtle dream of half of every batch from the current"
    " model) at the PGD ε where the baseline keeps 20–60% robust accuracy, instead of ε = 0.1"
    " where every arm sat near 0%. C1's 'poor augmentation' means no real gain (CI below"
    " +margin), as C4's 'adds nothing' does, instead of a real loss. C4, C5 and C6 do not let a"
    " generator that fails its quality gate support a claim. C5 corrects for its many"
    " comparisons (Holm). C6 asks whether a pool generator beats the baseline, with"
    " self-training on the same pool as the yardstick. C7's cost is counted work, not seconds.")

# What protocol version 2 changed against version 1, and why.
RULE_CHANGES_V2 = (
    "Version 2 runs every rule on placebos (arms for which its claim must not hold) and"
    " rewrote the rules that one satisfied: C1 read 'left the distribution' as a Fréchet"
    " distance twice the real labeled set's, which stored classical copies also pass; it now"
    " asks for more distance and less label preservation than label-preserving transforms,"
    " and reads the dose–response over the dream sweep. C5 and C7 held when no arm helped at"
    " all (the baseline in classical_online's or the transfer arms' place passed them); both"
    " now ask for a gain over the baseline. C6 asks a pool generator to beat stored noise"
    " copies too. C2 compares the dream with noise of the same mean L2 size, on robust as well"
    " as clean accuracy. C3 rests on the layer-objective dream, the one Deep Dream ascends;"
    " the class-logit dream aligns by construction and is a reference. Inconclusive verdicts"
    " name their reason. The instrument changed with it: the oracle trains with online"
    " classical augmentation for a length chosen on validation data, and every Fréchet"
    " distance is measured on the same number of images of its set, where version 1"
    " measured whole sets, whose distance grows as they shrink.")


def convergence_notes(cells, steps: int, threshold_pp: float = CONVERGED_PP) -> list[str]:
  """Which arms' validation curves had flattened by their last step, and which had not."""
  last_rise = {}
  for arm, c in cells.items():
    h = [r for r in c.get("history") or [] if "val_accuracy" in r]
    if c.get("status") == "ok" and len(h) >= 2:
      last_rise[arm] = (np.mean(h[-1]["val_accuracy"]) - np.mean(h[-2]["val_accuracy"])) * 100
  if not last_rise:
    return []
  rising = {a: d for a, d in last_rise.items() if d > threshold_pp}
  flat = {a: d for a, d in last_rise.items() if a not in rising}
  out = []
  if flat:
    out.append(f"- Convergence: {len(flat)} of {len(last_rise)} arms changed validation accuracy"
               f" by at most {max(flat.values()):+.1f} pp over their last evaluation interval"
               f" (threshold {threshold_pp:g} pp; curves in the figures). The learning rate"
               " has decayed to 1% of its peak by then, so a flat end shows the schedule ended,"
               " not that more steps would not help: only a run with more `train.steps` tells.")
  if rising:
    listed = ", ".join(f"`{a}` {d:+.1f} pp" for a, d in sorted(rising.items(),
                                                               key=lambda i: arms_lib.sort_key(i[0])))
    out.append(f"- **Still rising at the last step:** {listed} over the last evaluation"
               f" interval; these arms may gain from more than {steps} training steps"
               " (`train.steps`), so their accuracy here is a lower bound.")
  return out


def _sanity(oracle, base, budget, classical=None, dataset: str = "fashion_mnist") -> list[str]:
  """Where the instrument and the baseline land, beside published anchors.

  The oracle's anchor is Fashion-MNIST's own benchmark range, so it is quoted for
  that dataset alone; on any other data the line says there is none.
  """
  out = []
  if tables.ok(oracle) and dataset != "fashion_mnist":
    out.append(f"- Oracle {float(np.mean(oracle['test_accuracy'])) * 100:.1f}%: dreamjax holds"
               f" no published accuracy range for {dataset}, so whether it is a fair"
               " instrument is for the reader to judge against that dataset's benchmarks.")
  elif tables.ok(oracle):
    acc = float(np.mean(oracle["test_accuracy"]))
    inside = 0.876 <= acc <= 0.935
    out.append(f"- Oracle {acc * 100:.1f}%: {'inside' if inside else 'outside'} the 87.6–92.5%"
               " that 2-conv CNNs reach on all of Fashion-MNIST (Zalando's benchmark table)"
               + (", so it is a fair instrument." if inside else "; label-preservation and"
                  " Fréchet numbers are measured with this weaker instrument."))
  if tables.ok(base):
    acc = float(np.mean(base["test_accuracy"]))
    ref = float(np.mean(oracle["test_accuracy"])) if tables.ok(oracle) else acc
    out.append(f"- Baseline {acc * 100:.1f}% with N = {budget} labels: below the oracle by"
               f" {(ref - acc) * 100:.1f} pp, the gap augmentation could close. Published anchors"
               " for the low-label regime expect online classical augmentation to gain a few"
               " points and generators trained on the same small set about nothing (Ravuri &"
               " Vinyals 2019).")
  if tables.ok(base) and tables.ok(classical) and len(base["test_accuracy"]) >= 2:
    gain = stats.paired_difference(classical["test_accuracy"], base["test_accuracy"])
    text = f"{gain.mean * 100:+.1f} pp [{gain.lo * 100:+.1f}, {gain.hi * 100:+.1f}]"
    if gain.mean * 100 >= CLASSICAL_ANCHOR_PP:
      out.append(f"- Online classical augmentation gains {text} over the baseline: in line with"
                 " the few points the literature expects.")
    else:
      out.append(f"- **Mismatch with the literature:** online classical augmentation gains"
                 f" {text}, below the few points (≥ {CLASSICAL_ANCHOR_PP:g} pp) it is expected"
                 " to bring; claims that compare with it (C4, C5) say so through their numbers.")
  return out


def _workdir_record(workdir: str) -> dict[str, Any]:
  """The versions and data the workdir recorded when it was made (study_config.json)."""
  try:
    with open(os.path.join(workdir, "study_config.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _machine() -> str:
  return f"{provenance.describe_machine(provenance.machine())}, JAX {jax.__version__}"


TITLES = {"forest": "Accuracy change vs baseline, paired by seed",
          "exchange": "Exchange rate: stored images against real labels",
          "robustness": "Robust accuracy against PGD radius ε",
          "generators": "Generator training curves",
          "sweep": "Accuracy vs dream strength", "frechet": "Fréchet distance vs accuracy change",
          "curves": "Validation curves (convergence)", "samples": "Samples per arm",
          "dreamers": "The same images dreamed by the small classifier and the deep pool dreamer"}



def _f(x, scale=1.0, d=1) -> str:
  return "" if x is None else f"{x * scale:.{d}f}"


def _sessions(workdir) -> list[str]:
  """The runs that computed this workdir: when, how long, on what, by which command."""
  runs = records_lib.read_sessions(workdir)
  if not runs:
    return []
  md = ["Runs of this study on its workdir (`sessions.jsonl`):", ""]
  for r in runs:
    m = r.get("machine", {})
    md.append(f"- {r.get('started', '?')} to {r.get('finished', '?')}: {r.get('status', '?')},"
              f" {r.get('cells_run', '?')} cells run ({r.get('cells_before', '?')} of"
              f" {r.get('cells_total', '?')} done before), {r.get('seconds', 0) / 60:.1f} min on"
              f" {provenance.describe_machine(m)}{_load(m)}{_workers(r.get('compute'))};"
              f" `{r.get('command', '')}`")
  total = sum(r.get("seconds", 0) for r in runs)
  return md + ["", f"Wall time of all runs: {total / 60:.1f} min.", ""]


def _workers(compute) -> str:
  """``, 2 Ray workers of 1 XLA thread each on 1 node`` for a run on workers."""
  if not compute:
    return ""
  nodes = compute.get("nodes", compute.get("nodes_in_cluster"))
  return (f", {compute.get('workers', '?')} {compute.get('engine', '')} workers of"
          f" {compute.get('xla_cpu_threads', '?')} XLA thread each"
          + (f" on {nodes} node{'s' if nodes != 1 else ''}" if nodes else ""))


def _load(m) -> str:
  load = m.get("load_1min")
  return "" if load is None else f" (load {load} at the start)"


def _header(config, workdir, records, cells, oracle, primary) -> list[str]:
  seconds = sum(r.get("timing", {}).get("cell_seconds", r.get("timing", {}).get("train_seconds", 0))
                for r in records)
  xla = [r.get("timing", {}).get("xla", {}) for r in records]
  programs = sum(x.get("programs", 0) for x in xla)
  compile_s = sum(x.get("compile_seconds", 0.0) for x in xla)
  budgets = ", ".join(str(b) for b in config.budgets)
  md = [f"# dreamjax study report ({config.dataset}, N = {budgets})", "",
        f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on {_machine()}."
        f" Seeds: {config.num_seeds}; label budgets: {tuple(config.budgets)};"
        f" {spec.steps_text(config)} per arm (batch {config.train.batch_size});"
        f" M = {config.copies} generated"
        f" image(s) per labeled image (exchange cells: M ∈ {tuple(config.exchange.copies)}, and"
        f" the baseline at N × {tuple(config.exchange.label_factors)} labels). Sum of cell"
        f" times: {seconds / 60:.1f} min, of which {compile_s / 60:.1f} min compiling"
        f" {programs} XLA programs (compiled or loaded from the compilation cache).", ""]
  md += _sessions(workdir)
  made = _workdir_record(workdir)
  if made:
    v, d = made.get("versions", {}), made.get("data", {})
    md += [f"Computed with {', '.join(f'{k} {x}' for k, x in v.items() if k != 'xla_flags')}"
           f"; XLA flags `{v.get('xla_flags', '')}`. Data: {d.get('name')} from"
           f" `{d.get('source')}` (sha256 {str(d.get('digest'))[:16]}…).", ""]
  if tables.ok(oracle):
    md.append(f"Oracle (all training labels, measuring instrument only): test accuracy"
              f" {np.mean(oracle['test_accuracy']) * 100:.1f}%.")
  base = cells.get("baseline")
  if tables.ok(base):
    md.append(f"Baseline (N = {primary} labels): test accuracy"
              f" {stats.t_interval(base['test_accuracy']).fmt()}% (mean ± 95% CI).")
  md += ["", "### Against the literature", ""]
  md += _sanity(oracle, base, primary, cells.get("classical_online"), str(config.dataset))
  md += convergence_notes({a: c for a, c in cells.items() if a != "alignment"},
                                 int(spec.train_config(config, primary).steps))
  return md


def _exchange_row(exchange, primary, columns: int) -> list[str]:
  """A row of the claims table: each stored-image arm's worth in real labels at its largest
  M (no verdict; the whole sweep is in the section after the table)."""
  if not exchange or not exchange.get("equivalent"):
    return []
  worth = "; ".join(f"{arm} at M = {max(by_m)}: {by_m[max(by_m)].fmt()}"
                    for arm, by_m in exchange["equivalent"].items())
  return [f"| **Exchange rate** What a stored image is worth in real labels (N = {primary};"
          f" no verdict) | {worth} |" + " |" * columns]


def generator_variance_text(variance: dict[str, tuple[int, int, int]]) -> list[str]:
  """What the pool generator arms' intervals hold (:func:`tables.generator_variance`):
  a sentence per number of generators; nothing for cells made before there were several."""
  groups: dict[tuple[int, int, int], list[str]] = {}
  for arm, key in variance.items():
    groups.setdefault(key, []).append(f"`{arm}`")
  md = []
  for (used, of, seeds), arms in groups.items():
    names = ", ".join(arms)
    if used == 1:
      md.append(f"The intervals of {names} leave out generator variance: one pool generator"
                " per arm, shared by every seed (`pool_generators` = 1).")
      continue
    which = (f"{used} pool generators" if used == of else
             f"{used} of its {of} pool generators (one per seed)")
    text = (f"The intervals of {names} include generator variance: each arm's {seeds} seeds"
            f" read {which}, trained on the shared pool from different seeds (seed number i"
            f" of the study reads generator i mod {of}), so they vary with the generator as"
            " well as with the labeled subset and initialisation.")
    if seeds > used:
      text += (" Seeds that read the same generator share its draw, so the intervals,"
               " which treat seeds as independent, still understate that variance"
               " somewhat.")
    md.append(text)
  return md + ([""] if md else [])


def _claims(verdicts: dict[int, list[claims.Verdict]], primary: int, margin: float,
            exchange=None, variance=None) -> list[str]:
  budgets = [primary] + [b for b in verdicts if b != primary]
  head = " | ".join(f"verdict N = {b}" for b in budgets)
  md = ["", "## Claims", "", f"| claim | numbers (N = {primary}) | {head} |",
        "|---|---|" + "---|" * len(budgets)]
  by_claim = {b: {v.claim: v for v in vs} for b, vs in verdicts.items()}
  for cid, text in claims.CLAIMS.items():
    v = by_claim.get(primary, {}).get(cid)
    if not any(cid in by_claim.get(b, {}) for b in budgets):  # not asked of this study
      md.append(f"| **{cid}** {text} | left to a fuller preset (below) |" + " |" * len(budgets))
      continue
    cols = " | ".join(f"**{by_claim[b][cid].verdict}**" if cid in by_claim.get(b, {}) else ""
                      for b in budgets)
    md.append(f"| **{cid}** {text} | {v.numbers if v else ''} | {cols} |")
  md += _exchange_row(exchange, primary, len(budgets))
  md += ["", "Intervals are 95% Student-t intervals over seeds; accuracy differences are paired"
         f" by seed (pp = percentage points). Margin = {margin * 100:.0f} pp. A verdict follows"
         " from its intervals by the rule at the end of this report.", ""]
  md += generator_variance_text(variance or {})
  md += by_budget(by_claim, budgets)
  notes = [(b, v) for b in budgets for v in verdicts[b] if v.power]
  if notes:
    md += ["### What the inconclusive comparisons could have detected", ""]
    md += [f"- N = {b}, {v.claim}: {v.power}" for b, v in notes]
    md.append("")
  return md


def by_budget(by_claim: dict[int, dict[str, claims.Verdict]], budgets: list[int]) -> list[str]:
  """Where each claim holds: claims whose verdict is the same at every budget in one line,
  then each claim whose verdict changes with N, with its numbers at the other budgets
  (the claims table shows the first budget's numbers only)."""
  if len(budgets) < 2:
    return []
  same, differ = [], []
  for cid in claims.CLAIMS:
    vs = {b: by_claim[b][cid] for b in budgets if cid in by_claim.get(b, {})}
    if len(vs) < 2:
      continue
    if len({v.verdict for v in vs.values()}) == 1:
      same.append(f"{cid} ({next(iter(vs.values())).verdict})")
      continue
    differ.append(f"- **{cid}**: " + "; ".join(f"{v.verdict} at N = {b}" for b, v in vs.items()))
    differ += [f"  - N = {b}: {v.numbers}" for b, v in vs.items()
               if b != budgets[0] and v.numbers]
  if not same and not differ:
    return []
  md = ["### Where each claim holds", ""]
  if same:
    md += [f"The same verdict at every budget: {', '.join(same)}.", ""]
  if differ:
    md += ["Verdicts that change with the label budget (numbers at the other budgets):", "",
           *differ, ""]
  return md


def _exchange(exchange, primary) -> list[str]:
  if not exchange or not exchange.get("equivalent"):
    return []
  budgets = exchange["budgets"]
  base = [f"{b}: {np.mean(v) * 100:.1f}%" for b, v in zip(budgets, exchange["baseline"])]
  md = ["## What stored images are worth in real labels", "",
        f"Baseline accuracy at N = {', '.join(base)}. Each arm at M generated images per labeled"
        " image, and the number of extra real labels the baseline would need for the same"
        " accuracy (its curve in log N, interpolated; 95% seed-bootstrap interval; '>' when"
        f" beyond the largest measured N).", "",
        "| arm | M | Δacc vs baseline (pp) | worth in extra real labels |", "|---|---|---|---|"]
  for arm, by_m in exchange["equivalent"].items():
    for m, eq in by_m.items():
      acc = exchange["arms"][arm][m]
      d = stats.paired_difference(acc, exchange["baseline"][0])
      md.append(f"| {arm} | {m} | {d.mean * 100:+.1f} [{d.lo * 100:+.1f}, {d.hi * 100:+.1f}] |"
                f" {eq.fmt()} |")
  return md + [""]


def _quality(quality, gate) -> list[str]:
  if not quality:
    return []
  several = any(q.get("generators") for q in quality)
  md = ["## Generator quality", "",
        f"Quality gate: the oracle must label at least {gate * 100:.0f}% of a generator's samples"
        " with the label they were generated (or pseudo-labeled) with. CAS: a classifier trained"
        " only on the samples, tested on real test images (Ravuri & Vinyals 2019)."
        + (" An arm with several pool generators has a row for each (the mean over the seeds"
           " that read it) below its mean, and passes only if each of them passes."
           if several else ""), "",
        "| generator | label preservation | Fréchet | KID | CAS | gate |",
        "|---|---|---|---|---|---|"]
  for q in quality:
    gens = q.get("generators") or []
    name = f"{q['arm']} (mean of {len(gens)})" if gens else q["arm"]
    md.append(_quality_row(name, q))
    md += [_quality_row(f"{q['arm']} generator {g['index']} (seeds"
                        f" {', '.join(str(x) for x in g['seeds'])})", g) for g in gens]
  return md + [""]


def _quality_row(name: str, q) -> str:
  return (f"| {name} | {_f(q['label_preservation'], 100)}% | {_f(q['frechet'], 1, 1)} |"
          f" {_f(q.get('kid'), 1, 3)} | {_f(q['cas'], 100)}% |"
          f" {'passes' if q['passes'] else '**under-trained**'} |")


def _frechet_text(config) -> str:
  """How the report's Fréchet distances were measured: on a fixed number of images per set,
  or (studies recorded before that) on whole sets."""
  e = config.eval
  n = int(e.get("frechet_num_images", 0))
  if not n:
    return ("it grows as a set shrinks, so a set of 100 images reads further than one of 5000"
            " from the same distribution")
  return (f"each set is measured on {n} of its images (the mean over up to"
          f" {int(e.get('frechet_draws', 1))} disjoint draws of {n}, a fixed seed), against"
          f" {int(e.frechet_num_test)} test images, because the distance grows as a set shrinks:"
          " so the real labeled set and generated sets of any size read alike")


def _instrument(config, oracle) -> list[str]:
  """What the oracle is and how far its labels hold under small shifts (studies recorded
  before these measurements have none of them, and no section)."""
  if not tables.ok(oracle) or not oracle.get("shift_invariance"):
    return []
  o = config.oracle
  aug = ("no augmentation" if o.get("augment", "none") == "none" else
         f"the classical transform online on {float(o.augment_fraction) * 100:.0f}% of every batch")
  acc = float(np.mean(oracle["test_accuracy"]))
  val = oracle.get("val_accuracy")
  md = ["## The instrument", "",
        f"The oracle (every training label; it measures label preservation and defines the"
        f" Fréchet/KID features, and never labels a training image): a CNN with conv widths"
        f" {tuple(o.model.conv_features)} and dense {tuple(o.model.dense_features)}, trained"
        f" {int(o.train.steps)} steps of {int(o.train.batch_size)} images with {aug} (its length"
        f" chosen on a validation split, docs/protocol.md). Test accuracy {acc * 100:.2f}%"
        + (f", validation {float(np.mean(val)) * 100:.2f}%." if val else "."), "",
        "Its labels under small shifts of the test images (black borders; each distance in the"
        " four directions):", "",
        "| shift (pixels) | test accuracy % (mean) | worst direction % | same label as unshifted % |",
        "|---|---|---|---|",
        f"| 0 | {acc * 100:.2f} | | 100 |"]
  for r in oracle["shift_invariance"]:
    worst = min(r["accuracy_by_direction"].items(), key=lambda kv: kv[1])
    md.append(f"| {r['pixels']} | {r['accuracy'] * 100:.2f} | {worst[1] * 100:.2f} ({worst[0]}) |"
              f" {r['agreement'] * 100:.2f} |")
  md += ["", f"Fréchet distances: {_frechet_text(config)}. KID, unbiased at any set size, is"
         " computed on whole sets.", ""]
  return md


def _arms(rows, cells, config) -> list[str]:
  eps = sorted({k[len("robust_accuracy_eps"):] for r in rows for k in r
                if k.startswith("robust_accuracy_eps")}, key=float)
  md = ["## Arms", "", "| cell | test acc % | Δ vs baseline (pp) | "
        + " | ".join(f"robust ε={e} %" for e in eps)
        + " | label preservation | Fréchet | KID | cost (M image-steps) | status |",
        "|---|---|---|" + "---|" * len(eps) + "---|---|---|---|---|"]
  for r in rows:
    acc = (f"{_f(r.get('test_accuracy_mean'), 100)} ± {_f(r.get('test_accuracy_ci95'), 100)}"
           if r.get("test_accuracy_mean") is not None else "")
    diff = ""
    if r.get("test_accuracy_vs_baseline") is not None:
      diff = (f"{r['test_accuracy_vs_baseline'] * 100:+.1f} [{r['test_accuracy_vs_baseline_lo'] * 100:+.1f},"
              f" {r['test_accuracy_vs_baseline_hi'] * 100:+.1f}]")
    rob = " | ".join(_f(r.get(f"robust_accuracy_eps{e}"), 100) for e in eps)
    lp = _f(r.get("label_preservation"), 100)
    status = r["status"] if r["status"] == "ok" else f"FAILED: {r['error'][:120]}"
    md.append(f"| {r['cell']} | {acc} | {diff} | {rob} | {lp + '%' if lp else ''} |"
              f" {_f(r.get('frechet'), 1, 2)} | {_f(r.get('kid'), 1, 3)} |"
              f" {_f(r.get('cost_image_steps'), 1e-6, 2)} |"
              f" {status} |")
  return md + ["", "Label preservation: share of an arm's generated images that the oracle"
               " assigns the label the arm gave them (for arms without generated images: the"
               " real labeled set). Fréchet: distance between oracle features of those images"
               f" and of real test images; {_frechet_text(config)}. KID: the kernel"
               " distance in the same features, whose expectation does not depend on the set's"
               " size (Bińkowski et al. 2018). Cost: images through a gradient step per seed"
               " (generation or pretraining + classifier training).", ""]


def _protocol(protocol) -> list[str]:
  if not protocol:
    return []
  frozen = (f"frozen on {protocol['frozen']} before its confirmation on fresh seeds"
            if protocol.get("frozen") else "not the frozen protocol: exploratory")
  return [f"Protocol version {protocol['version']}, digest `{protocol['digest']}` (its rules,"
          f" thresholds, placebos and arm-defining config; not its seeds): {frozen}"
          " (docs/protocol.md).", ""]


def _placebos(placebos) -> list[str]:
  """Each rule run on arms for which its claim must not hold."""
  if not placebos:
    return []
  md = ["## Placebo checks", "",
        "Each rule run with arms for which its claim must not hold in the roles of the arms"
        " it tests. A placebo's verdict must not be *supported*: a rule that a placebo"
        " satisfies does not test its claim.", "",
        "| claim | N | placebo | why it must not hold | verdict | passes |", "|---|---|---|---|---|---|"]
  for p in placebos:
    md.append(f"| {p['claim']} | {p['budget']} | {p['placebo']} | {p['why']} | {p['verdict']} |"
              f" {'yes' if p['passes'] else '**NO: the rule accepts a placebo**'} |")
  return md + [""]


def _dreamers(dreamers, verdicts) -> list[str]:
  """The Deep Dream claims under each dreamer, side by side, and where they differ."""
  rows = [(b, d, v) for b, vs in (dreamers or {}).items() for d, v in vs]
  if not rows:
    return []
  small = {(v.budget, v.claim): v for vs in verdicts.values() for v in vs}
  md = ["## The Deep Dream claims under another dreamer", "",
        "The same rules with the other dreamer's arms in the dream's roles (the small"
        " dreamer is each seed's own baseline classifier).", "",
        "| claim | N | dreamer | verdict | the seeds' own classifier | numbers |",
        "|---|---|---|---|---|---|"]
  differ = []
  for b, d, v in rows:
    own = small.get((b, v.claim))
    md.append(f"| {v.claim} | {b} | {d} | **{v.verdict}** | {own.verdict if own else ''} |"
              f" {v.numbers} |")
    if own and own.verdict != v.verdict:
      differ.append(f"{v.claim} at N = {b} ({d}: {v.verdict}; own classifier: {own.verdict})")
  md += ["", "Where the dreamers differ: " + ("; ".join(differ) if differ else "nowhere") + ".",
         ""]
  return md


def markdown(config, workdir, records, cells, oracle, verdicts, exchange, quality, figs,
             rerun=(), placebos=(), protocol=None, dreamers=None, fuller=()) -> str:
  primary = int(config.primary_budget)
  md = _header(config, workdir, records, cells, oracle, primary)
  md += _protocol(protocol)
  md += _claims(verdicts, primary, config.verdict_margin, exchange,
                tables.generator_variance(cells))
  md += fuller_lib.lines(fuller)
  md += _dreamers(dreamers, verdicts)
  md += _placebos(placebos)
  md += _exchange(exchange, primary)
  md += _instrument(config, oracle)
  md += _quality(quality, config.quality_gate)
  md += _arms(tables.summary_rows(records), cells, config)
  if figs:
    md += ["## Figures", ""]
    for name, rel in figs.items():
      md += [f"### {TITLES[name]}", "", f"![{TITLES[name]}]({rel})", ""]
  failed = [r for r in records if r.get("status") != "ok"]
  if failed:
    md += ["## Failed cells", ""] + [f"- `{r['cell']}`: {r.get('error', '')}" for r in failed] + [""]
  if rerun:
    md += ["## Cells rerun", "", "These cells failed in an earlier run and were run again"
           " (`--retry_failed`); the report reads the rerun.", ""]
    md += [f"- `{r['cell']}` failed with: {r.get('error', '')}" for r in rerun] + [""]
  md += ["## Arms of this study", ""]
  md += [f"- `{a.name}` ({a.group}): {a.doc}" for a in arms_lib.REGISTRY.values()
         if a.name in tuple(config.arms)]
  rules = rules_v1.RULES if int(config.get("protocol_version", 1)) == 1 else claims.RULES
  md += ["", "## Verdict rules", ""] + [f"- **{c}**: {rule}" for c, rule in rules.items()]
  md += ["", f"What changed in the rules, and why: {RULE_CHANGES}", ""]
  if int(config.get("protocol_version", 1)) >= 2:
    md += [f"What protocol version 2 changed: {RULE_CHANGES_V2}", ""]
  return "\n".join(md) + "\n"
