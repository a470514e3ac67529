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

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from dreamjax import data as data_lib
from dreamjax import generators
from dreamjax.methods import frechet
from dreamjax.plumbing import checkpoint, fileio, lock
from dreamjax.training import evaluate, loop, models
from dreamjax.plumbing import provenance, sharding
from dreamjax.training import train
from dreamjax.training import seeds as seeds_lib
from dreamjax.configs import arms as arms_lib
from dreamjax.configs import generator as gen_configs
from dreamjax.errors import ConfigError
from dreamjax.generators import common as gen_common
from dreamjax.training.seeds import pad_to_common
from dreamjax.study.run import artefacts
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


def measure(measured: Measurements | None, key: str,
            make: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
  """``key``'s measurement, ``(values, reused)``: the one ``measured`` holds, or else
  ``make()``'s values with the seconds it took, recorded at once (when ``measured`` is
  None nothing is kept)."""
  done = measured.get(key) if measured is not None else None
  if done is not None:
    return done, True
  t0 = time.perf_counter()
  done = {**make(), "seconds": time.perf_counter() - t0}
  if measured is not None:
    measured.add(key, done)
  return done, False


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

      def train_at(steps=steps, key=key, transform=transform):
        tcfg = spec.train_config(config, budget).copy_and_resolve_references()
        tcfg.steps = steps
        tcfg.checkpoint_every = 0
        res = train.fit(model, tcfg, images, labels, counts=counts, seeds=seeds, mesh=mesh,
                        image_shape=splits[0].image_shape, batch_transform=transform,
                        desc=f"choose {key}", progress=log)
        return {"val_accuracy": evaluate.accuracy(model, res.state.variables, *val,
                                                  mesh=mesh).tolist(),
                "train_seconds": res.seconds}

      done, reused = measure(measured, key, train_at)
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

    def train_at(steps=steps, key=key):
      tcfg = cfg.train.copy_and_resolve_references()
      tcfg.steps = steps
      tcfg.eval_every = tcfg.checkpoint_every = 0
      res = train.fit(model, tcfg, s.labeled_images, s.labeled_labels, seeds=[0], mesh=mesh,
                      batch_transform=transform, desc=f"choose {key}", progress=log)
      return {"val_accuracy": float(evaluate.accuracy(model, res.state.variables, s.val_images,
                                                      s.val_labels, mesh=mesh)[0]),
              "train_seconds": res.seconds}

    done, reused = measure(measured, key, train_at)
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


# --- the diffusion generators' training length --------------------------------------

# The diffusion arms sized, their candidate lengths (training steps, each double the
# last), the samples measured at each length, the seeds of the small model (the study's
# first ones) and the smallest improvement from doubling that still counts: a point of
# label preservation (or, for the unconditional model, of confidently labeled samples),
# or a tenth of the KID. All fixed before any choice was made with them.
GENERATOR_LENGTHS = {"diffusion_small": (1000, 2000, 4000, 8000),
                     "diffusion_pool": (2000, 4000, 8000, 16000)}
GENERATOR_SAMPLES = 500
GENERATOR_SEEDS = 3
LABEL_GAIN = 0.01
KID_GAIN = 0.10
# Samples of each set (and validation images) in the Fréchet distance kept for the record.
FRECHET_RECORD = 100
# Steps between the checkpoints of a generator's run (and one at every measured length).
GENERATOR_CHECKPOINT_EVERY = 500
GENERATOR_MEASUREMENTS = "generator_steps_measurements"


def generator_steps_made_with(config, raw, lengths: dict[str, Sequence[int]],
                              num_samples: int) -> dict[str, Any]:
  """What the generator length chooser's measurements, and its choice, depend on: each
  generator's config (less its length, which the chooser sets), the oracle, the data and
  the draws it is trained and measured on, and the chooser's own settings."""
  gens = {}
  for arm in lengths:
    g = json.loads(artefacts.generator_config(config, arm).to_json())
    g.pop("steps", None)
    gens[arm] = g
  return {"generators": gens, "oracle": json.loads(config.oracle.to_json()),
          "dataset": config.dataset, "data": _data(raw), "val_size": int(config.val_size),
          "seeds": list(generator_seeds(config)), "budget": int(config.primary_budget),
          "pool": {"budget": spec.pool_budget(config),
                   "subset": int(config.get("pool_subset", 0))},
          "pseudo_label_threshold": float(config.pseudo_label_threshold),
          "lengths": {a: sorted(int(n) for n in ls) for a, ls in lengths.items()},
          "num_samples": int(num_samples), "label_gain": LABEL_GAIN, "kid_gain": KID_GAIN}


def generator_seeds(config) -> tuple[int, ...]:
  """The classifier seeds whose small generators are sized: the study's first three."""
  return spec.seeds_of(config)[:GENERATOR_SEEDS]


def generator_rule(lengths: Sequence[int], label_share: dict[int, Sequence[float]],
                   kid: dict[int, Sequence[float]], label_gain: float = LABEL_GAIN,
                   kid_gain: float = KID_GAIN) -> tuple[int, bool]:
  """(chosen length, still improving): the shortest of ``lengths`` at which doubling (the
  next length) improves neither the mean label share by ``label_gain`` nor the mean KID by
  ``kid_gain`` of its value; the longest, with True, if every doubling improves one.

  A KID at or below zero (the samples as close to the validation images as the estimate
  can tell) cannot improve.
  """
  lengths = sorted(int(n) for n in lengths)
  for short, long in zip(lengths, lengths[1:]):
    labels_up = np.mean(label_share[long]) - np.mean(label_share[short]) >= label_gain
    k_short, k_long = float(np.mean(kid[short])), float(np.mean(kid[long]))
    kid_up = k_short > 0 and k_short - k_long >= kid_gain * k_short
    if not (labels_up or kid_up):
      return short, False
  return lengths[-1], True


class _StagedRun:
  """One generator run trained in stages to each measured length, as the study trains it.

  ``conditional``: the small models, every seed's in one program as
  :func:`dreamjax.generators.common.train_seeds` steps them; else the one pool model,
  as :func:`dreamjax.generators.common.train_prepared` does. The optimizer has no
  schedule and step ``s`` gets the key ``fold_in(root, s)`` either way, so the state
  after ``k`` steps of a longer run is the state of a ``k``-step run (a test checks it
  bit for bit). The state is saved every ``GENERATOR_CHECKPOINT_EVERY`` steps and at
  each length, so a killed run resumes where it stopped.
  """

  def __init__(self, gcfg, images, labels, keys, *, conditional: bool, mesh, path: str,
               fingerprint: str, desc: str, log):
    prepare = generators.PREPARE["diffusion"]
    self.mesh, self.path, self.fingerprint, self.desc, self.log = mesh, path, fingerprint, desc, log
    self.gcfg = gcfg
    if conditional:
      prepared = [prepare(gcfg, images[i], labels[i], keys[i], mesh=mesh)
                  for i in range(len(keys))]
      state = seeds_lib.stack([p[0] for p in prepared])
      roots = jnp.stack([jax.random.split(k)[1] for k in keys])
      data = (jnp.asarray(images), jnp.asarray(labels, jnp.int32))
      state, *data, roots = sharding.replicate(mesh, (state, *data, roots))
      self.step = gen_common._seed_step(prepared[0][1], (0, 0, 0, 0), mesh)  # pylint: disable=protected-access
      self.step_key = lambda s: seeds_lib.fold_in_each(roots, s)
      self.finish = lambda st: [p[2](seeds_lib.unstack(st, i)) for i, p in enumerate(prepared)]
    else:
      state, step, finish = prepare(gcfg, images, None, keys[0], mesh=mesh)
      root = jax.random.split(keys[0])[1]
      data = (jnp.asarray(images), None)
      state, *data, root = sharding.replicate(mesh, (state, *data, root))
      self.step = step
      self.step_key = lambda s: jax.random.fold_in(root, s)
      self.finish = lambda st: [finish(st)]
    self.data = tuple(data)
    self.state, self.at, self.seconds = state, 0, 0.0
    if os.path.exists(path):
      saved, meta = checkpoint.load_tree(path)
      if meta.get("fingerprint") != fingerprint:
        raise ConfigError(f"{path} is a generator run made with another config, data or"
                          " chooser settings than this run's; rerun with that config, or"
                          " pass a fresh --workdir.")
      restored = serialization.from_state_dict(jax.device_get(state), saved)
      self.state = sharding.replicate(mesh, restored)
      self.at, self.seconds = int(meta["step"]), float(meta["seconds"])
      log(f"{desc}: resuming from its checkpoint at step {self.at}")

  def train_to(self, steps: int) -> None:
    if steps < self.at:
      raise ConfigError(f"{self.path} is at step {self.at}, past {steps}, which is not"
                        " measured: delete it to train again.")
    t0, before = time.perf_counter(), self.seconds

    def save(state, step, history):
      del history
      self.seconds = before + time.perf_counter() - t0
      checkpoint.save_tree(self.path, state, {"fingerprint": self.fingerprint, "step": step,
                                              "seconds": self.seconds})

    hooks = loop.Hooks(save=save, save_every=GENERATOR_CHECKPOINT_EVERY,
                       divergence_hint="lower diffusion_learning_rate.")
    self.state, _ = loop.run(self.step, self.state, self.data, self.step_key, steps=steps,
                             start_step=self.at, log_every=int(self.gcfg.log_every),
                             desc=self.desc, hooks=hooks, log=self.log)
    self.at = steps

  def params(self) -> list[Any]:
    return self.finish(self.state)


def _generator_quality(gcfg, params, key, o, feature_layer: str, val_features, *,
                       labels=None, num: int = 0, threshold: float = 0.0,
                       mesh=None) -> dict[str, Any]:
  """The oracle's reading of ``num`` samples (or one per label of ``labels``)."""
  x = generators.sample_diffusion(gcfg, params, key, labels=labels,
                                  num=None if labels is not None else num, mesh=mesh)
  probs = generators.probabilities(o.model, o.variables, x, mesh=mesh)
  feats = frechet.features(o.model, o.variables, x, layer=feature_layer, mesh=mesh)
  out = {"kid": frechet.kernel_inception_distance(feats, val_features),
         "frechet_100": frechet.frechet_distance(feats[:FRECHET_RECORD],
                                                 val_features[:FRECHET_RECORD])}
  label = probs.argmax(-1)
  if labels is not None:
    out["label_share"] = float(np.mean(label == np.asarray(labels)))
  else:
    confident = probs.max(-1) >= threshold
    out["label_share"] = float(np.mean(confident))
    out["confident_per_class"] = np.bincount(label[confident],
                                             minlength=probs.shape[-1]).tolist()
  return out


def choose_generator_steps_in(config, raw, workdir: str, *,
                              lengths: dict[str, Sequence[int]] | None = None,
                              num_samples: int = GENERATOR_SAMPLES,
                              measured: Measurements | None = None, mesh=None,
                              log: Callable[[str], None] = print) -> dict[str, Any]:
  """The training length of ``diffusion_small`` and ``diffusion_pool``, by the oracle's
  measures of their samples against the validation split (:func:`generator_rule`).

  ``diffusion_small``: trained, as a study trains it, on each of the study's first
  three seeds' ``primary_budget`` labeled images, from that seed's key; ``num_samples``
  class-balanced samples per seed at each length, their label share the share the
  oracle labels as their conditioning class. ``diffusion_pool``: pool generator 0 of
  the study on the shared pool (the others, from other seeds, are not sized apart, to
  bound the cost); its label share is the share of ``num_samples`` samples the oracle
  labels with confidence ``>= pseudo_label_threshold``, with their classes. KID (the
  decision) and Fréchet distance on 100 samples (the record) are in the oracle's
  features against seed 0's validation split. Each model is trained once, to its
  longest length, and measured on the way. The oracle is the study's, trained (or
  restored) under ``workdir/oracle``. ``raw`` has its test split removed first.
  """
  lengths = {a: sorted(int(n) for n in ls) for a, ls in (lengths or GENERATOR_LENGTHS).items()}
  for arm, ls in lengths.items():
    if arm not in GENERATOR_LENGTHS:
      raise ConfigError(f"choose_generator_steps sizes {', '.join(GENERATOR_LENGTHS)}, not"
                        f" {arm!r}.")
    if len(ls) < 2 or ls[0] < 1:
      raise ConfigError(f"choose_generator_steps: {arm} lengths={ls} must be two or more"
                        " step counts >= 1.")
  raw = without_test(raw)
  mesh = sharding.default(mesh)
  seeds = generator_seeds(config)
  budget = int(config.primary_budget)
  fingerprint = measured.fingerprint if measured is not None else ""
  # The cost, before any of it is spent.
  for arm, ls in lengths.items():
    g = artefacts.generator_config(config, arm)
    batch = gen_configs.generator_batch_size(g, "diffusion")[1]
    copies = len(seeds) if arm == "diffusion_small" else 1
    passes = int(g.diffusion_sample_steps) * (2 if arm == "diffusion_small"
                                               and float(g.diffusion_guidance) != 1 else 1)
    log(f"{arm}: {ls[-1]:,} training steps of batch {batch} for each of {copies}"
        f" model(s), measured at {', '.join(map(str, ls))}: {num_samples} samples per model"
        f" per length, {passes} network passes each")
  the_oracle = context_lib.oracle(config, raw, workdir, mesh, log,
                                  record={"cell": "oracle", "arm": "oracle", "status": "ok"},
                                  write_record=False)
  layer = config.oracle.feature_layer
  val = data_lib.make_splits(raw, num_labeled=budget, val_size=config.val_size, seed=0)
  if not len(val.val_labels):
    raise ConfigError("choose_generator_steps needs a validation split: set val_size > 0.")
  val_features = frechet.features(the_oracle.model, the_oracle.variables, val.val_images,
                                  layer=layer, mesh=mesh)
  threshold = float(config.pseudo_label_threshold)
  out: dict[str, Any] = {"budget": budget, "seeds": list(seeds), "num_samples": num_samples,
                         "label_gain": LABEL_GAIN, "kid_gain": KID_GAIN,
                         "val_images": int(len(val.val_labels)), "arms": {}}
  seconds = 0.0
  for arm, ls in lengths.items():
    conditional = arm == "diffusion_small"
    gcfg = artefacts.generator_config(config, arm)
    gcfg.steps = ls[-1]
    if conditional:
      splits = [data_lib.make_splits(raw, num_labeled=budget, val_size=config.val_size, seed=s)
                for s in seeds]
      images = np.stack([s.labeled_images for s in splits])
      labels = np.stack([s.labeled_labels for s in splits])
      keys = [jax.random.split(artefacts.arm_key(s, arm))[0] for s in seeds]
      sample_keys = [jax.random.split(artefacts.arm_key(s, arm))[1] for s in seeds]
      names = [f"seed{s}" for s in seeds]
    else:
      images, labels = context_lib.shared_pool(config, raw), None
      # The study's pool generator 0: its key (artefacts.pool_generator_key) is made from
      # the study's first seed.
      keys = [artefacts.arm_key(spec.seeds_of(config)[0], f"{arm}_gen")]
      sample_keys = [artefacts.arm_key(spec.seeds_of(config)[0], f"{arm}_sizing")]
      names = ["g0"]
    run = None
    by_length = {}
    for steps in ls:
      key = f"{arm}@{steps}"

      def train_to(steps=steps):
        nonlocal run  # one staged run per model, begun at its first unmeasured length
        if run is None:
          run = _StagedRun(gcfg, images, labels, keys, conditional=conditional, mesh=mesh,
                           path=os.path.join(workdir, "generator_steps", f"{arm}.msgpack"),
                           fingerprint=fingerprint, desc=f"choose {arm}", log=log)
        run.train_to(steps)
        per = []
        want = (np.arange(num_samples) % raw.num_classes).astype(np.int32)
        for params, k in zip(run.params(), sample_keys):
          per.append(_generator_quality(gcfg, params, k, the_oracle, layer, val_features,
                                        labels=want if conditional else None, num=num_samples,
                                        threshold=threshold, mesh=mesh))
        return {"models": names, "train_seconds": run.seconds,
                **{field: [p[field] for p in per] for field in per[0]}}

      done, reused = measure(measured, key, train_to)
      by_length[steps] = done
      seconds += done["seconds"]
      log(f"{arm}: {steps} steps, label share {np.mean(done['label_share']) * 100:.1f}%,"
          f" KID {np.mean(done['kid']):.4g}, Fréchet (100) {np.mean(done['frechet_100']):.3g}"
          f" ({done['train_seconds']:.0f} s of training)"
          + (" (measured before, reused)" if reused else ""))
    chosen, improving = generator_rule(ls, {n: m["label_share"] for n, m in by_length.items()},
                                       {n: m["kid"] for n, m in by_length.items()})
    out["arms"][arm] = {
        "steps": chosen, "still_improving": improving, "lengths": ls,
        "label_share": ("the share of samples the oracle labels as their class"
                        if conditional else "the share of samples the oracle labels with"
                        f" confidence >= {threshold}"),
        "models": by_length[ls[0]]["models"],
        "by_length": {str(n): {k: v for k, v in m.items() if k not in ("key", "fingerprint")}
                      for n, m in by_length.items()}}
  out["seconds"] = seconds
  return out


def choose_generator_steps(config, workdir: str, *,
                           lengths: dict[str, Sequence[int]] | None = None,
                           num_samples: int = GENERATOR_SAMPLES,
                           log: Callable[[str], None] = print) -> str:
  """:func:`choose_generator_steps_in` of ``config``, resuming what ``workdir`` holds;
  writes ``WORKDIR/generator_steps_choice.json`` and returns a summary line per arm."""
  lengths = lengths or GENERATOR_LENGTHS
  with fileio.writable_workdir(workdir), lock.workdir_lock(workdir, what="study"):
    raw = without_test(context_lib.load_data(config))
    measured = Measurements(workdir, GENERATOR_MEASUREMENTS,
                            generator_steps_made_with(config, raw, lengths, num_samples), log)
    out = choose_generator_steps_in(config, raw, workdir, lengths=lengths,
                                    num_samples=num_samples, measured=measured, log=log)
    path = os.path.join(workdir, "generator_steps_choice.json")
    fileio.write_json(path, json.loads(json.dumps(out, default=fileio.jsonable)))
  lines = [f"{arm}: {c['steps']} steps" + (" (still improving at the longest)"
                                           if c["still_improving"] else "")
           for arm, c in out["arms"].items()]
  return "\n".join(lines + [f"written to {path}"])
