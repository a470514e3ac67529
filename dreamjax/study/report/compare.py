"""Two runs of a study side by side: what one change does to each cell and each claim.

A sensitivity check is a second study on the same data and seeds with one thing
changed: more training steps, another machine, another version of a library.
:func:`compare` reads two study folders (a workdir, or a copy published with
``--publish``: ``results.jsonl``, ``claims.json``, ``study_config.json``) and
pairs each cell's seeds across them. Seed ``s`` draws the same labeled subset
and initial weights in both runs, so the change of a cell's accuracy is a
paired difference with a t-interval, like an arm against its baseline.

A confirmation run is the same study on fresh seeds (``first_seed``): its seeds
share no draw with the first run's, so each cell's change is a difference of
means with a Welch interval, and each claim's verdict is held to the first run's
by its agreement: the same verdict, and for each interval the rule decided on,
the same sign and overlapping intervals. The protocol digests of both runs are
printed beside it: a confirmation is of one digest.

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
  protocol = None
  if os.path.exists(os.path.join(folder, "protocol.json")):
    with open(os.path.join(folder, "protocol.json")) as f:
      protocol = {k: v for k, v in json.load(f).items() if k in ("version", "digest", "frozen")}
  return {"folder": folder, "study": study, "claims": claims, "records": latest,
          "sessions": records_lib.read_sessions(folder), "protocol": protocol}


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


def seeds(run: dict) -> list[int]:
  """The seeds a study ran, in the order of its records' per-seed lists."""
  config = run["study"]["config"]
  first = int(config.get("first_seed", 0))
  return list(range(first, first + int(config["num_seeds"])))


def _check_same_study(a: dict, b: dict) -> tuple[list[int], list[int]]:
  """Where each common seed sits in ``a``'s and ``b``'s per-seed lists (empty when the
  runs share no seed: a confirmation on fresh seeds); refuses studies of other data."""
  da, db = a["study"].get("data", {}), b["study"].get("data", {})
  if da.get("digest") and db.get("digest") and da["digest"] != db["digest"]:
    raise ConfigError(f"{a['folder']} and {b['folder']} were made from different data (digest"
                      f" {da['digest'][:12]}… vs {db['digest'][:12]}…): their seeds do not draw"
                      " the same images, so no cell can be paired, and one does not confirm"
                      " the other.")
  ca, cb = a["study"]["config"], b["study"]["config"]
  for key in ("dataset", "val_size"):
    if ca.get(key) != cb.get(key):
      raise ConfigError(f"{a['folder']} and {b['folder']} differ in {key} ({ca.get(key)!r} vs"
                        f" {cb.get(key)!r}): a seed draws different labeled images in each, so"
                        " no cell can be paired, and one does not confirm the other.")
  sa, sb = seeds(a), seeds(b)
  common = [s for s in sa if s in sb]
  return [sa.index(s) for s in common], [sb.index(s) for s in common]


def _pick(values: list, index: list[int] | None) -> list:
  return list(values) if index is None else [values[i] for i in index if i < len(values)]


def _class(verdict: str) -> str:
  """A verdict without its reason: "inconclusive (CI crosses zero)" -> "inconclusive"."""
  return str(verdict).split(" (")[0].strip()


def agreement(va: dict, vb: dict) -> dict[str, Any] | None:
  """How verdict ``vb`` agrees with ``va`` (one claim at one budget): the same verdict, and
  over the intervals both were decided on, how many have the same sign and how many
  overlap; None when either is missing."""
  if any(_class(v["verdict"]) == "missing" for v in (va, vb)):
    return None
  ea, eb = va.get("effects") or {}, vb.get("effects") or {}
  finite = lambda iv: iv and math.isfinite(iv.get("mean", float("nan")))
  shared = [k for k in ea if k in eb and finite(ea[k]) and finite(eb[k])]
  sign = lambda x: (x > 0) - (x < 0)
  same_sign = [k for k in shared if sign(ea[k]["mean"]) == sign(eb[k]["mean"])]
  overlap = [k for k in shared if ea[k]["lo"] <= eb[k]["hi"] and eb[k]["lo"] <= ea[k]["hi"]]
  return {"same_verdict": _class(va["verdict"]) == _class(vb["verdict"]),
          "intervals": len(shared), "same_sign": len(same_sign), "overlap": len(overlap),
          "sign_differs": [k for k in shared if k not in same_sign],
          "disjoint": [k for k in shared if k not in overlap]}


def _interval(iv: stats.Interval) -> dict[str, float] | None:
  return iv.to_dict() if iv.n and math.isfinite(iv.mean) else None


def compare(folder_a: str, folder_b: str) -> dict[str, Any]:
  """Cells and claims of study ``b`` against study ``a``: the seeds both ran paired, or,
  where they share none (a confirmation on fresh seeds), every seed of each unpaired."""
  a, b = load(folder_a), load(folder_b)
  index_a, index_b = _check_same_study(a, b)
  paired = bool(index_a)
  if not paired:  # fresh seeds: every seed of each run, unpaired
    index_a = index_b = None
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
    xa, xb = _pick(ra["test_accuracy"], index_a), _pick(rb["test_accuracy"], index_b)
    change = (stats.paired_difference(xb, xa) if paired and len(xa) == len(xb)
              else stats.unpaired_difference(xb, xa))
    row = {"cell": key, "arm": ra.get("arm"), "budget": ra.get("budget"),
           "copies": ra.get("copies", 1), "a": _interval(stats.t_interval(xa)),
           "b": _interval(stats.t_interval(xb)), "change": _interval(change)}
    for side, run, x, index in (("a", a, xa, index_a), ("b", b, xb, index_b)):
      base = run["records"].get(f"N{ra.get('budget')}/baseline")
      if ra.get("arm") != "baseline" and tables.ok(base) and "budget" in ra:
        xbase = _pick(base["test_accuracy"], index)
        if len(xbase) == len(x):
          row[f"{side}_vs_baseline"] = _interval(stats.paired_difference(x, xbase))
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
             "a_numbers": c["a"].get("numbers"), "b_numbers": c["b"].get("numbers"),
             "agreement": agreement(c["a"], c["b"])}
            for _, c in sorted(verdicts.items()) if "a" in c and "b" in c]
  return {"a": folder_a, "b": folder_b, "paired": paired,
          "seeds": len(index_a) if paired else None,
          "seeds_a": seeds(a), "seeds_b": seeds(b),
          "protocols": {"a": a.get("protocol"), "b": b.get("protocol")},
          "config_changes": config_changes(a, b),
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
  """What changed in the config, the claims' verdicts and agreement in both runs, and
  every common cell's change."""
  span = lambda s: f"{s[0]}–{s[-1]}" if len(s) > 1 else str(s[0])
  paired = result.get("paired", True)
  if paired:
    common = [s for s in result["seeds_a"] if s in result["seeds_b"]]
    seeds_text = (f"The seeds both ran ({span(common)}), paired: a seed draws the same labeled"
                  " images and initial weights in each.")
  else:
    seeds_text = (f"Seeds {span(result['seeds_a'])} of A and {span(result['seeds_b'])} of B: no"
                  " draw in common (B confirms A on fresh seeds), so each cell's change is a"
                  " difference of means with a 95% Welch interval, not paired.")
  lines = [f"# {name_b} against {name_a}", "",
           f"A: `{result['a']}`. B: `{result['b']}`. {seeds_text}", ""]
  protocols = result.get("protocols") or {}
  if protocols.get("a") or protocols.get("b"):
    digest = lambda p: (f"version {p.get('version')}, digest `{p.get('digest')}`" if p
                        else "not recorded")
    same = (protocols.get("a") and protocols.get("b")
            and protocols["a"].get("digest") == protocols["b"].get("digest"))
    # An exploratory run made before the freeze recorded no day; its confirmation did.
    frozen = same and (protocols["b"].get("frozen") or protocols["a"].get("frozen"))
    lines += [f"Protocol: A {digest(protocols.get('a'))}; B {digest(protocols.get('b'))}"
              + ((f" (the same, frozen on {frozen})." if frozen else " (the same).") if same
                 else " (**not the same protocol**: B does not confirm A's rules)."), ""]
  changes = result["config_changes"]
  lines.append("Config fields that differ (A → B): " + (
      "; ".join(f"`{k}` {va!r} → {vb!r}" for k, va, vb in changes) if changes else "none") + ".")
  lines.append("")
  for side, name in (("a", name_a), ("b", name_b)):
    for s in result["runs"][side]:
      minutes = f"{s['seconds'] / 60:.1f} min" if s.get("seconds") else "time not recorded"
      lines.append(f"- {name}: {s.get('started')}, {s.get('status')}, {minutes} on {s.get('cpu')}"
                   f" ({s.get('device')}); `{s.get('command')}`")
  lines += ["", "## Claims", "",
            f"| claim | N | {name_a} | {name_b} | same verdict | same sign | intervals overlap |",
            "|---|---|---|---|---|---|---|"]
  for c in result["claims"]:
    changed = c["a"] != c["b"] and not any(str(v).startswith("missing") for v in (c["a"], c["b"]))
    mark = (lambda v: f"**{v}**") if changed else (lambda v: str(v))
    ag = c.get("agreement")
    if ag is None:
      cols = "– | – | –"
    else:
      count = lambda k: f"{ag[k]}/{ag['intervals']}" if ag["intervals"] else "–"
      cols = f"{'yes' if ag['same_verdict'] else '**no**'} | {count('same_sign')} | {count('overlap')}"
    lines.append(f"| {c['claim']} | {c['budget']} | {mark(c['a'])} | {mark(c['b'])} | {cols} |")
  compared = [c["agreement"] for c in result["claims"] if c.get("agreement")]
  lines += ["", "Verdicts in bold differ between the runs (a claim missing from either run is not"
            " compared). Same verdict: supported, not supported or inconclusive in both (an"
            " inconclusive verdict's reason may differ). Same sign and overlap: of the"
            " intervals the rule decided on in both runs, how many have means of one sign and"
            " how many overlap.", ""]
  if compared:
    lines += [f"Agreement: {sum(a['same_verdict'] for a in compared)} of {len(compared)}"
              " verdicts the same; "
              f"{sum(a['same_sign'] for a in compared)} of {sum(a['intervals'] for a in compared)}"
              " deciding intervals of one sign, "
              f"{sum(a['overlap'] for a in compared)} overlapping.", ""]
    for c in result["claims"]:
      ag = c.get("agreement") or {}
      for k in ag.get("sign_differs", []):
        lines.append(f"- {c['claim']} at N = {c['budget']}: `{k}` changes sign.")
      for k in ag.get("disjoint", []):
        lines.append(f"- {c['claim']} at N = {c['budget']}: `{k}`: the intervals do not overlap.")
    lines.append("")
  lines += [
            "## Cells", "",
            f"Test accuracy (%, mean over seeds); {name_b} − {name_a}: "
            + ("the paired change with its 95% t-interval (pp)" if paired else
               "the difference of means with its 95% Welch interval (pp), seeds unpaired")
            + "; Δ: the cell against its budget's baseline in the same run, paired by seed"
            " (pp).", "",
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

