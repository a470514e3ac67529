"""REPORT.md, claims.json, summary.csv and figures from a study's results.jsonl."""

import os
import shutil

from dreamjax.plumbing import fileio
from dreamjax import data as data_lib
from dreamjax.errors import ConfigError
from dreamjax.figures import charts
from dreamjax.configs import arms as arms_lib
from dreamjax.study import claims, plan, spec
from dreamjax.study.report import report_text, tables
from dreamjax.study.run import fuller

FIGURES = "figures"
# dreamers.png: the small classifier's dreams beside the deep pool dreamer's, same sources.
DREAMER_ARMS = ("dream_subtle", "dream_strong", "deep_dream_subtle", "deep_dream_strong")
_sort_key = arms_lib.sort_key

def budget_cells(config, records) -> dict[int, dict[str, dict]]:
  """The study's label budgets -> arm -> record (not the exchange-rate baselines' budgets)."""
  return {b: cells for b, cells in sorted(tables.main_cells(records).items())
          if b in tuple(config.budgets)}


def decided(config) -> tuple[str, ...]:
  """The claims the study decides (``config.claims``; every claim in studies made
  before the field)."""
  return tuple(config.get("claims", claims.CLAIMS))


def verdicts_by_budget(config, records) -> dict[int, list[claims.Verdict]]:
  out = {}
  for budget, cells in budget_cells(config, records).items():
    alignment = cells.get("alignment")
    out[budget] = claims.all_verdicts({a: c for a, c in cells.items() if a != "alignment"},
                                      _alignment(alignment), margin=config.verdict_margin,
                                      budget=budget, quality_gate=config.quality_gate,
                                      alpha=config.alpha,
                                      version=int(config.get("protocol_version", 1)))
    out[budget] = [v for v in out[budget] if v.claim in decided(config)]
  return out


def _alignment(record):
  """The C3 job's intervals as the rules read them (``layer``, ``logit``, ``random``)."""
  if not tables.ok(record):
    return record
  return {"status": "ok", "logit": record["logit"], "layer": record["layer_objective"],
          "random": record.get("random")}


def dreamers_by_budget(config, records) -> dict[int, list]:
  """Budget -> ``(dreamer, verdict)`` of the Deep Dream claims under another dreamer."""
  if int(config.get("protocol_version", 1)) == 1:
    return {}
  return {budget: [(d, v) for d, v in claims.dreamer_verdicts(
      {a: c for a, c in cells.items() if a != "alignment"}, margin=config.verdict_margin,
      budget=budget, quality_gate=config.quality_gate, alpha=config.alpha)
                   if v.claim in decided(config)]
          for budget, cells in budget_cells(config, records).items()}


def placebos_by_budget(config, records) -> list[dict]:
  """Each rule of the study's protocol run on its placebos, at every budget (version 1
  had none)."""
  if int(config.get("protocol_version", 1)) == 1:
    return []
  out = []
  for budget, cells in budget_cells(config, records).items():
    out += claims.placebo_verdicts({a: c for a, c in cells.items() if a != "alignment"},
                                   _alignment(cells.get("alignment")),
                                   margin=config.verdict_margin, budget=budget,
                                   quality_gate=config.quality_gate, alpha=config.alpha)
  return [p for p in out if p["claim"] in decided(config)]


def stored_sets(workdir: str, config, cells) -> dict[str, str]:
  """Each arm's stored set of the study's first seed (the one the sample figures show),
  by arm: a confirmation run on fresh seeds (``first_seed=5``) has no seed 0."""
  first = spec.seeds_of(config)[0]
  return {a: os.path.join(workdir, plan.folder_of(c["cell"]), f"generated_seed{first}.npz")
          for a, c in cells.items() if c.get("cell")}


def _figures(workdir, config, records, cells, exchange, quality, train_images) -> dict[str, str]:
  figdir = os.path.join(workdir, FIGURES)
  os.makedirs(figdir, exist_ok=True)
  plain = {a: c for a, c in cells.items() if a != "alignment"}
  by_budget = budget_cells(config, records)
  color = arms_lib.color
  stored = stored_sets(workdir, config, plain)
  makers = (
      ("forest", lambda p: charts.forest(by_budget, p, _sort_key, color)),
      ("exchange", lambda p: charts.exchange(exchange, p, color)),
      ("robustness", lambda p: charts.robustness(plain, p, _sort_key, color)),
      ("generators", lambda p: charts.generator_losses(quality, p)),
      ("sweep", lambda p: charts.sweep(plain, p)),
      ("frechet", lambda p: charts.frechet(plain, p)),
      ("curves", lambda p: charts.curves(plain, p, _sort_key)),
      ("samples", lambda p: charts.samples(stored, plain, train_images, p, _sort_key)),
      ("dreamers", lambda p: charts.dreamers(stored, plain, train_images, p, DREAMER_ARMS)),
  )
  figs = {}
  for name, fn in makers:
    if fn(os.path.join(figdir, f"{name}.png")):
      figs[name] = f"{FIGURES}/{name}.png"
  return figs


def write_report(config, workdir: str, train_images=None) -> dict[str, str]:
  every = fileio.read_jsonl(os.path.join(workdir, "results.jsonl"))
  latest = {r["cell"]: r for r in every}  # a cell rerun (--retry_failed) is read from its rerun
  records = list(latest.values())
  rerun = [r for r in every if r is not latest[r["cell"]]]
  tables.write_csv(os.path.join(workdir, "summary.csv"), tables.summary_rows(records))
  primary = int(config.primary_budget)
  cells = tables.main_cells(records).get(primary, {})
  oracle = next((r for r in records if r["cell"] == "oracle"), None)
  verdicts = verdicts_by_budget(config, records)
  placebos = placebos_by_budget(config, records)
  dreamers = dreamers_by_budget(config, records)
  protocol = claims.protocol(config)
  exchange = tables.exchange(records, primary, config.exchange.label_factors)
  quality = tables.generator_quality(cells, config.quality_gate)
  if train_images is None:
    try:
      train_images = data_lib.load_dataset(config.dataset, config.data_dir or None).train_images
    except Exception:  # noqa: BLE001 - the sample grid then shows generated images alone
      train_images = None
  figs = _figures(workdir, config, records, cells, exchange, quality, train_images)
  md = report_text.markdown(config, workdir, records, cells, oracle, verdicts, exchange,
                            quality, figs, rerun=rerun, placebos=placebos, protocol=protocol,
                            dreamers=dreamers,
                            fuller=fuller.fuller_presets(config, records, workdir))
  report = os.path.join(workdir, "REPORT.md")
  fileio.write_text(report, md)
  fileio.write_json(os.path.join(workdir, "claims.json"),
                    [v.to_dict() for vs in verdicts.values() for v in vs])
  fileio.write_json(os.path.join(workdir, "protocol.json"), {
      **protocol, "placebos": placebos,
      "dreamers": [{"dreamer": d, **v.to_dict()} for vs in dreamers.values() for d, v in vs]})
  return {"report": report, "summary": os.path.join(workdir, "summary.csv"), **figs}


# What a published study consists of: the report and the records it was computed
# from, not its checkpoints, generated sets or logs.
PUBLISHED = ("REPORT.md", "claims.json", "protocol.json", "summary.csv", "study_config.json",
             "sessions.jsonl", "results.jsonl")


def publish(workdir: str, dest: str) -> list[str]:
  """Copies a finished study's report, records and figures to ``dest``; returns the files."""
  if not os.path.exists(os.path.join(workdir, "REPORT.md")):
    raise ConfigError(f"{workdir} has no REPORT.md to publish; run the study (or"
                      " --report_only) first.")
  os.makedirs(os.path.join(dest, FIGURES), exist_ok=True)
  copied = []
  for name in PUBLISHED:
    if os.path.exists(os.path.join(workdir, name)):
      shutil.copyfile(os.path.join(workdir, name), os.path.join(dest, name))
      copied.append(name)
  figdir = os.path.join(workdir, FIGURES)
  for name in sorted(os.listdir(figdir)) if os.path.isdir(figdir) else []:
    shutil.copyfile(os.path.join(figdir, name), os.path.join(dest, FIGURES, name))
    copied.append(f"{FIGURES}/{name}")
  return copied
