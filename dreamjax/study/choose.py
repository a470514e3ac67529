"""Choices the protocol tunes, made by a written procedure on the validation split alone.

The one tuned choice of the protocol is how long the classifier trains at a
label budget. :func:`choose_length` trains the arms whose gain grows with
training (the baseline and online classical augmentation, by default) at each
candidate length, and picks the shortest length after which doubling gains no
arm more than ``tolerance`` of mean validation accuracy. It reads the
validation split only: the data it is given has its test split removed before
anything is drawn, so no test label can reach the choice.
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
    if entry.stores_images or entry.init or entry.needs_baseline:
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
