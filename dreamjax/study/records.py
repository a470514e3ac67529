"""What a study workdir records of itself: the config and data it was made with, its runs.

``study_config.json`` holds the config, the software versions and the data a
workdir was made with; a rerun with anything else is refused, except a config
that only widens it (:data:`EXTENSIBLE`). ``sessions.jsonl`` holds one line per
run of the study on the workdir (start, end, wall time, cells run, machine,
command), so the report can say how long its numbers took and where.
"""

import datetime
import json
import os
import sys
import time
from typing import Any

import dreamjax
from dreamjax.plumbing import fileio, provenance
from dreamjax.configs import arms, dreamer
from dreamjax.configs import dream as dream_configs
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError

CONFIG_FILE = "study_config.json"
SESSIONS = "sessions.jsonl"


def check_workdir(config, workdir: str, raw=None) -> dict[str, Any]:
  """Refuses a workdir made with another config, data or software; records them otherwise.

  Returns the workdir's record (``study_config.json``): the config, the
  versions of :func:`dreamjax.plumbing.provenance.versions` and the data read (its
  folder and digest). ``raw=None`` (rebuilding a report) checks the config
  alone and never creates the record.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  mine = json.loads(config.to_json())
  if not os.path.exists(path):
    if raw is None:
      raise ConfigError(f"{workdir} holds no study (no {CONFIG_FILE}); run the study first.")
    record = {"config": mine, "dreamjax_version": dreamjax.__version__,
              "versions": provenance.versions(), "data": _data_record(raw)}
    fileio.write_json(path, record)
    return record
  try:
    with open(path) as f:
      record = json.load(f)
    theirs = upgrade_config(record["config"], mine)
  except (OSError, ValueError, KeyError) as e:
    raise ConfigError(f"{path} is unreadable ({e}); use a fresh --workdir.") from None
  if theirs != mine:
    diff = sorted(_diff_keys(theirs, mine))
    if raw is None or not _extends(theirs, mine, diff, _recorded_budgets(workdir)):
      raise ConfigError(
          f"workdir {workdir} holds a study made with another config (differs in:"
          f" {', '.join(diff[:12])}). Results are never mixed: rerun with that config, or"
          " pass a fresh --workdir (a config that only adds budgets, arms, exchange-rate"
          " values, the length of a budget not yet run or the settings of an arm not yet run"
          " extends a study in place).")
    record = {**record, "config": mine, "extended_from": theirs}
    fileio.write_json(path, record)
  if raw is not None:
    provenance.check_same_versions(record.get("versions", {}), provenance.versions())
    data = record.get("data", {}).get("digest")
    if data and raw.digest and data != raw.digest:
      raise ConfigError(
          f"workdir {workdir} was made from other data (digest {data[:12]}… read from"
          f" {record['data'].get('source')}) than read now ({raw.digest[:12]}… from"
          f" {raw.source}). Results are never mixed: point --config.data_dir (or"
          " DREAMJAX_DATA_DIR) at the recorded data, or pass a fresh --workdir.")
  return record


# Config fields added after workdirs were made, with the value that computes what those
# workdirs computed: a workdir without the field reads as having this value (one pool
# generator per arm, shared by every seed, before generator variance was measured).
ADDED_FIELDS = {"train_steps_by_budget": {}, "first_seed": 0, "protocol_version": 1,
                "claims": ["C1", "C2", "C3", "C4", "C5", "C6", "C7"], "pool_generators": 1}

# Fields added inside blocks, by dotted name, likewise: the oracle trained without
# augmentation and measured no shifts, and every Fréchet distance read a whole set.
ADDED_NESTED = {"oracle.augment": "none", "oracle.shift_pixels": [], "eval.frechet_num_images": 0}
# Fields added with them that change nothing while those hold the values above (the share
# of a batch augmented, the number of draws of a set): they read as today's config has them.
ADDED_FOLLOWING = ("oracle.augment_fraction", "eval.frechet_draws")

# Fields that change how the oracle measures, not how any cell trains: left out of the
# cells' checkpoint fingerprint (the oracle's own is context.oracle_fingerprint).
MEASURING_FIELDS = (*ADDED_NESTED, *ADDED_FOLLOWING)


def upgrade_config(cfg: dict[str, Any], today: dict[str, Any] | None = None) -> dict[str, Any]:
  """A recorded config in today's form, computing what it computed.

  Fields added since read as :data:`ADDED_FIELDS` and :data:`ADDED_NESTED`. Arm settings that were
  study-wide tables keyed by arm name (``dream_presets``, ``generator_steps``,
  ``dream_sweep_strengths``) read as the arms' ``arm_settings``: ``dream_online``
  dreamed with ``dream_subtle``'s preset, and an empty sweep list meant the dream
  configs' default sweep. The settings of arms registered since, and the
  ``pool_dreamer`` block, read as ``today``'s config has them (none of their cells
  ran, so any settings compute what it computed; the defaults without ``today``).
  """
  cfg = _with_nested(cfg, today)
  cfg = {**ADDED_FIELDS, **cfg}
  if "arm_settings" not in cfg and "dream_presets" in cfg:
    cfg = _settings_from_tables(cfg)
  return _with_new_arms(cfg, today)


def _with_nested(cfg: dict[str, Any], today: dict[str, Any] | None) -> dict[str, Any]:
  """``cfg`` with the :data:`ADDED_NESTED` fields it lacks (and their
  :data:`ADDED_FOLLOWING` ones, as ``today`` or today's defaults have them)."""
  missing = [f for f in ADDED_NESTED if not _has(cfg, f)]
  if not missing:
    return cfg
  if today is None:
    today = json.loads(study_configs.get_config().to_json())
  cfg = json.loads(json.dumps(cfg))  # a copy: the blocks below are changed in place
  for field in missing:
    block, name = field.split(".")
    if isinstance(cfg.get(block), dict):
      cfg[block][name] = ADDED_NESTED[field]
  for field in ADDED_FOLLOWING:
    block, name = field.split(".")
    if isinstance(cfg.get(block), dict) and name not in cfg[block] and _has(today, field):
      cfg[block][name] = today[block][name]
  return cfg


def _has(cfg: dict[str, Any] | None, dotted: str) -> bool:
  block, name = dotted.split(".")
  return isinstance((cfg or {}).get(block), dict) and name in cfg[block]


def _settings_from_tables(cfg: dict[str, Any]) -> dict[str, Any]:
  presets = cfg.pop("dream_presets")
  steps = cfg.pop("generator_steps", {})
  strengths = list(cfg.pop("dream_sweep_strengths", None) or dream_configs.DEFAULT_SWEEP)
  settings = {arm: {"preset": preset} for arm, preset in presets.items()}
  settings["dream_online"] = {"preset": presets["dream_subtle"]}
  settings["dream_sweep"] = {"strengths": strengths}
  settings.update({arm: {"steps": n} for arm, n in steps.items()})
  return {**cfg, "arm_settings": settings}


# Settings added to arms after workdirs were made, with the value that computes what
# those workdirs computed: the pool generators kept the first samples above the
# threshold before they kept the most confident of each class.
ADDED_SETTINGS = {"balanced": False}


def _with_new_arms(cfg: dict[str, Any], today: dict[str, Any] | None = None) -> dict[str, Any]:
  """Arms registered after a workdir was made computed nothing in it: their settings,
  and the deep dreamer's block they share, read as ``today``'s config has them (as
  the defaults without it), so a config that adds those arms only widens the study
  (``arms`` is :data:`EXTENSIBLE`); a setting added to an arm it ran reads as
  :data:`ADDED_SETTINGS` says."""
  if "arm_settings" not in cfg:
    return cfg
  defaults = json.loads(arms.settings_config().to_json())
  now = {**defaults, **((today or {}).get("arm_settings") or {})}
  recorded = {arm: {**{f: v for f, v in ADDED_SETTINGS.items()
                       if f in defaults.get(arm, {}) and f not in given}, **given}
              for arm, given in cfg["arm_settings"].items()}
  cfg = {**cfg, "arm_settings": {**now, **recorded}}
  dreamer_now = (today or {}).get("pool_dreamer") or json.loads(dreamer.get_config().to_json())
  return {"pool_dreamer": dreamer_now, **cfg}

# Fields a config may widen to extend a finished study in place: every cell it
# already holds was computed exactly as the wider config would compute it.
EXTENSIBLE = ("budgets", "arms", "claims", "exchange.copies", "exchange.label_factors",
              "exchange.arms", "train_steps_by_budget")


# Fields added after checkpoints and protocol digests were recorded that a hash leaves
# out at the value every earlier workdir had, so those keep their hashes.
HASHED_FROM = {"pool_generators": 1}


def without_old_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
  """A config's dict without the :data:`HASHED_FROM` fields at their old value."""
  return {k: v for k, v in cfg.items() if k not in HASHED_FROM or v != HASHED_FROM[k]}


def cell_fingerprint(config) -> str:
  """The config as every cell's checkpoints depend on it: without the :data:`EXTENSIBLE`
  fields, the arms' settings (a cell adds its own arm's, ``Context.fit``) or the
  :data:`MEASURING_FIELDS` (added after workdirs were made; no cell trains on them).

  A study extended in place (more budgets, arms or exchange-rate values) must
  restore the checkpoints it already holds (the baselines its new cells build
  on), so what only widens the study is not part of their fingerprint.
  """
  cfg = without_old_defaults(json.loads(config.to_json()))
  cfg.pop("arm_settings", None)
  for dotted in EXTENSIBLE + MEASURING_FIELDS:
    *parents, last = dotted.split(".")
    node = cfg
    for part in parents:
      node = node.get(part, {})
    node.pop(last, None)
  return json.dumps(cfg, sort_keys=True)


def _extends(theirs, mine, diff, recorded_budgets=frozenset()) -> bool:
  """Whether ``mine`` only widens ``theirs`` in :data:`EXTENSIBLE` fields, or sets
  the settings of arms ``theirs`` did not run.

  A budget's own training length (``train_steps_by_budget``) may be set only for
  budgets with no recorded cell, and never changed once set.
  """
  def get(cfg, dotted):
    for part in dotted.split("."):
      cfg = cfg[part]
    return cfg
  read = _settings_read(theirs.get("arms", ()))
  if any(d.split(".")[0] == "arm_settings" and d.split(".")[1] in read for d in diff
         if d.count(".") >= 1):
    return False  # settings an arm of the study has trained with
  widened = [d for d in diff if d.split(".")[0] not in ("train_steps_by_budget", "arm_settings")]
  if any(d not in EXTENSIBLE for d in widened):
    return False
  old, new = theirs["train_steps_by_budget"], mine["train_steps_by_budget"]
  if any(new.get(k) != v for k, v in old.items()):
    return False  # a length its finished cells did not train
  if any(int(k[1:]) in recorded_budgets for k in set(new) - set(old)):
    return False  # a new length for a budget that already has cells
  return all(set(get(theirs, d)) <= set(get(mine, d)) for d in widened)


def _settings_read(study_arms) -> set[str]:
  """The ``arm_settings`` blocks the arms of a study read: each arm's own and, for a
  fresh-sample arm, its stored twin's. Any other arm's settings may still change, as
  no cell has trained with them."""
  read = set()
  for name in study_arms:
    base = arms.base_name(name)
    if base in arms.REGISTRY:
      read.add(base)
      twin = arms.generator_arm(base)
      if twin is not None:
        read.add(twin)
  return read


def _recorded_budgets(workdir: str) -> set[int]:
  """Label budgets of the cells ``results.jsonl`` holds (finished or failed)."""
  records = fileio.read_jsonl(os.path.join(workdir, "results.jsonl"), repair=False)
  return {int(r["budget"]) for r in records if r.get("budget") is not None}


def generation_seconds(record: dict[str, Any]) -> float:
  """Seconds of generation and pretraining behind a cell's seeds, shared work counted once.

  A pool generator is trained once and read by every seed that uses it; each
  seed's part of ``gen_seconds`` carries its generator's training time, so the
  recorded sum counts a generator once per seed that read it. With several pool
  generators (``pool_generators`` in the record, their seconds in
  ``timing.pool_generator_seconds``) each is counted once; a record made before
  them had one, whose time is ``generation.generator_train_seconds``.
  Image-steps (``cost``) are per seed and need no such care.
  """
  gen = float(record.get("gen_seconds", (record.get("timing") or {}).get("gen_seconds", 0.0)))
  per_seed = (record.get("pool_generators") or {}).get("per_seed")
  seconds = (record.get("timing") or {}).get("pool_generator_seconds")
  if per_seed and seconds:
    return gen - sum(seconds[str(i)] for i in per_seed) + sum(seconds.values())
  shared = float((record.get("generation") or {}).get("generator_train_seconds", 0.0))
  return gen - (len(record.get("seeds") or [0]) - 1) * shared


def _data_record(raw) -> dict[str, Any]:
  return {"name": raw.name, "source": raw.source, "digest": raw.digest,
          "train": len(raw.train_labels), "test": len(raw.test_labels)}


def _diff_keys(a, b, prefix=""):
  keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else set()
  if not keys:
    return [prefix or "config"] if a != b else []
  out = []
  for k in keys:
    out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.") if isinstance(a.get(k), dict) and isinstance(
        b.get(k), dict) else ([f"{prefix}{k}"] if a.get(k) != b.get(k) else [])
  return out


def read_compute(workdir: str) -> dict[str, Any] | None:
  """How the workdir's cells are computed (:func:`check_compute`), None if it does not say."""
  try:
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
      return json.load(f).get("compute")
  except (OSError, ValueError):
    return None


def check_compute(workdir: str, compute: dict[str, Any]) -> None:
  """Refuses to compute a workdir's cells with XLA:CPU thread settings other than it records.

  ``compute``: ``{"engine": "" (one process) or the engine's name, "xla_cpu_threads": n}``.
  A worker's thread count is fixed (:data:`dreamjax.study.run.tasks.WORKER_THREADS`), so
  cells computed by workers agree to the bit whatever their number; a process of
  another thread count splits convolutions otherwise and moves the last bits. A
  workdir that records no ``compute`` was computed in one process. The first
  record stays; a run that matches it adds nothing.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path) as f:
    record = json.load(f)
  computed = (os.path.exists(os.path.join(workdir, "oracle"))  # the first job's checkpoints
              or bool(fileio.read_jsonl(os.path.join(workdir, "results.jsonl"), repair=False)))
  theirs = record.get("compute") or ({"engine": "", "xla_cpu_threads": None} if computed
                                     else None)
  if theirs is None:
    fileio.write_json(path, {**record, "compute": compute})
    return
  workers_then, workers_now = bool(theirs.get("engine")), bool(compute.get("engine"))
  if workers_then == workers_now and (not workers_now or theirs.get("xla_cpu_threads")
                                      == compute.get("xla_cpu_threads")):
    return
  def describe(c):
    if c.get("engine"):
      return (f"by worker processes of {c.get('xla_cpu_threads')} XLA:CPU thread each"
              " (--workers=N ≥ 1 or --engine_address)")
    return "in one process (--workers=0)"
  fix = ("--workers=1 or more" if workers_then else "--workers=0")
  raise ConfigError(
      f"workdir {workdir} computed its cells {describe(theirs)}; this run would compute"
      f" them {describe(compute)}, which splits each convolution's work otherwise and moves"
      f" the last bits of its numbers. Results are never mixed: rerun with {fix}, or pass a"
      " fresh --workdir.")


class Session:
  """One run of the study on a workdir; :meth:`close` appends its line to ``sessions.jsonl``.

  ``compute``: how the jobs ran when not in this process (engine, workers, XLA
  threads each); the workers' machines are then other than this one.
  """

  def __init__(self, workdir: str, cells_before: int, cells_total: int,
               compute: dict[str, Any] | None = None):
    self.workdir = workdir
    self.start = time.time()
    self.record = {"started": _utc(self.start), "cells_before": cells_before,
                   "cells_total": cells_total, "machine": provenance.machine(),
                   "command": " ".join(sys.argv)}
    if compute:
      self.record["compute"] = dict(compute)

  def close(self, cells_run: int, status: str, nodes: int | None = None) -> None:
    end = time.time()
    line = {**self.record, "finished": _utc(end), "seconds": round(end - self.start, 1),
            "cells_run": cells_run, "status": status}
    if nodes is not None and "compute" in line:
      line["compute"] = {**line["compute"], "nodes": nodes}
    try:
      fileio.append_jsonl(os.path.join(self.workdir, SESSIONS), line)
    except OSError:
      pass  # a full disk: the results are what matters, and they are already written


def _utc(t: float) -> str:
  return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_sessions(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, SESSIONS)
  return fileio.read_jsonl(path) if os.path.exists(path) else []
