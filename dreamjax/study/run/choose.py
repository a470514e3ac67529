"""Choices the protocol tunes, made by a written procedure on the validation split alone.

The tuned choices of the protocol are how long the classifier trains at a
label budget and how long the oracle (the measuring instrument) trains.
:func:`choose_length` trains the arms whose gain grows with training (the
baseline and online classical augmentation, by default) at each candidate
length, and picks the shortest length after which doubling gains no arm more
than ``tolerance`` of mean validation accuracy. :func:`choose_oracle_length`
picks the shortest length at which the oracle reaches its target accuracy on
a validation split held out for the choice. Both read the validation split
only: the data they are given has its test split removed before anything is
drawn, so no test label can reach a choice.

Each training run is a measurement (an arm at a length, or the oracle at a
length), written to the workdir as soon as it is made (:class:`Measurements`):
a killed chooser loses no finished run, and a rerun on the same workdir with
the same config trains only the missing ones.
"""

import dataclasses
import json
import os
import time
from typing import Any, Callable, Sequence

import numpy as np

from dreamjax import data as data_lib
from dreamjax.plumbing import fileio, lock, provenance, sharding
from dreamjax.training import evaluate, models, train
from dreamjax.configs import arms as arms_lib
from dreamjax.errors import ConfigError
from dreamjax.training.seeds import pad_to_common
from dreamjax.study.run import context as context_lib
from dreamjax.study import records, spec

# Candidate lengths (training steps), each double the last, and the smallest gain in
# mean validation accuracy from doubling that still counts as gaining. Both fixed
# before any choice was made with them.
LENGTHS = (300, 600, 1200, 2400, 4800)
TOLERANCE = 0.003
ARMS = ("baseline", "classical_online")


# The oracle's candidate lengths (training steps, each double the last), the validation
# accuracy it must reach (the target of 92% test accuracy plus about one standard error of
# a 5000-image validation split) and the training images held out to measure it. All
# fixed before any choice was made with them.
ORACLE_LENGTHS = (1000, 2000, 4000, 8000)
ORACLE_TARGET = 0.925
ORACLE_VAL_SIZE = 5000


# The files of a workdir's finished measurements (one JSON line each) and the config
# that determines them.
LENGTH_MEASUREMENTS = "length_measurements"
ORACLE_MEASUREMENTS = "oracle_length_measurements"

# Study config fields that change no measurement of the length chooser: which budgets are
# chosen (each measurement is keyed by its budget, so a config with more budgets reuses
# the others'), a budget's training length (the chooser sets its own) and the folder the
# data is read from (the data's digest stands for it).
NOT_MEASURED = ("budgets", "primary_budget", "train_steps_by_budget", "data_dir")


class Measurements:
  """A chooser's finished measurements in its workdir, so that a killed run resumes.

  Each measurement is one line of ``WORKDIR/NAME.jsonl``, appended (and on
  disk) as soon as it is made, under its key (``N100/baseline@600``) and the
  fingerprint of what determines it, ``made_with`` (the config, the data and
  the chooser's own settings), which the first measurement also writes in full
  to ``WORKDIR/NAME_config.json``. A workdir whose measurements were made with
  anything else, or with other software versions, is refused, as a study's is:
  measurements are never mixed.
  """

  def __init__(self, workdir: str, name: str, made_with: dict[str, Any],
               log: Callable[[str], None] = print):
    self.path = os.path.join(workdir, f"{name}.jsonl")
    self.config_path = os.path.join(workdir, f"{name}_config.json")
    self.made_with = json.loads(json.dumps(made_with, default=fileio.jsonable))
    self.fingerprint = train.config_fingerprint(self.made_with)
    self._check_recorded_config()
    self.done = {}
    for record in fileio.read_jsonl(self.path):
      if record.get("fingerprint") != self.fingerprint:
        raise ConfigError(
            f"{self.path} holds measurements made with another config, data or chooser"
            " settings than this run's. Measurements are never mixed: rerun with that"
            " config, or pass a fresh --workdir.")
      self.done[record["key"]] = record
    if self.done:
      log(f"{len(self.done)} measurement(s) already made in {self.path}: reused, not"
          " trained again")

  def _check_recorded_config(self) -> None:
    if not os.path.exists(self.config_path):
      return
    try:
      with open(self.config_path) as f:
        recorded = json.load(f)
      theirs, versions = recorded["made_with"], recorded["versions"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ConfigError(f"{self.config_path} is unreadable ({e}); pass a fresh"
                        " --workdir.") from None
    provenance.check_same_versions(versions, provenance.versions())
    if theirs != self.made_with:
      diff = sorted(records._diff_keys(theirs, self.made_with))  # pylint: disable=protected-access
      raise ConfigError(
          f"workdir {os.path.dirname(self.config_path)} holds measurements made with another"
          f" config (differs in: {', '.join(diff[:12])}). Measurements are never mixed:"
          " rerun with that config, or pass a fresh --workdir.")

  def get(self, key: str) -> dict[str, Any] | None:
    return self.done.get(key)

  def add(self, key: str, values: dict[str, Any]) -> None:
    if not os.path.exists(self.config_path):
      fileio.write_json(self.config_path, {"made_with": self.made_with,
                                           "versions": provenance.versions()})
    record = {"key": key, "fingerprint": self.fingerprint, **values}
    fileio.append_jsonl(self.path, record)
    self.done[key] = json.loads(json.dumps(record, default=fileio.jsonable))


def _data(raw: data_lib.RawDataset) -> dict[str, str]:
  """The data a measurement read: its digest, or where it came from if it has none."""
  return {"name": raw.name, "digest": raw.digest or raw.source}


def length_made_with(config, raw, lengths: Sequence[int], arms: Sequence[str],
                     tolerance: float) -> dict[str, Any]:
  """What the length chooser's measurements, and the choice made from them, depend on."""
  cfg = json.loads(config.to_json())
  for field in NOT_MEASURED:
    cfg.pop(field, None)
  return {"config": cfg, "data": _data(raw), "lengths": sorted(int(n) for n in lengths),
          "arms": list(arms), "tolerance": float(tolerance)}


def oracle_made_with(config, raw, lengths: Sequence[int], target: float,
                     val_size: int) -> dict[str, Any]:
  """What the oracle length chooser's measurements, and its choice, depend on."""
  return {"oracle": json.loads(config.oracle.to_json()), "data": _data(raw),
          "lengths": sorted(int(n) for n in lengths), "target": float(target),
          "val_size": int(val_size)}


def without_test(raw: data_lib.RawDataset) -> data_lib.RawDataset:
  """``raw`` with an empty test split: what the chooser may see."""
  return dataclasses.replace(raw, test_images=raw.test_images[:0],
                             test_labels=raw.test_labels[:0])


def choose_length(config, raw, budget: int, *, lengths: Sequence[int] = LENGTHS,
                  arms: Sequence[str] = ARMS, tolerance: float = TOLERANCE, mesh=None,
                  measured: Measurements | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
  """The training length at ``budget``: the shortest of ``lengths`` at which doubling
  (the next length) gains every arm of ``arms`` less than ``tolerance`` of mean
  validation accuracy over the study's seeds; the longest if every step still gains.

  ``measured`` (made with :func:`length_made_with` of the same arguments) keeps
  each measurement as it is made and gives back those an earlier run made.

  Returns ``{"budget", "steps", "still_gaining", "tolerance", "lengths",
  "val_accuracy": {arm: {length: [per seed]}}, "seconds"}``; ``seconds`` is the
  wall time of the measurements, those an earlier run made included.
  """
  lengths = sorted(int(n) for n in lengths)
  if len(lengths) < 2 or lengths[0] < 1:
    raise ConfigError(f"choose_length: lengths={lengths} must be two or more step counts >= 1.")
  for arm in arms:
    entry = arms_lib.get(arm)
    # A fresh-sample arm's generator is trained (and kept) by a study's cell, not here.
    if (entry.stores_images or entry.init or entry.needs_baseline
        or isinstance(entry.source, arms_lib.Generator)):
      raise ConfigError(f"choose_length: arm {arm!r} needs more than the labeled set and its"
                        " batches; choose the baseline and online arms.")
  raw = without_test(raw)
  mesh = sharding.default(mesh)
  seeds = spec.seeds_of(config)
  splits = tuple(data_lib.make_splits(raw, num_labeled=int(budget), val_size=config.val_size,
                                      seed=s) for s in seeds)
  if not len(splits[0].val_labels):
    raise ConfigError("choose_length needs a validation split: set val_size > 0.")
  model = models.make_model(config.model, raw.num_classes)
  ctx = context_lib.Context(config=config, workdir="", mesh=mesh, budget=int(budget),
                            seeds=seeds, splits=splits, model=model, oracle=None, log=log)
  images, labels, counts = pad_to_common([(s.labeled_images, s.labeled_labels)
                                          for s in splits])
  val = (splits[0].val_images, splits[0].val_labels)
  accuracy: dict[str, dict[int, list[float]]] = {}
  seconds = 0.0
  for arm in arms:
    entry = arms_lib.get(arm)
    transform = entry.fn("transform")(ctx, arm) if entry.transform else None
    accuracy[arm] = {}
    for steps in lengths:
      key = f"N{budget}/{arm}@{steps}"
      done = measured.get(key) if measured is not None else None
      reused = done is not None
      if not reused:
        t0 = time.perf_counter()
        tcfg = spec.train_config(config, budget).copy_and_resolve_references()
        tcfg.steps = steps
        tcfg.checkpoint_every = 0
        res = train.fit(model, tcfg, images, labels, counts=counts, seeds=seeds, mesh=mesh,
                        image_shape=splits[0].image_shape, batch_transform=transform,
                        desc=f"choose {key}", progress=log)
        done = {"val_accuracy": evaluate.accuracy(model, res.state.variables, *val,
                                                  mesh=mesh).tolist(),
                "train_seconds": res.seconds, "seconds": time.perf_counter() - t0}
        if measured is not None:
          measured.add(key, done)
      accuracy[arm][steps] = done["val_accuracy"]
      seconds += done["seconds"]
      log(f"N{budget}/{arm}: {steps} steps, validation accuracy"
          f" {np.mean(accuracy[arm][steps]) * 100:.2f}%"
          + (" (measured before, reused)" if reused else ""))
  chosen, gaining = lengths[-1], True
  for short, long in zip(lengths, lengths[1:]):
    gains = [np.mean(accuracy[a][long]) - np.mean(accuracy[a][short]) for a in arms]
    if max(gains) < tolerance:
      chosen, gaining = short, False
      break
  return {"budget": int(budget), "steps": chosen, "still_gaining": gaining,
          "tolerance": tolerance, "lengths": lengths, "arms": list(arms),
          "seeds": list(seeds),
          "val_accuracy": {a: {str(n): v for n, v in acc.items()} for a, acc in accuracy.items()},
          "seconds": seconds}


def choose_oracle_length(config, raw, *, lengths: Sequence[int] = ORACLE_LENGTHS,
                         target: float = ORACLE_TARGET, val_size: int = ORACLE_VAL_SIZE,
                         mesh=None, measured: Measurements | None = None,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
  """The oracle's training length: the shortest of ``lengths`` at which the oracle of
  ``config.oracle`` (its model, augmentation, batch and schedule) reaches ``target``
  accuracy on ``val_size`` training images held out for the choice; the longest, with
  ``reached`` False, when none does.

  Lengths are tried shortest first, each a run of its own (its learning-rate schedule
  ends at its length), and the search stops at the first that reaches the target. The
  candidates train on the rest of the training split (seed 0's draw); the data has its
  test split removed first. ``measured`` (made with :func:`oracle_made_with` of the same
  arguments) keeps each measurement as it is made and gives back those an earlier run
  made.

  Returns ``{"steps", "reached", "target", "val_size", "lengths", "val_accuracy":
  {length: accuracy}, "train_seconds": {length: seconds}, "seconds"}``; ``seconds`` is
  the wall time of the measurements, those an earlier run made included.
  """
  lengths = sorted(int(n) for n in lengths)
  if not lengths or lengths[0] < 1:
    raise ConfigError(f"choose_oracle_length: lengths={lengths} must be step counts >= 1.")
  if not 0 < target <= 1:
    raise ConfigError(f"choose_oracle_length: target={target} must be an accuracy in (0, 1].")
  raw = without_test(raw)
  mesh = sharding.default(mesh)
  s = data_lib.make_splits(raw, num_labeled=-1, val_size=int(val_size), seed=0)
  if not len(s.val_labels):
    raise ConfigError("choose_oracle_length needs a validation split: val_size > 0.")
  cfg = config.oracle
  model = models.make_model(cfg.model, raw.num_classes)
  transform = context_lib.oracle_transform(cfg)
  accuracy, train_seconds, seconds = {}, {}, 0.0
  chosen, reached = lengths[-1], False
  for steps in lengths:
    key = f"oracle@{steps}"
    done = measured.get(key) if measured is not None else None
    reused = done is not None
    if not reused:
      t0 = time.perf_counter()
      tcfg = cfg.train.copy_and_resolve_references()
      tcfg.steps = steps
      tcfg.eval_every = tcfg.checkpoint_every = 0
      res = train.fit(model, tcfg, s.labeled_images, s.labeled_labels, seeds=[0], mesh=mesh,
                      batch_transform=transform, desc=f"choose {key}", progress=log)
      done = {"val_accuracy": float(evaluate.accuracy(model, res.state.variables, s.val_images,
                                                      s.val_labels, mesh=mesh)[0]),
              "train_seconds": res.seconds, "seconds": time.perf_counter() - t0}
      if measured is not None:
        measured.add(key, done)
    accuracy[steps], train_seconds[steps] = done["val_accuracy"], done["train_seconds"]
    seconds += done["seconds"]
    log(f"oracle: {steps} steps, validation accuracy {accuracy[steps] * 100:.2f}%"
        f" ({done['train_seconds']:.0f} s)" + (" (measured before, reused)" if reused else ""))
    if accuracy[steps] >= target:
      chosen, reached = steps, True
      break
  return {"steps": chosen, "reached": reached, "target": target, "val_size": int(val_size),
          "lengths": lengths, "model": cfg.model.to_dict(),
          "augment": cfg.get("augment", "none"),
          "val_accuracy": {str(n): a for n, a in accuracy.items()},
          "train_seconds": {str(n): t for n, t in train_seconds.items()},
          "seconds": seconds}


def choose_oracle(config, workdir: str, *, lengths: Sequence[int] = ORACLE_LENGTHS,
                  target: float = ORACLE_TARGET, val_size: int = ORACLE_VAL_SIZE,
                  log: Callable[[str], None] = print) -> str:
  """:func:`choose_oracle_length` of ``config``'s oracle, resuming the measurements
  ``workdir`` holds; writes ``WORKDIR/oracle_length_choice.json`` and returns a
  summary line."""
  # A refused run leaves no folder behind; the lock keeps a second job out.
  with fileio.writable_workdir(workdir), lock.workdir_lock(workdir, what="study"):
    raw = context_lib.load_data(config)
    measured = Measurements(workdir, ORACLE_MEASUREMENTS,
                            oracle_made_with(config, raw, lengths, target, val_size), log)
    out = choose_oracle_length(config, raw, lengths=lengths, target=target,
                               val_size=val_size, measured=measured, log=log)
    path = os.path.join(workdir, "oracle_length_choice.json")
    fileio.write_json(path, json.loads(json.dumps(out, default=list)))
  acc = out["val_accuracy"][str(out["steps"])]
  return "\n".join([
      f"oracle: {out['steps']} steps, validation accuracy {acc * 100:.2f}%"
      + ("" if out["reached"] else f" (below the target {out['target'] * 100:.1f}% at the"
         " longest length: a larger oracle.model is needed)"), f"written to {path}"])


def choose_lengths(config, workdir: str, *, lengths: Sequence[int] = LENGTHS,
                   arms: Sequence[str] = ARMS, tolerance: float = TOLERANCE,
                   log: Callable[[str], None] = print) -> str:
  """:func:`choose_length` at every budget of ``config``, resuming the measurements
  ``workdir`` holds; writes ``WORKDIR/length_choice.json`` and returns a summary line
  per budget."""
  # A refused run leaves no folder behind; the lock keeps a second job out.
  with fileio.writable_workdir(workdir), lock.workdir_lock(workdir, what="study"):
    raw = context_lib.load_data(config)
    measured = Measurements(workdir, LENGTH_MEASUREMENTS,
                            length_made_with(config, raw, lengths, arms, tolerance), log)
    out = [choose_length(config, raw, int(b), lengths=lengths, arms=arms, tolerance=tolerance,
                         measured=measured, log=log) for b in config.budgets]
    path = os.path.join(workdir, "length_choice.json")
    fileio.write_json(path, json.loads(json.dumps(out)))
  lines = [f"N{c['budget']}: {c['steps']} steps" + (" (still gaining at the longest)"
                                                    if c["still_gaining"] else "")
           for c in out]
  return "\n".join(lines + [f"written to {path}"])
