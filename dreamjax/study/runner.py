"""Runs the study: cells in dependency order, resumable, one failure at a time.

A *cell* is one arm at one label budget, trained over every seed at once. A
finished cell is one line of ``results.jsonl`` (appended atomically); a rerun
with the same workdir skips it. Inside a cell, generated sets and training
checkpoints are kept on disk, so a kill mid-cell loses at most the work since
the last checkpoint. Everything is keyed by seed and arm, so a resumed study
ends with the same numbers as an uninterrupted one (timings aside, which live
under each record's ``timing``).
"""

import dataclasses
import json
import os
import time
import traceback
from typing import Any, Callable

import jax
import numpy as np

import dreamjax
from dreamjax import checkpoint, fileio, models, train
from dreamjax import data as data_lib
from dreamjax.configs import study as study_configs
from dreamjax.errors import (CheckpointError, ConfigError, DataError, DistributedError,
                             DreamjaxError)
from dreamjax.study import arms as arms_lib

RESULTS = "results.jsonl"
CONFIG_FILE = "study_config.json"


@dataclasses.dataclass(frozen=True)
class Cell:
  key: str        # e.g. "N1000/dream_sweep@0.3"
  arm: str        # e.g. "dream_sweep@0.3"
  budget: int

  @property
  def base(self) -> str:
    return arms_lib.base_arm(self.arm)

  @property
  def folder(self) -> str:
    return self.key.replace("@", "_at_")


def validate_config(config) -> None:
  unknown = [a for a in config.arms if a not in study_configs.ALL_ARMS]
  if unknown:
    raise ConfigError(f"arms: unknown arm(s) {unknown}; choose from {list(study_configs.ALL_ARMS)}.")
  needs_baseline = [a for a in config.arms if a not in ("baseline",)]
  if needs_baseline and "baseline" not in config.arms:
    raise ConfigError("arms must include 'baseline': every other arm is compared with it"
                      " (and dreams, attacks and pseudo-labels use its models).")
  checks = [
      ("num_seeds", config.num_seeds, config.num_seeds >= 2, ">= 2 (confidence intervals)"),
      ("copies", config.copies, config.copies >= 1, ">= 1"),
      ("budgets", tuple(config.budgets), len(config.budgets) >= 1 and all(b > 0 for b in config.budgets),
       "a non-empty list of positive label budgets"),
      ("primary_budget", config.primary_budget, config.primary_budget in tuple(config.budgets),
       f"one of budgets {tuple(config.budgets)}"),
      ("eval.robust_eps", config.eval.robust_eps, config.eval.robust_eps >= 0, ">= 0"),
      ("eval.robust_steps", config.eval.robust_steps, config.eval.robust_steps >= 1, ">= 1"),
      ("eval.robust_num_test", config.eval.robust_num_test, config.eval.robust_num_test >= 1, ">= 1"),
      ("eval.frechet_num_test", config.eval.frechet_num_test, config.eval.frechet_num_test >= 2, ">= 2"),
      ("attack.eps", config.attack.eps, config.attack.eps >= 0, ">= 0"),
      ("attack.pgd_steps", config.attack.pgd_steps, config.attack.pgd_steps >= 1, ">= 1"),
      ("attack.train_steps", config.attack.train_steps, config.attack.train_steps >= 1, ">= 1"),
      ("attack.train_fraction", config.attack.train_fraction,
       0 <= config.attack.train_fraction <= 1, "in [0, 1]"),
      ("pseudo_label_threshold", config.pseudo_label_threshold,
       0 <= config.pseudo_label_threshold <= 1, "in [0, 1]"),
      ("verdict_margin", config.verdict_margin, 0 <= config.verdict_margin < 1, "in [0, 1)"),
      ("dream_chunk", config.dream_chunk, config.dream_chunk >= 1, ">= 1"),
      ("dream_steps", config.dream_steps,
       int(config.dream_steps) == config.dream_steps and config.dream_steps >= 0,
       "an integer >= 0 (0: the presets' own steps)"),
      ("dream_sweep_strengths", tuple(config.dream_sweep_strengths),
       all(s > 0 for s in config.dream_sweep_strengths), "positive strengths"),
  ]
  for name, value, ok, valid in checks:
    if not ok:
      raise ConfigError(f"{name}={value} is invalid: must be {valid}.")
  train.validate_train_config(config.train)
  train.validate_train_config(config.oracle.train)
  models.make_model(config.model, 10)
  models.make_model(config.oracle.model, 10)


def plan(config) -> list[Cell]:
  """Cells in the order they run: baseline first, since other arms use it."""
  cells = []
  for n in config.budgets:
    for arm in config.arms:
      if arm == "dream_sweep":
        for s in sweep_strengths(config):
          cells.append(Cell(f"N{n}/dream_sweep@{s:g}", f"dream_sweep@{s:g}", n))
      else:
        cells.append(Cell(f"N{n}/{arm}", arm, n))
  return cells


def sweep_strengths(config) -> list[float]:
  if config.dream_sweep_strengths:
    return [float(s) for s in config.dream_sweep_strengths]
  from dreamjax.configs import dream as dream_configs  # pylint: disable=g-import-not-at-top
  return [float(s) for s, _ in dream_configs.sweep_presets()]


class Study:
  """Holds what cells share: data, splits, the oracle, baselines, generators."""

  def __init__(self, config, workdir: str, log: Callable[[str], None] = print):
    self.config = config
    self.workdir = workdir
    self.log = log
    self._raw = None
    self._splits: dict[tuple[int, int], data_lib.Splits] = {}
    self._baselines: dict[int, Any] = {}
    self._pool_generators: dict[str, Any] = {}
    self._pretrained: dict[str, Any] = {}
    self._oracle = None
    self._test_features = None
    self.budget = None
    self.model = None
    self.image_shape = None
    self.num_classes = None

  # --- files ------------------------------------------------------------------
  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def check_workdir(self) -> None:
    """Refuses a workdir made with another config; records this one otherwise."""
    fileio.check_writable(self.workdir)
    path = self.path(CONFIG_FILE)
    mine = json.loads(self.config.to_json())
    if os.path.exists(path):
      try:
        with open(path) as f:
          theirs = json.load(f)["config"]
      except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{path} is unreadable ({e}); use a fresh --workdir.") from None
      if theirs != mine:
        diff = sorted(_diff_keys(theirs, mine))
        raise ConfigError(
            f"workdir {self.workdir} holds a study made with another config (differs in:"
            f" {', '.join(diff[:12])}). Results are never mixed: rerun with that config, or"
            " pass a fresh --workdir.")
    else:
      fileio.write_json(path, {"config": mine, "dreamjax_version": dreamjax.__version__})

  def done(self) -> dict[str, dict[str, Any]]:
    return {r["cell"]: r for r in fileio.read_jsonl(self.path(RESULTS))}

  # --- data ---------------------------------------------------------------------
  @property
  def raw(self):
    if self._raw is None:
      self._raw = data_lib.load_dataset(self.config.dataset, self.config.data_dir or None)
      self.image_shape = self._raw.image_shape
      self.num_classes = self._raw.num_classes
      self.model = models.make_model(self.config.model, self.num_classes)
    return self._raw

  def splits(self, budget: int, seed: int) -> data_lib.Splits:
    if (budget, seed) not in self._splits:
      self._splits[(budget, seed)] = data_lib.make_splits(
          self.raw, num_labeled=budget, val_size=self.config.val_size, seed=seed)
    return self._splits[(budget, seed)]

  @property
  def seeds(self) -> list[int]:
    return list(range(self.config.num_seeds))

  def pool_images(self, seed: int) -> np.ndarray:
    pool = self.splits(self.budget, seed).pool_images
    if self.config.pool_subset:
      pool = pool[:self.config.pool_subset]
    return pool

  # --- shared models ------------------------------------------------------------
  def oracle(self):
    """(model, variables) of the all-labels reference classifier, trained once."""
    if self._oracle is None:
      cfg = self.config.oracle
      model = models.make_model(cfg.model, self.num_classes)
      s = data_lib.make_splits(self.raw, num_labeled=-1, val_size=self.config.val_size, seed=0)
      res = train.fit(model, cfg.train, s.labeled_images, s.labeled_labels, seeds=[0],
                      val=(s.val_images, s.val_labels), checkpoint_dir=self.path("oracle", "checkpoint"),
                      fingerprint=cfg.to_json() + self.config.dataset, desc="oracle", progress=self.log)
      variables = train.unstack(res.state.variables, 0)
      self._oracle = (model, variables)
      done = self.done()
      if "oracle" not in done:
        acc = train.accuracy(train.make_predict(model), res.state.variables, s.test_images,
                             s.test_labels)
        fileio.append_jsonl(self.path(RESULTS), {
            "cell": "oracle", "arm": "oracle", "status": "ok", "test_accuracy": acc.tolist(),
            "history": res.history, "timing": {"train_seconds": res.seconds}})
        self.log(f"oracle test accuracy {acc[0]:.4f}")
    return self._oracle

  def test_features(self):
    if self._test_features is None:
      from dreamjax import frechet  # pylint: disable=g-import-not-at-top
      model, variables = self.oracle()
      test = self.splits(self.budget, 0).test_images[:self.config.eval.frechet_num_test]
      self._test_features = frechet.features(model, variables, test,
                                             layer=self.config.oracle.feature_layer)
    return self._test_features

  def baseline_fit(self) -> train.FitResult:
    """The baseline arm's training at the current budget (from its checkpoint if done)."""
    if self.budget not in self._baselines:
      images, labels, counts = self.training_data("baseline", {})
      self._baselines[self.budget] = self.fit(
          "baseline", images, labels, counts, None, None,
          self.path(f"N{self.budget}", "baseline", "checkpoint"))
    return self._baselines[self.budget]

  def baseline(self, seed: int):
    """(model, variables) of one seed's baseline classifier."""
    state = self.baseline_fit().state
    return self.model, train.unstack(state.variables, self.seeds.index(seed))

  def dream_config(self, arm: str):
    from dreamjax.configs import dream as dream_configs  # pylint: disable=g-import-not-at-top
    if arm.startswith("dream_sweep@"):
      strength = float(arm.split("@")[1])
      steps = int(self.config.dream_steps) or dream_configs.SWEEP_STEPS
      for s, cfg in dream_configs.sweep_presets(tuple(sweep_strengths(self.config)), steps):
        if abs(s - strength) < 1e-9:
          return cfg
      raise ConfigError(f"no dream sweep preset of strength {strength}.")
    cfg = dream_configs.get_preset(self.config.dream_presets[arm])
    steps = int(self.config.dream_steps)
    return dream_configs.with_steps(cfg, steps) if steps else cfg

  def generator_config(self, kind: str, conditional: bool):
    from dreamjax.configs import generator as gen_configs  # pylint: disable=g-import-not-at-top
    g = gen_configs.get_config(self.config.generator_preset)
    g.model = kind
    g.conditional = conditional
    g.source = "labeled" if conditional else "pool"
    if conditional:
      g.steps = self.config.small_generator_steps
    elif kind in ("ae", "pretext"):
      g.steps = self.config.pretrain_steps
    else:
      g.steps = self.config.pool_generator_steps
    g.update(self.config.generator_overrides.to_dict())
    return g

  def _artefact(self, name: str, make: Callable[[], Any]):
    """(tree, seconds): loaded from the workdir if an earlier run made it."""
    path = self.path(f"N{self.budget}", "artefacts", f"{name}.msgpack")
    if os.path.exists(path):
      try:
        tree, meta = checkpoint.load_tree(path)
        return tree, float(meta["seconds"])
      except (CheckpointError, KeyError) as e:
        self.log(f"{name}: saved copy unusable ({e}); training it again")
    t0 = time.perf_counter()
    tree = make()
    seconds = time.perf_counter() - t0
    checkpoint.save_tree(path, tree, {"seconds": seconds})
    return checkpoint.load_tree(path)[0], seconds

  def pool_generator(self, kind: str):
    """(config, params, train seconds) of the unconditional pool generator."""
    key = f"N{self.budget}/{kind}"
    if key not in self._pool_generators:
      from dreamjax import generators  # pylint: disable=g-import-not-at-top
      gcfg = self.generator_config(kind, conditional=False)
      trainer = generators.train_vae if kind == "vae" else generators.train_gan
      params, seconds = self._artefact(f"{kind}_pool", lambda: trainer(
          gcfg, self.pool_images(0), None, arms_lib.arm_key(0, f"{kind}_pool_gen"),
          progress=self.log)[0])
      self._pool_generators[key] = (gcfg, params, seconds)
    return self._pool_generators[key]

  def pretrained(self, arm: str):
    """(variables, seconds) of the autoencoder / rotation trunk on the pool."""
    key = f"N{self.budget}/{arm}"
    if key not in self._pretrained:
      from dreamjax import pretrain  # pylint: disable=g-import-not-at-top
      kind = "ae" if arm == "ae_pretrain" else "pretext"
      gcfg = self.generator_config(kind, conditional=False)
      k = arms_lib.arm_key(0, f"{arm}_pretrain")
      if kind == "ae":
        make = lambda: pretrain.train_autoencoder(gcfg, self.pool_images(0), k, self.config.model,
                                                  self.num_classes, self.image_shape)
      else:
        make = lambda: pretrain.train_rotation(gcfg, self.pool_images(0), k, self.config.model,
                                               self.image_shape)
      self._pretrained[key] = self._artefact(arm, make)
    return self._pretrained[key]

  # --- one cell -------------------------------------------------------------------
  def generated(self, cell: Cell) -> dict[int, arms_lib.Generated]:
    """Each seed's generated set, from disk if an earlier run made it."""
    out = {}
    for seed in self.seeds:
      path = self.path(cell.folder, f"generated_seed{seed}.npz")
      if os.path.exists(path):
        try:
          g = data_lib.augfile.load(path, num_classes=self.num_classes, image_shape=self.image_shape)
          out[seed] = arms_lib.Generated(g.images, g.labels, g.source_index,
                                         float(g.metadata.get("seconds", 0.0)),
                                         g.metadata.get("info", {}))
          continue
        except DataError as e:
          self.log(f"{cell.key}: regenerating seed {seed} ({e})")
      s = self.splits(cell.budget, seed)
      fn = arms_lib.GENERATE[cell.base]
      g = fn(self, cell.arm, seed, s.labeled_images, s.labeled_labels, s.labeled_index,
             arms_lib.arm_key(seed, cell.arm))
      data_lib.augfile.save(path, g.images, g.labels, g.source_index,
                            {"method": cell.arm, "seed": seed, "seconds": g.seconds,
                             "info": g.info, "budget": cell.budget})
      out[seed] = g
    return out

  def training_data(self, arm: str, generated: dict[int, arms_lib.Generated]):
    sets = []
    for seed in self.seeds:
      s = self.splits(self.budget, seed)
      x, y = s.labeled_images, s.labeled_labels
      if seed in generated and len(generated[seed].labels):
        x = np.concatenate([x, generated[seed].images])
        y = np.concatenate([y, generated[seed].labels])
      sets.append((x, y))
    return train.pad_to_common(sets)

  def fit(self, arm, images, labels, counts, transform, init_fn, ckpt):
    s0 = self.splits(self.budget, 0)
    return train.fit(self.model, self.config.train, images, labels, counts=counts,
                     seeds=self.seeds, image_shape=self.image_shape, init_fn=init_fn,
                     batch_transform=transform, val=(s0.val_images, s0.val_labels),
                     checkpoint_dir=ckpt, fingerprint=self.config.to_json() + arm,
                     desc=f"N{self.budget}/{arm}", progress=self.log)

  def run_cell(self, cell: Cell) -> dict[str, Any]:
    from dreamjax import adversarial, frechet  # pylint: disable=g-import-not-at-top
    cfg = self.config
    t_cell = time.perf_counter()
    generated = self.generated(cell) if cell.base in arms_lib.GENERATE else {}
    gen_seconds = float(sum(g.seconds for g in generated.values()))
    transform = arms_lib.batch_transform(self, cell.base)
    init_fn, pre_seconds = arms_lib.init_fn(self, cell.base)
    images, labels, counts = self.training_data(cell.arm, generated)
    if cell.base == "baseline":
      res = self.baseline_fit()
    else:
      res = self.fit(cell.arm, images, labels, counts, transform, init_fn,
                     self.path(cell.folder, "checkpoint"))
    state, history, train_seconds = res.state, res.history, res.seconds
    test = self.splits(cell.budget, 0)
    acc = train.accuracy(train.make_predict(self.model), state.variables, test.test_images,
                         test.test_labels)
    n_rob = cfg.eval.robust_num_test
    robust = adversarial.robust_accuracy(
        self.model, state.variables, test.test_images[:n_rob], test.test_labels[:n_rob],
        jax.random.key(10_000 + cell.budget), eps=cfg.eval.robust_eps, steps=cfg.eval.robust_steps,
        restarts=cfg.eval.robust_restarts)
    record = {"cell": cell.key, "arm": cell.arm, "base_arm": cell.base, "budget": cell.budget,
              "status": "ok", "seeds": self.seeds, "test_accuracy": acc.tolist(),
              "robust_accuracy": np.asarray(robust).tolist(), "history": history}
    if cell.arm.startswith("dream_sweep@"):
      record["strength"] = float(cell.arm.split("@")[1])
    # The generated set's quality under the oracle; for arms without one, the
    # real labeled images give the reference values.
    oracle_model, oracle_vars = self.oracle()
    predict = train.make_predict(oracle_model)
    lp, fd = [], []
    for seed in self.seeds:
      if generated:
        x, y = generated[seed].images, generated[seed].labels
      else:
        s = self.splits(cell.budget, seed)
        x, y = s.labeled_images, s.labeled_labels
      if len(y) >= 2:
        stacked = jax.tree.map(lambda v: v[None], oracle_vars)
        lp.append(float(train.accuracy(predict, stacked, x, y)[0]))
        fd.append(frechet.frechet_distance(
            frechet.features(oracle_model, oracle_vars, x, layer=cfg.oracle.feature_layer),
            self.test_features()))
    record["label_preservation"] = float(np.mean(lp)) if lp else None
    record["label_preservation_per_seed"] = lp
    record["frechet"] = float(np.mean(fd)) if fd else None
    record["frechet_per_seed"] = fd
    record["source"] = "generated" if generated else "real labeled set"
    record["num_generated"] = int(sum(len(g.labels) for g in generated.values()) // max(len(generated), 1))
    record["generation"] = {k: _mean_info([g.info for g in generated.values()], k)
                            for k in (generated[self.seeds[0]].info if generated else {})
                            if isinstance(generated[self.seeds[0]].info.get(k), (int, float))}
    record["timing"] = {"gen_seconds": gen_seconds + pre_seconds, "train_seconds": train_seconds,
                        "cell_seconds": time.perf_counter() - t_cell}
    record["gen_seconds"] = record["timing"]["gen_seconds"]
    record["train_seconds"] = train_seconds
    return record

  def alignment_cell(self) -> dict[str, Any]:
    from dreamjax import adversarial  # pylint: disable=g-import-not-at-top
    from dreamjax.study import stats  # pylint: disable=g-import-not-at-top
    n = self.config.eval.alignment_num
    test = self.splits(self.budget, 0)
    per_seed = {"logit": [], "layer": []}
    raw = []
    layer = models.layer_names(self.model)[min(1, len(self.model.conv_features) - 1)]
    for seed in self.seeds:
      model, variables = self.baseline(seed)
      out = adversarial.gradient_alignment(model, variables, test.test_images[:n],
                                           test.test_labels[:n], layer=layer)
      per_seed["logit"].append(float(out["logit"]["mean"]))
      per_seed["layer"].append(float(out["layer"]["mean"]))
      raw.append(_summaries(out))
    return {"cell": f"N{self.budget}/alignment", "arm": "alignment", "budget": self.budget,
            "status": "ok", "layer": layer,
            "logit": stats.t_interval(per_seed["logit"]).to_dict(),
            "layer_objective": stats.t_interval(per_seed["layer"]).to_dict(),
            "per_seed": per_seed, "details": _jsonable(raw)}


def _summaries(tree):
  """A nested result without its per-image arrays (those stay out of results.jsonl)."""
  if isinstance(tree, dict):
    return {k: _summaries(v) for k, v in tree.items()
            if k != "per_image" and not isinstance(v, (np.ndarray, list, jax.Array))}
  return tree


def _mean_info(infos, key):
  vals = [i[key] for i in infos if isinstance(i.get(key), (int, float))]
  return float(np.mean(vals)) if vals else None


def _jsonable(x):
  return json.loads(json.dumps(x, default=lambda v: getattr(v, "tolist", lambda: str(v))()))


def _diff_keys(a, b, prefix=""):
  keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else set()
  if not keys:
    return [prefix or "config"] if a != b else []
  out = []
  for k in keys:
    out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.") if isinstance(a.get(k), dict) and isinstance(
        b.get(k), dict) else ([f"{prefix}{k}"] if a.get(k) != b.get(k) else [])
  return out




def estimate_seconds(study: Study, cells: list[Cell]) -> float:
  """Rough wall time: a timed burst of the train step scaled to the plan."""
  cfg = study.config
  s = study.splits(cfg.budgets[0], 0)
  k = cfg.num_seeds
  images, labels, counts = train.pad_to_common([(s.labeled_images, s.labeled_labels)] * k)
  probe = cfg.train.copy_and_resolve_references()
  probe.steps, probe.warmup_steps, probe.log_every, probe.eval_every = 12, 1, 6, 0
  probe.checkpoint_every = 0
  train.fit(study.model, probe, images, labels, counts=counts, seeds=study.seeds,
            progress=lambda m: None)  # compile
  t0 = time.perf_counter()
  train.fit(study.model, probe, images, labels, counts=counts, seeds=study.seeds,
            progress=lambda m: None)
  per_step = (time.perf_counter() - t0) / probe.steps
  # Generation, attacks and evaluation roughly double a cell; the oracle is one more cell.
  oracle = per_step / k * cfg.oracle.train.steps * cfg.oracle.train.batch_size / cfg.train.batch_size
  return per_step * cfg.train.steps * len(cells) * 2.0 + oracle


def run_study(config, workdir: str, *, dry_run: bool = False, retry_failed: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes) every cell, then writes the report. Returns a summary."""
  validate_config(config)
  study = Study(config, workdir, log)
  cells = plan(config)
  with_alignment = "dream_logit" in config.arms or "pgd" in config.arms
  if dry_run:
    raw = study.raw  # validates the data
    for n in config.budgets:
      for seed in study.seeds:
        study.splits(n, seed)
    fileio.check_writable(workdir)
    est = estimate_seconds(study, cells)
    lines = [f"dataset {raw.name}: {len(raw.train_labels)} train / {len(raw.test_labels)} test,"
             f" {raw.num_classes} classes, images {raw.image_shape}",
             f"budgets {tuple(config.budgets)}, seeds {study.seeds}, {config.train.steps} steps per arm",
             f"{len(cells)} cells (+ oracle{', + C3 alignment' if with_alignment else ''}):"]
    lines += [f"  {c.key}" for c in cells]
    lines.append(f"estimated wall time on this machine: ~{est / 60:.0f} min")
    log("\n".join(lines))
    return {"cells": [c.key for c in cells], "estimated_seconds": est}

  study.check_workdir()
  done = study.done()
  if retry_failed:
    done = {k: v for k, v in done.items() if v.get("status") == "ok"}
  study.raw  # pylint: disable=pointless-statement
  todo = [c for c in cells if c.key not in done]
  total = len(cells) + (len(config.budgets) if with_alignment else 0)
  finished = total - len(todo) - sum(
      1 for n in config.budgets if with_alignment and f"N{n}/alignment" not in done)
  log(f"study: {total} cells, {finished} already done, workdir {workdir}")
  t0 = time.perf_counter()
  ran = 0
  study.budget = config.budgets[0]
  study.oracle()
  for n in config.budgets:
    study.budget = n
    study._test_features = None  # pylint: disable=protected-access
    jobs = [(c.key, lambda c=c: study.run_cell(c)) for c in cells if c.budget == n]
    if with_alignment:
      jobs.append((f"N{n}/alignment", study.alignment_cell))
    for key, job in jobs:
      if key in done:
        continue
      eta = ""
      if ran:
        remaining = total - finished
        eta = f", ETA {(time.perf_counter() - t0) / ran * remaining / 60:.1f} min"
      log(f"[{finished + 1}/{total}] {key}{eta}")
      try:
        record = job()
      except (KeyboardInterrupt, DistributedError):
        raise
      except DreamjaxError as e:
        record = _failed(key, e)
      except FloatingPointError as e:
        record = _failed(key, e)
      except Exception as e:  # noqa: BLE001 - one broken cell must not end the study
        record = _failed(key, e, tb=traceback.format_exc(limit=6))
      if record["status"] != "ok":
        log(f"{key} FAILED: {record['error']}")
      fileio.append_jsonl(study.path(RESULTS), _jsonable(record))
      finished += 1
      ran += 1
  from dreamjax.study import report  # pylint: disable=g-import-not-at-top
  paths = report.write_report(config, workdir)
  log(f"study finished in {(time.perf_counter() - t0) / 60:.1f} min; report: {paths['report']}")
  return {"report": paths["report"], "seconds": time.perf_counter() - t0}


def _failed(key: str, e: BaseException, tb: str | None = None) -> dict[str, Any]:
  arm = key.split("/", 1)[1] if "/" in key else key
  rec = {"cell": key, "arm": arm, "base_arm": arms_lib.base_arm(arm), "status": "failed",
         "error": f"{type(e).__name__}: {e}"}
  if key.startswith("N"):
    rec["budget"] = int(key[1:].split("/")[0])
  if tb:
    rec["traceback"] = tb
  return rec
