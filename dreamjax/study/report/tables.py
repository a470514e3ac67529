"""The numbers of a report, from results.jsonl: per-cell rows, exchange rates, quality.

Pure functions of the records, so ``--report_only`` and the tests rebuild
exactly what a run reported.
"""

import csv
import io
from typing import Any

import numpy as np

from dreamjax import power, stats
from dreamjax.plumbing import fileio
from dreamjax.configs import arms as arms_lib
from dreamjax.study import evidence
from dreamjax.study import records as records_lib


def main_cells(records) -> dict[int, dict[str, dict]]:
  """Budget -> arm -> record, for the main cells (the alignment included)."""
  out: dict[int, dict[str, dict]] = {}
  for r in records:
    if "budget" in r and (r.get("main", True) or r.get("arm") == "baseline"):
      out.setdefault(int(r["budget"]), {})[r["arm"]] = r
  return out


def ok(r) -> bool:
  return bool(r) and r.get("status") == "ok"


def mean(values) -> float | None:
  return float(np.mean(values)) if values else None


def summary_rows(records) -> list[dict[str, Any]]:
  """One row per cell: accuracy (mean, CI, paired Δ vs the budget's baseline),
  robust accuracy per ε, quality of the generated set, cost."""
  baselines = {int(r["budget"]): r for r in records
               if r.get("arm") == "baseline" and ok(r) and "budget" in r}
  rows = []
  keyed = [r for r in records if "budget" in r and r.get("arm") != "alignment"]
  for r in sorted(keyed, key=lambda r: (int(r["budget"]), not r.get("main", True),
                                        arms_lib.sort_key(r["arm"]), r.get("copies", 1))):
    row = {"cell": r["cell"], "arm": r["arm"], "budget": r["budget"],
           "copies": r.get("copies", 1), "main": r.get("main", True), "status": r["status"],
           "error": r.get("error", "")}
    base = baselines.get(int(r["budget"]))
    if ok(r):
      iv = stats.t_interval(r["test_accuracy"])
      row.update(test_accuracy_mean=iv.mean, test_accuracy_ci95=iv.half_width if iv.n > 1 else None)
      if base and r["arm"] != "baseline":
        d = stats.paired_difference(r["test_accuracy"], base["test_accuracy"])
        row.update(test_accuracy_vs_baseline=d.mean, test_accuracy_vs_baseline_lo=d.lo,
                   test_accuracy_vs_baseline_hi=d.hi)
      for eps, v in (r.get("robust_accuracy") or {}).items():
        row[f"robust_accuracy_eps{eps}"] = mean(v)
      row["cas"] = mean(r.get("cas"))
      for k in ("label_preservation", "frechet", "kid", "train_seconds", "strength",
                "num_generated", "source"):
        row[k] = r.get(k)
      row["gen_seconds"] = records_lib.generation_seconds(r) if "gen_seconds" in r else None
      cost = r.get("cost") or {}
      row["cost_image_steps"] = (cost.get("gen_image_steps", 0) + cost.get("train_image_steps", 0)
                                 if cost else None)
    rows.append(row)
  return rows


def write_csv(path: str, rows) -> None:
  keys: list[str] = []
  for row in rows:
    keys += [k for k in row if k not in keys]
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=keys)
  w.writeheader()
  for row in rows:
    w.writerow({k: ("" if v is None else v) for k, v in row.items()})
  fileio.write_text(path, buf.getvalue())


def exchange(records, budget: int, label_factors=(2.0,)) -> dict[str, Any]:
  """The exchange-rate data of one budget N.

  Returns ``{"budgets": [N, ...], "baseline": [[per seed] per budget],
  "arms": {arm: {M: [per seed]}}, "equivalent": {arm: {M: LabelEquivalent}}}``:
  the baseline's accuracy at more real labels and each stored-image arm's at
  each M, and what each is worth in real labels (:func:`power.real_label_equivalent`).
  """
  top = budget * max([1.0, *map(float, label_factors)]) * 1.05  # rounding to whole classes
  base = {r["budget"]: r for r in records if r.get("arm") == "baseline" and ok(r)
          and budget <= r["budget"] <= top}
  budgets = sorted(base)
  if budget not in base:
    return {}
  arms: dict[str, dict[int, list[float]]] = {}
  for r in records:
    if ok(r) and r.get("budget") == budget and r.get("arm") != "baseline" \
        and "copies" in r and "@" not in r["arm"]:
      arms.setdefault(r["arm"], {})[int(r["copies"])] = r["test_accuracy"]
  arms = {a: v for a, v in arms.items() if len(v) > 1}  # only arms swept over M
  curve = [base[b]["test_accuracy"] for b in budgets]
  equivalent = {}
  if len(budgets) > 1:
    for arm, by_m in arms.items():
      equivalent[arm] = {m: power.real_label_equivalent(budgets, curve, acc)
                         for m, acc in sorted(by_m.items())}
  return {"budgets": budgets, "baseline": curve, "arms": arms, "equivalent": equivalent}


def generator_quality(cells: dict[str, dict], gate: float) -> list[dict[str, Any]]:
  """Label preservation, Fréchet distance, KID and CAS of every generator arm, gated.

  An arm with several pool generators also gets a row per generator
  (``generators``: the mean over the seeds it served), and passes only if its
  mean and each generator pass.
  """
  out = []
  for arm in sorted(cells, key=arms_lib.sort_key):
    r = cells[arm]
    if arm == "alignment" or arms_lib.base_name(arm) not in arms_lib.REGISTRY:
      continue
    if arms_lib.get(arm).group != "generator" or not ok(r):
      continue
    lp = r.get("label_preservation")
    gens = [{**g, "passes": g.get("label_preservation") is not None
             and g["label_preservation"] >= gate} for g in evidence.pool_generators(r)]
    out.append({"arm": arm, "label_preservation": lp, "frechet": r.get("frechet"),
                "kid": r.get("kid"), "cas": mean(r.get("cas")),
                "passes": lp is not None and lp >= gate and all(g["passes"] for g in gens),
                "generators": gens, "history": r.get("generator_history") or []})
  return out


def generator_variance(cells: dict[str, dict]) -> dict[str, tuple[int, int, int]]:
  """Arm -> (pool generators its seeds read, G configured, seeds), for the cells that
  record them (none made before there were several)."""
  out = {}
  for arm in sorted(cells, key=arms_lib.sort_key):
    g = (cells[arm] or {}).get("pool_generators") if ok(cells[arm]) else None
    if g and g.get("generators"):
      out[arm] = (len(g["generators"]), int(g.get("of", len(g["generators"]))),
                  len(g.get("per_seed") or ()))
  return out
