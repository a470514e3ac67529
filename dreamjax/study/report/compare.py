"""Two runs of a study side by side: what one change does to each cell and each claim.

A sensitivity check is a second study on the same data and seeds with one thing
changed: more training steps, another machine, another version of a library.
:func:`compare` reads two study folders (a workdir, or a copy published with
``--publish``: ``results.jsonl``, ``claims.json``, ``study_config.json``) and
pairs each cell's seeds across them. Seed ``s`` draws the same labeled subset
and initial weights in both runs, so the change of a cell's accuracy is a
paired difference with a t-interval, like an arm against its baseline.

``dreamjax compare --a=docs/results/quick --b=runs/steps1200 --out=FOLDER``
writes ``COMPARISON.md``, ``comparison.json`` and a figure per label budget
to ``FOLDER``.
"""

import json
import math
import os
from typing import Any

from dreamjax import stats
from dreamjax.plumbing import fileio
from dreamjax.errors import ConfigError
from dreamjax.configs import arms as arms_lib
from dreamjax.figures import charts
from dreamjax.study import records as records_lib
from dreamjax.study.report import tables

MARKDOWN = "COMPARISON.md"
JSON = "comparison.json"
FIGURE = "comparison.png"


def load(folder: str) -> dict[str, Any]:
  """A study folder's records (the latest of each cell), claims, config and runs."""
  need = ("results.jsonl", "study_config.json")
  missing = [n for n in need if not os.path.exists(os.path.join(folder, n))]
  if missing:
    raise ConfigError(f"{folder} is not a finished study (no {', '.join(missing)}); pass a"
                      " study workdir or a folder written by `dreamjax study --report_only"
                      " --publish`.")
  claims_path = os.path.join(folder, "claims.json")
  if not os.path.exists(claims_path):
    raise ConfigError(f"{folder} has no claims.json: write its report first (`dreamjax study"
                      f" --report_only --workdir {folder}` with the study's --config).")
  with open(os.path.join(folder, "study_config.json")) as f:
    study = json.load(f)
  study["config"] = records_lib.upgrade_config(study["config"])
  with open(claims_path) as f:
    claims = json.load(f)
  latest = {r["cell"]: r for r in fileio.read_jsonl(os.path.join(folder, "results.jsonl"),
                                                     repair=False)}
  return {"folder": folder, "study": study, "claims": claims, "records": latest,
          "sessions": records_lib.read_sessions(folder)}


def _flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(cfg, dict):
    return {prefix: cfg}
  out = {}
  for k, v in cfg.items():
    out.update(_flat(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
  return out


def config_changes(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
  """``(key, a value, b value)`` for each config field the two studies differ in."""
  fa, fb = _flat(a["study"]["config"]), _flat(b["study"]["config"])
  return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _check_paired(a: dict, b: dict) -> int:
  """The number of seeds both studies ran; refuses studies whose seeds are not the same draws."""
  da, db = a["study"].get("data", {}), b["study"].get("data", {})
  if da.get("digest") and db.get("digest") and da["digest"] != db["digest"]:
    raise ConfigError(f"{a['folder']} and {b['folder']} were made from different data (digest"
                      f" {da['digest'][:12]}… vs {db['digest'][:12]}…): their seeds do not draw"
                      " the same images, so no cell can be paired.")
  ca, cb = a["study"]["config"], b["study"]["config"]
  for key in ("dataset", "val_size"):
    if ca.get(key) != cb.get(key):
      raise ConfigError(f"{a['folder']} and {b['folder']} differ in {key} ({ca.get(key)!r} vs"
                        f" {cb.get(key)!r}): a seed draws different labeled images in each, so"
                        " no cell can be paired.")
  return min(int(ca["num_seeds"]), int(cb["num_seeds"]))


def _interval(iv: stats.Interval) -> dict[str, float] | None:
  return iv.to_dict() if iv.n and math.isfinite(iv.mean) else None


def compare(folder_a: str, folder_b: str) -> dict[str, Any]:
  """Cells and claims of study ``b`` against study ``a``, seeds paired across the two."""
  a, b = load(folder_a), load(folder_b)
  k = _check_paired(a, b)
  cells = []
  def order(key):
    r = a["records"][key]
    return ("budget" not in r, r.get("budget", 0), arms_lib.sort_key(r.get("arm", "")),
            r.get("copies", 1), key)

  for key in sorted(set(a["records"]) & set(b["records"]), key=order):
    ra, rb = a["records"][key], b["records"][key]
    if not (tables.ok(ra) and tables.ok(rb) and ra.get("test_accuracy")
            and rb.get("test_accuracy")):
      continue
    xa, xb = ra["test_accuracy"][:k], rb["test_accuracy"][:k]
    row = {"cell": key, "arm": ra.get("arm"), "budget": ra.get("budget"),
           "copies": ra.get("copies", 1), "a": _interval(stats.t_interval(xa)),
           "b": _interval(stats.t_interval(xb)),
           "change": _interval(stats.paired_difference(xb, xa))}
    for side, run, x in (("a", a, xa), ("b", b, xb)):
      base = run["records"].get(f"N{ra.get('budget')}/baseline")
      if ra.get("arm") != "baseline" and tables.ok(base) and "budget" in ra:
        row[f"{side}_vs_baseline"] = _interval(stats.paired_difference(
            x, base["test_accuracy"][:k]))
    cells.append(row)
  if not cells:
    raise ConfigError(f"{folder_a} and {folder_b} have no finished cell in common.")
  verdicts = {}
  for side, run in (("a", a), ("b", b)):
    for v in run["claims"]:
      verdicts.setdefault((v["claim"], int(v["budget"])), {"claim": v["claim"],
                                                            "budget": int(v["budget"]),
                                                            "text": v.get("text", "")})[side] = v
  claims = [{"claim": c["claim"], "budget": c["budget"], "text": c["text"],
             "a": c["a"]["verdict"], "b": c["b"]["verdict"],
             "a_numbers": c["a"].get("numbers"), "b_numbers": c["b"].get("numbers")}
            for _, c in sorted(verdicts.items()) if "a" in c and "b" in c]
  return {"a": folder_a, "b": folder_b, "seeds": k, "config_changes": config_changes(a, b),
          "runs": {"a": _runs(a), "b": _runs(b)}, "cells": cells, "claims": claims}


def _runs(run: dict) -> list[dict[str, Any]]:
  return [{"started": s.get("started"), "seconds": s.get("seconds"), "status": s.get("status"),
           "cpu": s.get("machine", {}).get("cpu"), "device": s.get("machine", {}).get("device"),
           "command": s.get("command")} for s in run["sessions"]]


def _pp(iv: dict | None, signed: bool = True) -> str:
  if not iv:
    return "–"
  sign = "+" if signed else ""
  if iv["n"] < 2 or not math.isfinite(iv["hi"]):
    return f"{iv['mean'] * 100:{sign}.1f}"
  return f"{iv['mean'] * 100:{sign}.1f} [{iv['lo'] * 100:{sign}.1f}, {iv['hi'] * 100:{sign}.1f}]"


def _acc(iv: dict | None) -> str:
  return "–" if not iv else f"{iv['mean'] * 100:.1f}"


def markdown(result: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
  """What changed in the config, the claims' verdicts in both runs and every paired cell."""
  lines = [f"# {name_b} against {name_a}", "",
           f"A: `{result['a']}`. B: `{result['b']}`. Seeds 0–{result['seeds'] - 1} of both"
           " runs, paired: a seed draws the same labeled images and initial weights in each.", ""]
  changes = result["config_changes"]
  lines.append("Config fields that differ (A → B): " + (
      "; ".join(f"`{k}` {va!r} → {vb!r}" for k, va, vb in changes) if changes else "none") + ".")
  lines.append("")
  for side, name in (("a", name_a), ("b", name_b)):
    for s in result["runs"][side]:
      minutes = f"{s['seconds'] / 60:.1f} min" if s.get("seconds") else "time not recorded"
      lines.append(f"- {name}: {s.get('started')}, {s.get('status')}, {minutes} on {s.get('cpu')}"
                   f" ({s.get('device')}); `{s.get('command')}`")
  lines += ["", "## Claims", "", f"| claim | N | {name_a} | {name_b} |", "|---|---|---|---|"]
  for c in result["claims"]:
    changed = c["a"] != c["b"] and not any(str(v).startswith("missing") for v in (c["a"], c["b"]))
    mark = (lambda v: f"**{v}**") if changed else (lambda v: str(v))
    lines.append(f"| {c['claim']} | {c['budget']} | {mark(c['a'])} | {mark(c['b'])} |")
  lines += ["", "Verdicts in bold differ between the runs (a claim missing from either run is not"
            " compared).", "",
            "## Cells", "",
            f"Test accuracy (%, mean over seeds); {name_b} − {name_a}: the paired change with its"
            " 95% t-interval (pp); Δ: the cell against its budget's baseline in the same run,"
            " paired by seed (pp).", "",
            f"| cell | {name_a} | {name_b} | {name_b} − {name_a} | Δ {name_a} | Δ {name_b} |",
            "|---|---|---|---|---|---|"]
  for r in result["cells"]:
    lines.append(f"| {r['cell']} | {_acc(r['a'])} | {_acc(r['b'])} | {_pp(r['change'])} |"
                 f" {_pp(r.get('a_vs_baseline'))} | {_pp(r.get('b_vs_baseline'))} |")
  return "\n".join(lines) + "\n"


def figure(result: dict[str, Any], path: str, name_a: str = "A", name_b: str = "B",
           budget: int | None = None) -> bool:
  """Each arm's paired change against its baseline in both runs (one budget, M = 1)."""
  rows = [r for r in result["cells"] if r.get("a_vs_baseline") and r.get("b_vs_baseline")
          and r.get("copies", 1) == 1 and (budget is None or r.get("budget") == budget)]
  if budget is None and rows:
    budget = rows[0]["budget"]
    rows = [r for r in rows if r.get("budget") == budget]
  if not rows:
    return False
  rows.sort(key=lambda r: arms_lib.sort_key(r["arm"]))
  series = {name_a: [r["a_vs_baseline"] for r in rows],
            name_b: [r["b_vs_baseline"] for r in rows]}
  charts.paired_forest([r["arm"] for r in rows], series, path,
                       xlabel=f"test accuracy − baseline (pp) at N = {budget}, paired by seed,"
                       " 95% CI")
  return True


def figure_name(budget: int) -> str:
  """The figure of one budget when a comparison has several."""
  stem, ext = os.path.splitext(FIGURE)
  return f"{stem}_N{budget}{ext}"


def write(folder_a: str, folder_b: str, out: str, name_a: str = "A",
          name_b: str = "B") -> dict[str, str]:
  """Writes COMPARISON.md, comparison.json and the figures to ``out``; returns their paths.

  One figure, ``comparison.png``, when the runs share one budget; one per budget,
  ``comparison_N{budget}.png``, when they share several.
  """
  result = compare(folder_a, folder_b)
  os.makedirs(out, exist_ok=True)
  paths = {"markdown": os.path.join(out, MARKDOWN), "json": os.path.join(out, JSON)}
  text = markdown(result, name_a, name_b)
  budgets = sorted({r["budget"] for r in result["cells"]
                    if r.get("a_vs_baseline") and r.get("b_vs_baseline")})
  for budget in budgets:
    # One budget keeps the plain name (links to it predate studies of several budgets).
    name = FIGURE if len(budgets) == 1 else figure_name(budget)
    if figure(result, os.path.join(out, name), name_a, name_b, budget=budget):
      paths["figure" if len(budgets) == 1 else f"figure_N{budget}"] = os.path.join(out, name)
      text += f"\n![Δ against the baseline in both runs, N = {budget}]({name})\n"
  fileio.write_text(paths["markdown"], text)
  fileio.write_json(paths["json"], result)
  return paths

