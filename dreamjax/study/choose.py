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
"""

import dataclasses
import json
import os
import time
from typing import Any, Callable, Sequence

import numpy as np

from dreamjax import data as data_lib
from dreamjax import evaluate, fileio, models, sharding, train
from dreamjax.configs import arms as arms_lib
from dreamjax.errors import ConfigError
from dreamjax.seeds import pad_to_common
from dreamjax.study import context as context_lib

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


def without_test(raw: data_lib.RawDataset) -> data_lib.RawDataset:
  """``raw`` with an empty test split: what the chooser may see."""
  return dataclasses.replace(raw, test_images=raw.test_images[:0],
                             test_labels=raw.test_labels[:0])


def choose_length(config, raw, budget: int, *, lengths: Sequence[int] = LENGTHS,
                  arms: Sequence[str] = ARMS, tolerance: float = TOLERANCE, mesh=None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
  """The training length at ``budget``: the shortest of ``lengths`` at which doubling
  (the next length) gains every arm of ``arms`` less than ``tolerance`` of mean
  validation accuracy over the study's seeds; the longest if every step still gains.

  Returns ``{"budget", "steps", "still_gaining", "tolerance", "lengths",
  "val_accuracy": {arm: {length: [per seed]}}, "seconds"}``.
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
  t0 = time.perf_counter()
  raw = without_test(raw)
  mesh = sharding.default(mesh)
  seeds = context_lib.seeds_of(config)
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
  for arm in arms:
    entry = arms_lib.get(arm)
    transform = entry.fn("transform")(ctx, arm) if entry.transform else None
    accuracy[arm] = {}
    for steps in lengths:
      tcfg = context_lib.train_config(config, budget).copy_and_resolve_references()
      tcfg.steps = steps
      tcfg.checkpoint_every = 0
      res = train.fit(model, tcfg, images, labels, counts=counts, seeds=seeds, mesh=mesh,
                      image_shape=splits[0].image_shape, batch_transform=transform,
                      desc=f"choose N{budget}/{arm}@{steps}", progress=log)
      accuracy[arm][steps] = evaluate.accuracy(model, res.state.variables, *val,
                                               mesh=mesh).tolist()
      log(f"N{budget}/{arm}: {steps} steps, validation accuracy"
          f" {np.mean(accuracy[arm][steps]) * 100:.2f}%")
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
          "seconds": time.perf_counter() - t0}


def choose_oracle_length(config, raw, *, lengths: Sequence[int] = ORACLE_LENGTHS,
                         target: float = ORACLE_TARGET, val_size: int = ORACLE_VAL_SIZE,
                         mesh=None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """The oracle's training length: the shortest of ``lengths`` at which the oracle of
  ``config.oracle`` (its model, augmentation, batch and schedule) reaches ``target``
  accuracy on ``val_size`` training images held out for the choice; the longest, with
  ``reached`` False, when none does.

  Lengths are tried shortest first, each a run of its own (its learning-rate schedule
  ends at its length), and the search stops at the first that reaches the target. The
  candidates train on the rest of the training split (seed 0's draw); the data has its
  test split removed first.

  Returns ``{"steps", "reached", "target", "val_size", "lengths", "val_accuracy":
  {length: accuracy}, "train_seconds": {length: seconds}, "seconds"}``.
  """
  lengths = sorted(int(n) for n in lengths)
  if not lengths or lengths[0] < 1:
    raise ConfigError(f"choose_oracle_length: lengths={lengths} must be step counts >= 1.")
  if not 0 < target <= 1:
    raise ConfigError(f"choose_oracle_length: target={target} must be an accuracy in (0, 1].")
  t0 = time.perf_counter()
  raw = without_test(raw)
  mesh = sharding.default(mesh)
  s = data_lib.make_splits(raw, num_labeled=-1, val_size=int(val_size), seed=0)
  if not len(s.val_labels):
    raise ConfigError("choose_oracle_length needs a validation split: val_size > 0.")
  cfg = config.oracle
  model = models.make_model(cfg.model, raw.num_classes)
  transform = context_lib.oracle_transform(cfg)
  accuracy, seconds = {}, {}
  chosen, reached = lengths[-1], False
  for steps in lengths:
    tcfg = cfg.train.copy_and_resolve_references()
    tcfg.steps = steps
    tcfg.eval_every = tcfg.checkpoint_every = 0
    res = train.fit(model, tcfg, s.labeled_images, s.labeled_labels, seeds=[0], mesh=mesh,
                    batch_transform=transform, desc=f"choose oracle@{steps}", progress=log)
    accuracy[steps] = float(evaluate.accuracy(model, res.state.variables, s.val_images,
                                              s.val_labels, mesh=mesh)[0])
    seconds[steps] = res.seconds
    log(f"oracle: {steps} steps, validation accuracy {accuracy[steps] * 100:.2f}%"
        f" ({res.seconds:.0f} s)")
    if accuracy[steps] >= target:
      chosen, reached = steps, True
      break
  return {"steps": chosen, "reached": reached, "target": target, "val_size": int(val_size),
          "lengths": lengths, "model": cfg.model.to_dict(),
          "augment": cfg.get("augment", "none"),
          "val_accuracy": {str(n): a for n, a in accuracy.items()},
          "train_seconds": {str(n): t for n, t in seconds.items()},
          "seconds": time.perf_counter() - t0}


def choose_oracle(config, workdir: str, log: Callable[[str], None] = print) -> str:
  """:func:`choose_oracle_length` of ``config``'s oracle; writes
  ``WORKDIR/oracle_length_choice.json`` and returns a summary line."""
  fileio.check_writable(workdir)
  out = choose_oracle_length(config, context_lib.load_data(config), log=log)
  path = os.path.join(workdir, "oracle_length_choice.json")
  fileio.write_json(path, json.loads(json.dumps(out, default=list)))
  acc = out["val_accuracy"][str(out["steps"])]
  return "\n".join([
      f"oracle: {out['steps']} steps, validation accuracy {acc * 100:.2f}%"
      + ("" if out["reached"] else f" (below the target {out['target'] * 100:.1f}% at the"
         " longest length: a larger oracle.model is needed)"), f"written to {path}"])


def choose_lengths(config, workdir: str, log: Callable[[str], None] = print) -> str:
  """:func:`choose_length` at every budget of ``config``; writes
  ``WORKDIR/length_choice.json`` and returns a summary line per budget."""
  raw = context_lib.load_data(config)
  out = [choose_length(config, raw, int(b), log=log) for b in config.budgets]
  fileio.check_writable(workdir)
  path = os.path.join(workdir, "length_choice.json")
  fileio.write_json(path, json.loads(json.dumps(out)))
  lines = [f"N{c['budget']}: {c['steps']} steps" + (" (still gaining at the longest)"
                                                    if c["still_gaining"] else "")
           for c in out]
  return "\n".join(lines + [f"written to {path}"])
