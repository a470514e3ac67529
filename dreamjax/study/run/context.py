"""What the cells of one label budget share, built once and never changed.

:func:`oracle` trains (or resumes) the all-labels reference classifier once per
study; :func:`for_budget` draws every seed's splits and makes the classifier;
:func:`with_baseline` adds the budget's baseline models, which the arms that
dream, attack or pseudo-label read. Arms receive the finished :class:`Context`.
"""

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from dreamjax import data as data_lib
from dreamjax.methods import adversarial, augment, frechet
from dreamjax.plumbing import checkpoint, fileio
from dreamjax.training import evaluate, metrics, models, train
from dreamjax.configs import arms as arms_lib
from dreamjax.errors import CheckpointError, ConfigError
from dreamjax.training.seeds import pad_to_common, unstack
from dreamjax.study import plan, records, spec

RESULTS = "results.jsonl"


@dataclasses.dataclass(frozen=True)
class Oracle:
  """The measuring instrument: an all-labels classifier, never a teacher."""
  model: Any
  variables: Any            # one model's variables
  test_features: np.ndarray  # its features of the first frechet_num_test test images
  record: dict[str, Any]    # its results.jsonl line


@dataclasses.dataclass(frozen=True)
class Context:
  config: Any
  workdir: str
  mesh: Mesh
  budget: int
  seeds: tuple[int, ...]
  splits: tuple[data_lib.Splits, ...]  # one per seed
  model: Any                           # the classifier every arm trains
  oracle: Oracle
  baseline: train.FitResult | None = None  # None only while the baseline cell runs
  log: Callable[[str], None] = print
  copies: int = 1                      # M: generated images per labeled image
  shared_pool: np.ndarray | None = None  # what the pool-trained models train on
  # The study's arms resolved once (arms.resolve), by cell arm name; None in a context
  # made for one piece of work (a test, the length chooser): then each is resolved here.
  arms: Mapping[str, arms_lib.Resolved] | None = None

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  @property
  def train_cfg(self):
    """The classifier's training config at this budget
    (:func:`dreamjax.study.spec.train_config`)."""
    return spec.train_config(self.config, self.budget)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.splits[0].image_shape

  @property
  def num_classes(self) -> int:
    return self.splits[0].num_classes

  @property
  def test(self) -> data_lib.Splits:
    """The split whose validation and test images every cell is measured on."""
    return self.splits[0]

  def pool_images(self, seed: int) -> np.ndarray:
    pool = self.splits[self.seeds.index(seed)].pool_images
    return pool[:self.config.pool_subset] if self.config.pool_subset else pool

  def pool_for_shared_models(self) -> np.ndarray:
    """The unlabeled images the pool generators and pretrained trunks train on.

    Seed 0's pool at :func:`dreamjax.study.spec.pool_budget`, the same for every budget of a
    study, so those models train once per study.
    """
    if self.shared_pool is None:
      raise RuntimeError("this context was made without its shared pool (context.for_budget).")
    return self.shared_pool

  def baseline_model(self, seed: int):
    """(model, variables) of one seed's baseline classifier."""
    if self.baseline is None:
      raise RuntimeError("the baseline is not trained yet; arms that need it run after it.")
    return self.model, unstack(self.baseline.state.variables, self.seeds.index(seed))

  def arm(self, name: str) -> arms_lib.Resolved:
    """Arm ``name`` (a cell arm, or an arm one reads) as the study resolved it."""
    if self.arms is not None and name in self.arms:
      return self.arms[name]
    return arms_lib.resolve_arm(self.config, name)

  def fit(self, run: str, images, labels, counts, *, arm: arms_lib.Resolved, transform=None,
          init_fn=None, unlabeled=None):
    """Trains the budget's classifier on one cell's training sets, every seed at once.

    ``run`` names the training run (``classical_M4``, ``vae_small/cas``): its folder
    under the budget's keeps its checkpoint and TensorBoard events, and its
    checkpoint's fingerprint holds it and ``arm``'s settings, which its training
    depends on. ``unlabeled``: a :class:`dreamjax.training.train.Unlabeled` term of
    every step (semi-supervised arms).
    """
    folder = self.path(plan.folder_of(f"N{self.budget}/{run}"))
    return train.fit(self.model, self.train_cfg, images, labels, counts=counts,
                     seeds=self.seeds, mesh=self.mesh, image_shape=self.image_shape,
                     init_fn=init_fn, batch_transform=transform, unlabeled=unlabeled,
                     val=(self.test.val_images, self.test.val_labels),
                     checkpoint_dir=os.path.join(folder, "checkpoint"),
                     metrics_dir=os.path.join(folder, metrics.LOGDIR),
                     fingerprint=self.fingerprint(run, arm), desc=f"N{self.budget}/{run}",
                     progress=self.log, earlier_fingerprints=self.earlier_fingerprints(run, arm))

  def accuracy(self, variables_K) -> np.ndarray:
    """Each seed's classifier's accuracy on the test images every cell is measured on."""
    return evaluate.accuracy(self.model, variables_K, self.test.test_images,
                             self.test.test_labels, mesh=self.mesh)

  def robust_accuracy(self, variables_K) -> dict[str, list[float]]:
    """Each seed's classifier's PGD robust accuracy at every ε of ``eval.robust_eps``, on
    the first ``eval.robust_num_test`` test images, from the budget's own key."""
    e = self.config.eval
    x = self.test.test_images[:e.robust_num_test]
    y = self.test.test_labels[:e.robust_num_test]
    return {f"{eps:g}": np.asarray(adversarial.robust_accuracy(
        self.model, variables_K, x, y, jax.random.key(10_000 + self.budget), eps=float(eps),
        steps=e.robust_steps, restarts=e.robust_restarts, mesh=self.mesh)).tolist()
            for eps in e.robust_eps}

  def fingerprint(self, run: str, arm: arms_lib.Resolved) -> str:
    """What training run ``run`` of ``arm`` depends on, and its checkpoint records: the
    study's training fields, the run's name and the arm's settings."""
    return records.cell_fingerprint(self.config) + run + arm.fingerprint

  def earlier_fingerprints(self, run: str, arm: arms_lib.Resolved) -> tuple[str, ...]:
    """What earlier versions recorded for the run: an exchange cell's (``classical_M4``)
    without its arm's settings. Its checkpoint resumes, as the workdir's recorded config
    already fixes those settings (records.check_workdir)."""
    if run == arm.name or run.startswith(f"{arm.name}/"):
      return ()
    return (records.cell_fingerprint(self.config) + run,)

  def training_sets(self, generated: dict[int, Any]):
    """Each seed's labeled set plus its generated images, padded to one shape."""
    sets = []
    for seed, s in zip(self.seeds, self.splits):
      x, y = s.labeled_images, s.labeled_labels
      if seed in generated and len(generated[seed].labels):
        x = np.concatenate([x, generated[seed].images])
        y = np.concatenate([y, generated[seed].labels])
      sets.append((x, y))
    return pad_to_common(sets)


def load_data(config) -> data_lib.RawDataset:
  return data_lib.load_dataset(config.dataset, config.data_dir or None)


def oracle_transform(cfg):
  """The oracle's :data:`dreamjax.training.train.BatchTransform`: the project's classical transform
  (:func:`dreamjax.methods.augment.classical_config`) online on ``augment_fraction`` of every
  batch, or None for ``augment="none"`` (and a config recorded before the field existed)."""
  if cfg.get("augment", "none") == "none":
    return None
  return augment.online_transform(augment.classical_fn(augment.classical_config()),
                                  float(cfg.augment_fraction))


# Oracle fields added after workdirs were made that a recorded oracle without them did not
# train with: left out of its checkpoint's fingerprint when they hold that oracle's value,
# so such a workdir resumes its oracle. ``shift_pixels`` is measured after training: never in it.
ORACLE_TRAINING_FIELDS_ADDED = {"augment": "none", "augment_fraction": None}


def oracle_fingerprint(config) -> str:
  """What the oracle's checkpoint depends on: its block, less what does not change its
  training, and the dataset."""
  cfg = json.loads(config.oracle.to_json())
  cfg.pop("shift_pixels", None)
  if cfg.get("augment", "none") == "none":
    for field in ORACLE_TRAINING_FIELDS_ADDED:
      cfg.pop(field, None)
  return json.dumps(cfg) + config.dataset


def oracle_cache_path(config, raw: data_lib.RawDataset) -> str | None:
  """Where the oracle of ``config`` on ``raw`` is kept across studies on this machine
  (beside the pool models, :func:`dreamjax.study.run.artefacts.cache_dir`), keyed by
  everything its weights depend on: its training config, the data, the validation
  split it leaves out, the software, the XLA flags and threads; None without
  ``generator_cache`` or a data digest. The oracle reads no seed of the study, so every
  study of the same data and config (fresh seeds too) trains the same one."""
  if not config.get("generator_cache") or not raw.digest:
    return None
  from dreamjax import _xla  # pylint: disable=g-import-not-at-top
  from dreamjax.plumbing import provenance  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import artefacts  # pylint: disable=g-import-not-at-top
  parts = {"oracle": oracle_fingerprint(config), "val_size": int(config.val_size),
           "data": raw.digest, "versions": provenance.versions(),
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "threads": _xla.cpu_threads()}
  key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
  return os.path.join(artefacts.cache_dir(), f"oracle_{key[:32]}")


def _restore_cached_oracle(config, cached: str | None, checkpoint_dir: str, log) -> bool:
  """Copies a cached oracle's finished checkpoint into the workdir (where a study trains
  it), so that training resumes at its end; True if it did. A cached one that is not
  a finished checkpoint of this config is removed (the study trains and keeps another)."""
  if not cached or not os.path.isdir(cached) or os.path.exists(checkpoint_dir):
    return False
  try:
    meta = checkpoint.read_meta(cached)
    finished = int(meta.get("step", -1)) == int(config.oracle.train.steps)  # key: the config
  except (CheckpointError, TypeError, ValueError):
    finished = False
  if not finished:
    log(f"oracle: {cached} is not a finished oracle of this config; removed, training it")
    shutil.rmtree(cached, ignore_errors=True)
    return False
  try:
    tmp = f"{checkpoint_dir}.from_cache.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(cached, tmp)
    os.replace(tmp, checkpoint_dir)
  except OSError as e:  # an unreadable cache trains the oracle, as without one
    log(f"oracle: not restored from {cached} ({e}); training it")
    return False
  log(f"oracle: restored from the model cache ({cached})")
  return True


def _keep_oracle(cached: str | None, checkpoint_dir: str, log) -> None:
  """Copies the workdir's finished oracle checkpoint into the cache (whole, or not at all)."""
  if not cached or os.path.isdir(cached):
    return
  tmp = f"{cached}.tmp.{os.getpid()}"
  try:
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    shutil.copytree(checkpoint_dir, tmp)
    os.replace(tmp, cached)
  except OSError as e:  # a full or read-only cache costs the next study the training
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"oracle: not kept in the model cache ({e})")


def oracle(config, raw: data_lib.RawDataset, workdir: str, mesh: Mesh, log,
           record: dict[str, Any] | None = None, write_record: bool = True,
           cache: bool = False) -> Oracle:
  """Trains (or resumes) the reference classifier on every training label.

  With ``cache`` (the one task or process that trains a study's oracle), an oracle
  trained by an earlier study on this machine with the same config and data
  (:func:`oracle_cache_path`) is restored instead of trained: its checkpoint is
  copied into the workdir, where training finds it finished, so its weights,
  history, training seconds and record are that study's; a newly trained one is
  kept there for the next study. Other tasks restore the workdir's checkpoint.

  Its record holds its test and validation accuracy and, for each distance of
  ``oracle.shift_pixels``, its accuracy on shifted test images
  (:func:`dreamjax.training.evaluate.shift_invariance`): measurements of the instrument,
  never read by a rule. The record is ``record`` if given, else read from
  results.jsonl, else measured (and appended there with ``write_record``; a
  study's worker leaves that to the driver, the one writer of results.jsonl).
  """
  cfg = config.oracle
  model = models.make_model(cfg.model, raw.num_classes)
  s = data_lib.make_splits(raw, num_labeled=-1, val_size=config.val_size, seed=0)
  folder = os.path.join(workdir, "oracle")
  checkpoint_dir = os.path.join(folder, "checkpoint")
  cached = oracle_cache_path(config, raw) if cache else None
  restored = _restore_cached_oracle(config, cached, checkpoint_dir, log)
  res = train.fit(model, cfg.train, s.labeled_images, s.labeled_labels, seeds=[0], mesh=mesh,
                  batch_transform=oracle_transform(cfg),
                  val=(s.val_images, s.val_labels), checkpoint_dir=checkpoint_dir,
                  metrics_dir=os.path.join(folder, metrics.LOGDIR),
                  fingerprint=oracle_fingerprint(config), desc="oracle", progress=log)
  if not restored:
    _keep_oracle(cached, checkpoint_dir, log)
  variables = unstack(res.state.variables, 0)
  if record is None:
    record = {r["cell"]: r for r in fileio.read_jsonl(os.path.join(workdir, RESULTS),
                                                     repair=write_record)}.get("oracle")
  if record is None:
    acc = evaluate.accuracy(model, res.state.variables, s.test_images, s.test_labels, mesh=mesh)
    record = {"cell": "oracle", "arm": "oracle", "status": "ok", "test_accuracy": acc.tolist(),
              "history": res.history, "timing": {"train_seconds": res.seconds}}
    pixels = tuple(cfg.get("shift_pixels", ()))
    if pixels:  # a config from before these measurements records what it recorded then
      record["val_accuracy"] = evaluate.accuracy(model, res.state.variables, s.val_images,
                                                 s.val_labels, mesh=mesh).tolist()
      record["shift_invariance"] = evaluate.shift_invariance(
          model, variables, s.test_images, s.test_labels, pixels, mesh=mesh)
    if write_record:
      fileio.append_jsonl(os.path.join(workdir, RESULTS), record)
    log(f"oracle test accuracy {acc[0]:.4f}")
  test = s.test_images[:config.eval.frechet_num_test]
  # A chooser's data has no test split (choose.without_test): no test features then.
  features = (frechet.features(model, variables, test, layer=cfg.feature_layer, mesh=mesh)
              if len(test) else np.zeros((0, 0), np.float32))
  return Oracle(model, variables, features, record)


def shared_pool(config, raw) -> np.ndarray:
  """The first seed's unlabeled pool at :func:`dreamjax.study.spec.pool_budget` (first
  ``pool_subset`` images if set): fresh seeds get a fresh pool, and so fresh pool models."""
  budget = spec.pool_budget(config)
  try:
    s = data_lib.make_splits(raw, num_labeled=budget, val_size=config.val_size,
                             seed=spec.seeds_of(config)[0])
  except ConfigError as e:
    raise ConfigError(f"pool_budget: the shared pool excludes the labeled images of budget"
                      f" {budget}, which this dataset cannot provide ({e}) Set"
                      " --config.pool_budget=0 (the study's largest budget) or a smaller"
                      " value.") from e
  pool = s.pool_images
  return pool[:config.pool_subset] if config.pool_subset else pool


def for_budget(config, raw, budget: int, workdir: str, mesh: Mesh, the_oracle: Oracle,
               log, pool: np.ndarray | None = None,
               arms: Mapping[str, arms_lib.Resolved] | None = None) -> Context:
  """The budget's context without its baseline (:func:`with_baseline` adds it).

  ``pool``: :func:`shared_pool`, made here if not given (a study makes it once);
  ``arms``: the study's arms (:func:`dreamjax.configs.arms.resolve`), resolved here if
  not given.
  """
  seeds = spec.seeds_of(config)
  splits = tuple(data_lib.make_splits(raw, num_labeled=budget, val_size=config.val_size, seed=s)
                 for s in seeds)
  return Context(config=config, workdir=workdir, mesh=mesh, budget=budget, seeds=seeds,
                 splits=splits, model=models.make_model(config.model, raw.num_classes),
                 oracle=the_oracle, log=log, copies=int(config.copies),
                 shared_pool=shared_pool(config, raw) if pool is None else pool,
                 arms=arms_lib.resolve(config) if arms is None else arms)


def with_baseline(ctx: Context) -> Context:
  """``ctx`` with the baseline trained (or restored from its checkpoint)."""
  images, labels, counts = ctx.training_sets({})
  return dataclasses.replace(ctx, baseline=ctx.fit("baseline", images, labels, counts,
                                                   arm=ctx.arm("baseline")))
