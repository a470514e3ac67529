"""REPORT.md, summary.csv and figures from a study's results.jsonl."""

import csv
import datetime
import io
import json
import os
import platform
from typing import Any

import numpy as np

from dreamjax import fileio
from dreamjax.figures import charts
from dreamjax.study import arms as arms_lib
from dreamjax import stats
from dreamjax.study import claims

FIGURES = "figures"
_sort_key = arms_lib.sort_key


def _by_budget(records):
  out: dict[int, dict[str, dict]] = {}
  for r in records:
    if "budget" in r:
      out.setdefault(int(r["budget"]), {})[r["arm"]] = r
  return out


def _interval(r, metric):
  if not r or r.get("status") != "ok" or r.get(metric) is None:
    return None
  return stats.t_interval(r[metric])


def summary_rows(records) -> list[dict[str, Any]]:
  rows = []
  for budget, cells in sorted(_by_budget(records).items()):
    base = cells.get("baseline")
    for arm in sorted(cells, key=_sort_key):
      r = cells[arm]
      if arm == "alignment":
        continue
      row = {"cell": r["cell"], "arm": arm, "budget": budget, "status": r["status"],
             "error": r.get("error", "")}
      for metric in ("test_accuracy", "robust_accuracy"):
        iv = _interval(r, metric)
        row[f"{metric}_mean"] = iv.mean if iv else None
        row[f"{metric}_ci95"] = iv.half_width if iv and iv.n > 1 else None
        if iv and base and base.get("status") == "ok" and arm != "baseline":
          d = stats.paired_difference(r[metric], base[metric])
          row[f"{metric}_vs_baseline"] = d.mean
          row[f"{metric}_vs_baseline_lo"] = d.lo
          row[f"{metric}_vs_baseline_hi"] = d.hi
      for k in ("label_preservation", "frechet", "gen_seconds", "train_seconds", "strength",
                "num_generated", "source"):
        row[k] = r.get(k)
      rows.append(row)
  return rows


def _write_csv(path, rows):
  keys = []
  for row in rows:
    keys += [k for k in row if k not in keys]
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=keys)
  w.writeheader()
  for row in rows:
    w.writerow({k: ("" if v is None else v) for k, v in row.items()})
  fileio.write_text(path, buf.getvalue())


# Smallest gain (accuracy points) read as "a few points" from classical augmentation.
CLASSICAL_ANCHOR_PP = 1.0

# Largest rise of validation accuracy (points, mean over seeds) over an arm's last
# evaluation interval that still counts as converged on its training budget.
CONVERGED_PP = 1.0


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
               f" (threshold {threshold_pp:g} pp; curves in the figures).")
  if rising:
    listed = ", ".join(f"`{a}` {d:+.1f} pp" for a, d in sorted(rising.items(), key=_sort_item))
    out.append(f"- **Still rising at the last step:** {listed} over the last evaluation"
               f" interval; these arms may gain from more than {steps} training steps"
               " (`train.steps`), so their accuracy here is a lower bound.")
  return out


def _sort_item(item):
  return _sort_key(item[0])


def _sanity(oracle, base, budget, classical=None) -> list[str]:
  """Where the instrument and the baseline land, beside published anchors."""
  out = []
  if oracle and oracle.get("status") == "ok":
    acc = float(np.mean(oracle["test_accuracy"]))
    if 0.876 <= acc <= 0.935:
      out.append(f"- Oracle {acc * 100:.1f}%: inside the 87.6–92.5% that 2-conv CNNs reach on"
                 " all of Fashion-MNIST (Zalando's benchmark table), so it is a fair"
                 " instrument.")
    else:
      out.append(f"- Oracle {acc * 100:.1f}%: outside the 87.6–92.5% of 2-conv CNNs on"
                 " Fashion-MNIST (Zalando's benchmark table). This preset trains it only"
                 " briefly (or the dataset is not Fashion-MNIST); label-preservation and"
                 " Fréchet numbers are measured with this weaker instrument.")
  if base and base.get("status") == "ok":
    acc = float(np.mean(base["test_accuracy"]))
    out.append(f"- Baseline {acc * 100:.1f}% with N = {budget} labels: below the oracle by"
               f" {((float(np.mean(oracle['test_accuracy'])) if oracle else acc) - acc) * 100:.1f} pp,"
               " the gap augmentation could close. Published anchors for the low-label regime"
               " expect classical augmentation to gain a few points and generators trained on"
               " the same small set about nothing (Ravuri & Vinyals 2019).")
  ok = lambda r: r and r.get("status") == "ok" and len(r["test_accuracy"]) >= 2
  if ok(base) and ok(classical) and len(classical["test_accuracy"]) == len(base["test_accuracy"]):
    gain = stats.paired_difference(classical["test_accuracy"], base["test_accuracy"])
    text = (f"{gain.mean * 100:+.1f} pp [{gain.lo * 100:+.1f}, {gain.hi * 100:+.1f}]")
    if gain.mean * 100 >= CLASSICAL_ANCHOR_PP:
      out.append(f"- Classical augmentation gains {text} over the baseline: in line with the"
                 " few points the literature expects.")
    else:
      out.append(f"- **Mismatch with the literature:** classical augmentation gains {text} over"
                 f" the baseline, below the few points (≥ {CLASSICAL_ANCHOR_PP:g} pp) it is"
                 " expected to bring. Here it is one offline transformed copy per labeled image"
                 " (M = copies), trained for the same steps as every arm, so the classifier sees"
                 " each transformed image only a few times; on-the-fly augmentation, a new"
                 " transform every batch (`experiments/train_classifier.py"
                 " --config.augment=classical`), is its stronger form. Claims that compare with"
                 " `classical` (C4, C5) compare with this weaker form.")
  return out


def _workdir_record(workdir: str) -> dict[str, Any]:
  """The versions and data the workdir recorded when it was made (study_config.json)."""
  try:
    with open(os.path.join(workdir, "study_config.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _machine() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return (f"{platform.machine()} {os.cpu_count()} CPU cores, JAX {jax.__version__} on"
          f" {jax.devices()[0].platform}")


def write_report(config, workdir: str, train_images=None) -> dict[str, str]:
  records = fileio.read_jsonl(os.path.join(workdir, "results.jsonl"))
  rows = summary_rows(records)
  _write_csv(os.path.join(workdir, "summary.csv"), rows)
  budgets = _by_budget(records)
  primary = int(config.primary_budget)
  cells = budgets.get(primary, {})
  oracle = next((r for r in records if r["cell"] == "oracle"), None)
  alignment = cells.get("alignment")
  if alignment and alignment.get("status") == "ok":
    alignment = {"status": "ok", "logit": alignment["logit"], "layer": alignment["layer_objective"]}
  verdicts = claims.all_verdicts({a: c for a, c in cells.items() if a != "alignment"}, alignment,
                                 margin=config.verdict_margin)
  if train_images is None:
    try:
      from dreamjax import data as data_lib  # pylint: disable=g-import-not-at-top
      train_images = data_lib.load_dataset(config.dataset, config.data_dir or None).train_images
    except Exception:  # noqa: BLE001 - the grid then shows generated images alone
      train_images = None
  figdir = os.path.join(workdir, FIGURES)
  os.makedirs(figdir, exist_ok=True)
  figs = {}
  plain = {a: c for a, c in cells.items() if a != "alignment"}
  for name, fn in (("accuracy", lambda p: charts.accuracy(plain, p, _sort_key, arms_lib.color)),
                   ("sweep", lambda p: charts.sweep(plain, p)),
                   ("robust", lambda p: charts.robust(plain, p, arms_lib.color)),
                   ("frechet", lambda p: charts.frechet(plain, p)),
                   ("curves", lambda p: charts.curves(plain, p, _sort_key)),
                   ("samples", lambda p: charts.samples(workdir, plain, train_images, p,
                                                        _sort_key))):
    p = os.path.join(figdir, f"{name}.png")
    if fn(p):
      figs[name] = f"{FIGURES}/{name}.png"

  seconds = sum(r.get("timing", {}).get("cell_seconds", r.get("timing", {}).get("train_seconds", 0))
                for r in records)
  md = [f"# dreamjax study report ({config.dataset}, N = {primary})", "",
        f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on {_machine()}."
        f" Seeds: {config.num_seeds}; label budgets: {tuple(config.budgets)}; {config.train.steps}"
        f" training steps per arm (batch {config.train.batch_size}); M = {config.copies} generated"
        f" image(s) per labeled image. Sum of cell times: {seconds / 60:.1f} min.", ""]
  made = _workdir_record(workdir)
  if made:
    v, d = made.get("versions", {}), made.get("data", {})
    md += [f"Computed with {', '.join(f'{k} {x}' for k, x in v.items() if k != 'xla_flags')}"
           f"; XLA flags `{v.get('xla_flags', '')}`. Data: {d.get('name')} from"
           f" `{d.get('source')}` (sha256 {str(d.get('digest'))[:16]}…).", ""]
  if oracle and oracle.get("status") == "ok":
    md.append(f"Oracle (all training labels, measuring instrument only): test accuracy"
              f" {np.mean(oracle['test_accuracy']) * 100:.1f}%.")
  base = cells.get("baseline")
  if base and base.get("status") == "ok":
    md.append(f"Baseline (N = {primary} labels): test accuracy"
              f" {stats.t_interval(base['test_accuracy']).fmt()}% (mean ± 95% CI).")
  md += ["", "### Against the literature", ""] + _sanity(oracle, base, primary,
                                                        cells.get("classical"))
  md += convergence_notes({a: c for a, c in cells.items() if a != "alignment"},
                          int(config.train.steps))
  md += ["", "## Claims", "", "| claim | arms | numbers | verdict |", "|---|---|---|---|"]
  for v in verdicts:
    md.append(f"| **{v.claim}** {v.text} | {v.arms} | {v.numbers} | **{v.verdict}** |")
  md += ["", "Intervals are 95% Student-t intervals over seeds; accuracy differences are"
         f" paired by seed (pp = percentage points). Margin = {config.verdict_margin * 100:.0f} pp.", ""]
  md += ["## Arms", "", "| arm | N | test acc % | Δ vs baseline (pp) | PGD robust acc % |"
         " label preservation | Fréchet | gen s | train s | status |",
         "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    def f(x, scale=1.0, d=1):
      return "" if x is None else f"{x * scale:.{d}f}"
    acc = (f"{f(r.get('test_accuracy_mean'), 100)} ± {f(r.get('test_accuracy_ci95'), 100)}"
           if r.get("test_accuracy_mean") is not None else "")
    diff = ""
    if r.get("test_accuracy_vs_baseline") is not None:
      diff = (f"{r['test_accuracy_vs_baseline'] * 100:+.1f} [{r['test_accuracy_vs_baseline_lo'] * 100:+.1f},"
              f" {r['test_accuracy_vs_baseline_hi'] * 100:+.1f}]")
    status = r["status"] if r["status"] == "ok" else f"FAILED: {r['error'][:120]}"
    md.append(f"| {r['arm']} | {r['budget']} | {acc} | {diff} | {f(r.get('robust_accuracy_mean'), 100)} |"
              f" {f(r.get('label_preservation'), 100) + '%' if r.get('label_preservation') is not None else ''} | {f(r.get('frechet'), 1, 2)} |"
              f" {f(r.get('gen_seconds'), 1, 0)} | {f(r.get('train_seconds'), 1, 0)} | {status} |")
  md += ["", "Label preservation: share of an arm's generated images that the oracle assigns"
         " the label the arm gave them (for arms without generated images: the real labeled set)."
         " Fréchet: distance between oracle features of those images and of real test images.", ""]
  titles = {"accuracy": "Accuracy per arm", "sweep": "Accuracy vs dream strength",
            "robust": "Clean vs robust accuracy", "frechet": "Fréchet distance vs accuracy change",
            "curves": "Validation curves (convergence)", "samples": "Samples per arm"}
  if figs:
    md += ["## Figures", ""]
    for name, rel in figs.items():
      md += [f"### {titles[name]}", "", f"![{titles[name]}]({rel})", ""]
  failed = [r for r in records if r.get("status") != "ok"]
  if failed:
    md += ["## Failed cells", ""] + [f"- `{r['cell']}`: {r.get('error', '')}" for r in failed] + [""]
  md += ["## Verdict rules", ""] + [f"- **{c}**: {rule}" for c, rule in claims.RULES.items()] + [""]
  report = os.path.join(workdir, "REPORT.md")
  fileio.write_text(report, "\n".join(md) + "\n")
  fileio.write_json(os.path.join(workdir, "claims.json"), [v.to_dict() for v in verdicts])
  return {"report": report, "summary": os.path.join(workdir, "summary.csv"), **figs}
