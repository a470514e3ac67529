"""The study's cost model: each job's predicted work, in image-steps, and its calibration.

Each job of the plan (:func:`dreamjax.study.plan.job_order`: a cell, or a
budget's C3 alignment) gets a predicted cost in *image-steps*, one image
through the classifier's forward and backward pass. A training step of a
cell is ``train.batch_size × num_seeds`` image-steps, so one timed step
prices them all (:func:`seconds_per_image_step`). What else a cell does is
read from its resolved arm (:func:`arm_kind`) and the config; what each part
costs is told in :mod:`dreamjax.study.run.progress`, which turns the model into a
running study's progress line and its ``--dry_run`` estimate.

Pure functions of a config and its plan: running a study and reporting it (the
fuller presets' times) both read them, so they live below both halves.
"""

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

from dreamjax.training import evaluate
from dreamjax.configs import arms as arms_lib
from dreamjax.configs import common
from dreamjax.configs import dreamer as dreamer_configs
from dreamjax.configs import generator as gen_configs
from dreamjax.study import claims, spec
from dreamjax.study.plan import ALIGNMENT

# A forward pass alone, in image-steps (forward + backward is about three forwards).
FORWARD = 1 / 3
# An offline classical or noise copy of one image: pixel operations, no network.
PIXEL_OPS = 0.1
# Extra cost of a training step whose batch is partly transformed by pixel operations.
ONLINE_PIXEL_OPS = 0.1
# Image-steps of one image through one training step of each generator or pretraining
# model (``generator_config(...).model``): a VAE runs an encoder and a decoder, a GAN its
# generator and its discriminator twice, an autoencoder decodes at full resolution, the
# rotation pretext trains the trunk alone. Rounded from the recorded cell times of a
# published study.
MODEL_STEP = {"vae": 2.0, "gan": 3.0, "ae": 4.0, "pretext": 2.0,
              # A U-Net's forward and backward pass: timed against the classifier's
              # training step on one machine, as no study has recorded it yet.
              "diffusion": 14.0}
# Extra cost, in plain training steps, of each batch-sized share of a semi-supervised
# step's unlabeled batch (FixMatch's mu): its weak copy's forward pass, its strong
# augmentation (a rotation is dear on a CPU), its strong copy's forward and gradient
# passes. Rounded from timed steps of the study's classifier (docs/methods.md, FixMatch).
UNLABELED_SHARE = 2.5
# Image-steps of one image through a step of the default pool dreamer (a dream step or a
# pretraining step), rounded from a study's recorded cell times: XLA:CPU runs its wider
# convolutions at a higher rate than the classifier's, so their work's ratio over-prices it.
DREAMER_STEP = 1.5
# Image-steps of one image through a training step of the default oracle (the "small"
# network, twice the classifier's widths, no BatchNorm): rounded from its step timed
# against the study classifier's on one XLA thread (benchmarks/oracle_step.py); a user's
# oracle network is priced from it by the ratio of their work.
ORACLE_STEP = 2.0
# Gradient passes per image of the C3 alignment: two dream directions and two attack
# directions, the PGD one of ``ALIGNMENT_PGD_STEPS`` steps, untargeted and targeted.
ALIGNMENT_PGD_STEPS = 10
ALIGNMENT_PASSES = 2 * (2 + 1 + ALIGNMENT_PGD_STEPS)
# Images of the test set and training split when the data is not at hand (Fashion-MNIST).
DEFAULT_TEST, DEFAULT_TRAIN = 10_000, 60_000


@dataclasses.dataclass(frozen=True)
class Sizes:
  """The data sizes a job's cost depends on."""
  num_test: int = DEFAULT_TEST
  num_train: int = DEFAULT_TRAIN

  @classmethod
  def of(cls, raw=None) -> "Sizes":
    if raw is None:
      return cls()
    return cls(len(raw.test_labels), len(raw.train_labels))


def arm_kind(arm: arms_lib.Resolved) -> str:
  """What an arm does, from its registry entry.

  ``plain`` (the baseline, and online arms: only training), ``pretrained`` (a
  trunk pretrained once on the pool), ``pool_generator`` (a generator arm
  that pseudo-labels with the baseline: its generator trains once, on the
  shared pool), ``small_generator`` (one generator per seed), their
  fresh-sample forms ``online_pool_generator``, ``online_small_generator``,
  ``bank_pool_generator`` and ``bank_small_generator``, ``dream``,
  ``attack``, ``pseudo_label`` (labels pool images with the baseline) or
  ``offline`` (copies made by pixel operations).
  """
  if arm.entry.init:
    return "pretrained"
  if isinstance(arm.source, arms_lib.Generator) and not arm.stores_images:
    # Fresh samples of a generator: drawn in the step (online) or from a bank.
    form = "bank" if arm.kind == "bank" else "online"
    return f"{form}_{'pool' if arm.source.data == 'pool' else 'small'}_generator"
  if not arm.stores_images:
    return "plain"
  if isinstance(arm.source, arms_lib.Generator):
    return "pool_generator" if arm.source.data == "pool" else "small_generator"
  if isinstance(arm.source, arms_lib.Classifier):
    return "dream"
  if isinstance(arm.source, arms_lib.Attack):
    return "attack"
  return "pseudo_label" if arm.needs_baseline else "offline"


def dream_steps(config, arm: arms_lib.Resolved) -> float:
  """Gradient steps per image of a dream arm (all its octaves), in the classifier's
  image-steps: a step through the deep pool dreamer costs :func:`dreamer_factor` of them.
  ``arm`` here and below: the arm as the study resolved it
  (:func:`dreamjax.configs.arms.resolve`)."""
  cfg = arm.dream
  return int(cfg.octaves) * int(cfg.steps) * dreamer_factor(config, arm)


def conv_work(model_cfg, hw: tuple[int, int] = (28, 28)) -> float:
  """Multiply-adds of a CNN's conv and first dense layer on one image (for a ratio only:
  the image size hardly changes the ratio of two networks that pool alike)."""
  h, w = hw
  channels, total = 1, 0.0
  for features, pool in zip(model_cfg.conv_features, model_cfg.pool):
    total += h * w * 9 * channels * int(features)
    channels = int(features)
    if pool:
      h, w = -(-h // 2), -(-w // 2)
  dense = tuple(model_cfg.dense_features)
  return total + h * w * channels * (int(dense[0]) if dense else 1)


def dreamer_factor(config, arm: arms_lib.Resolved) -> float:
  """Cost of an image-step through the arm's dreaming network over the classifier's:
  1 for the seed's own classifier; for the pool dreamer ``DREAMER_STEP``, scaled by
  the conv work of its network over the default one's (its config's network also
  prices a user's checkpoint)."""
  if not arm.dreams_through_pool_dreamer or "pool_dreamer" not in config:
    return 1.0
  default = dreamer_configs.get_config().model
  return DREAMER_STEP * conv_work(config.pool_dreamer.model) / conv_work(default)


def dreamer_work(config, arm: arms_lib.Resolved) -> float:
  """Image-steps of pretraining the pool dreamer (0 with a user's checkpoint)."""
  d = config.pool_dreamer
  if d.checkpoint:
    return 0.0
  views = 2 if d.objective == "contrastive" else 1
  return int(d.steps) * int(d.batch_size) * views * dreamer_factor(config, arm)


def generator_work(arm: arms_lib.Resolved) -> float:
  """Image-steps of training one generator or pretrained trunk of ``arm``."""
  g = arm.generator
  batch = (gen_configs.generator_batch_size(g)[1] if g.model in ("vae", "gan", "diffusion")
           else g.batch_size)
  return int(g.steps) * int(batch) * MODEL_STEP.get(g.model, 2.0)


def pool_generators_trained(config) -> int:
  """Pool generators a study trains per pool generator arm: G (``pool_generators``), or
  the number of seeds where that is fewer (a generator no seed reads is never trained)."""
  return min(spec.pool_generators(config), int(config.num_seeds))


def sample_work(arm: arms_lib.Resolved) -> float:
  """Image-steps of drawing one sample of ``arm``'s generator and labelling it.

  A decoder pass for the VAE and the GAN; a diffusion model runs its network
  once per sampler step, twice where guidance mixes in the unconditional one.
  """
  g = arm.generator
  if g.model != "diffusion":
    return 2 * FORWARD
  guided = g.conditional and float(g.diffusion_guidance) != 1.0
  passes = int(g.diffusion_sample_steps) * (2 if guided else 1)
  return passes * MODEL_STEP["diffusion"] * FORWARD + FORWARD


def transform_factor(config, arm: arms_lib.Resolved) -> float:
  """Cost of one of the arm's training steps over a plain one."""
  if arm.entry.unlabeled is not None:  # mu·B unlabeled images beside each labeled batch
    return 1.0 + UNLABELED_SHARE * float(arm.settings.get("mu", 1))
  if arm.entry.transform is None:
    return 1.0
  if isinstance(arm.source, arms_lib.Generator):
    if arm.kind == "bank":  # a gather of bank rows
      return 1.0 + ONLINE_PIXEL_OPS
    # The decoder's samples of the replaced share (a pool arm draws ``candidates`` per
    # replaced image, each labeled by the baseline).
    per_image = sample_work(arm) * float(arm.settings.get("candidates", 1))
    return 1.0 + float(config.online_fraction) * per_image
  if isinstance(arm.source, arms_lib.Attack):
    return 1.0 + float(config.attack.train_fraction) * int(config.attack.train_steps)
  if isinstance(arm.source, arms_lib.Classifier):
    return 1.0 + float(config.online_fraction) * dream_steps(config, arm)
  return 1.0 + ONLINE_PIXEL_OPS


def job_costs(config, jobs: Sequence[Any], arms: Mapping[str, arms_lib.Resolved],
              sizes: Sizes = Sizes(), charge_shared: bool = True) -> dict[str, float]:
  """Each job's predicted image-steps, by key, for jobs (cells) in the order they run.

  A model shared by the study (an arm's pool generators, a pretrained trunk, the
  pool dreamer) is charged to the first job of its arm, or to none with
  ``charge_shared=False`` (where it is a task of its own). The seeds' class-conditional
  generators of a stored arm and its fresh-sample twin are charged to the first of
  their cells at a budget: the other reads them back. ``arms``: the study's
  resolved arms (:func:`dreamjax.configs.arms.resolve`), by cell arm name.
  """
  k, batch = int(config.num_seeds), int(config.train.batch_size)
  copy_counts = sorted({int(config.copies), *(int(m) for m in config.exchange.copies)})
  e = config.eval
  shared_done: set[Any] = set()
  out = {}
  for cell in jobs:
    key, n = cell.key, int(cell.budget)
    if cell.job == ALIGNMENT:
      out[key] = int(e.alignment_num) * k * ALIGNMENT_PASSES
      continue
    arm = arms[cell.arm]
    kind = arm_kind(arm)
    train = int(spec.train_config(config, n).steps) * batch * k
    made = n * int(cell.copies) if arm.stores_images else 0  # images generated per seed
    new = made
    if arm.per_copy:  # the copies a smaller M of the arm made are reused
      new = n * (int(cell.copies) - max([m for m in copy_counts if m < cell.copies], default=0))
    gen = 0.0
    # A fresh-sample arm samples its stored twin's generator: one shared model for both.
    trains = arm.generator_arm or arm.base
    shared = kind in ("pool_generator", "online_pool_generator", "bank_pool_generator",
                      "pretrained")
    if charge_shared and shared and trains not in shared_done:
      shared_done.add(trains)
      trained = pool_generators_trained(config) if kind != "pretrained" else 1
      gen += trained * generator_work(arm)
    if charge_shared and dreamer_factor(config, arm) > 1 and "pool_dreamer" not in shared_done:
      shared_done.add("pool_dreamer")  # pretrained once, in the first cell that dreams with it
      gen += dreamer_work(config, arm)
    if (kind in ("small_generator", "online_small_generator", "bank_small_generator")
        and (n, trains) not in shared_done):
      # The seeds' generators, trained by the first of the twins' cells and kept for the rest.
      shared_done.add((n, trains))
      gen += k * generator_work(arm)
    if kind.startswith("bank_"):  # the bank, before training
      made_bank = n * int(arm.settings.bank_multiple)
      gen += k * made_bank * sample_work(arm)
    elif kind.startswith("online_"):  # the measured set, drawn as the step draws
      gen += k * n * int(cell.copies) * sample_work(arm) * float(
          arm.settings.get("candidates", 1))
    if kind in ("small_generator", "pool_generator"):
      gen += k * made * sample_work(arm)  # sampling (and pseudo-labels)
    elif kind == "dream":
      gen += k * new * dream_steps(config, arm)
    elif kind == "attack":
      gen += k * new * (1 if arm.source.method == "fgsm" else int(config.attack.pgd_steps))
    elif kind == "offline":
      gen += k * new * PIXEL_OPS
    elif kind == "pseudo_label":
      pool = int(config.get("pool_subset", 0)) or max(
          sizes.num_train - int(config.val_size) - n, 0)
      gen += k * pool * FORWARD
    evaluation = k * (sizes.num_test + (made or n)) * FORWARD
    robust = cell.main and (bool(e.robust_all_arms) or arm.base == "baseline"
                            or claims.measures_robustness(arm.base))  # as cells measures it
    if robust:
      evaluation += (k * len(e.robust_eps) * int(e.robust_steps) * int(e.robust_restarts)
                     * min(int(e.robust_num_test), sizes.num_test))
    if cell.main and arm.group == "generator":
      evaluation += train  # the classification accuracy score trains on the samples alone
    out[key] = train * transform_factor(config, arm) + gen + evaluation
  return out


def oracle_network(config) -> float:
  """Cost of an image through the oracle's network over the classifier's (a step or a
  forward pass)."""
  return ORACLE_STEP * conv_work(config.oracle.model) / conv_work(common.model_config("small"))


def oracle_factor(config) -> float:
  """Cost of one of the oracle's training steps over a plain step of the classifier: its
  network, and its online augmentation."""
  augment = config.oracle.get("augment", "none") != "none"
  return oracle_network(config) * (1.0 + ONLINE_PIXEL_OPS if augment else 1.0)


def oracle_cost(config, sizes: Sizes = Sizes()) -> float:
  """Image-steps of the oracle: its training, its test accuracy (on shifted test images
  too) and its Fréchet features."""
  o = config.oracle.train
  shifts = len(evaluate.DIRECTIONS) * len(tuple(config.oracle.get("shift_pixels", ())))
  return (int(o.steps) * int(o.batch_size) * oracle_factor(config)
          + ((1 + shifts) * sizes.num_test + int(config.eval.frechet_num_test)) * FORWARD
          * oracle_network(config))


def seconds_per_image_step(config, seconds_per_train_step: float) -> float:
  """The price of an image-step from a timed training step of every seed at once."""
  return seconds_per_train_step / (int(config.train.batch_size) * int(config.num_seeds))


def oracle_rate(config, oracle_record: dict[str, Any] | None) -> float | None:
  """Seconds per image-step of the oracle's recorded training, or None without it."""
  seconds = ((oracle_record or {}).get("timing") or {}).get("train_seconds")
  o = config.oracle.train
  if not seconds or seconds <= 0:
    return None
  return float(seconds) / (int(o.steps) * int(o.batch_size) * oracle_factor(config))


def record_seconds(record: dict[str, Any]) -> float | None:
  """The wall time a finished cell took, from its results.jsonl record (None if unknown).

  ``cell_seconds``, or training plus evaluation where that is longer: a
  baseline cell's model is trained before its cell starts, so only its
  ``train_seconds`` carry that time.
  """
  if record.get("status") != "ok":
    return None
  t = record.get("timing") or {}
  cell = t.get("cell_seconds")
  if cell is None:
    return None
  return max(float(cell), float(t.get("train_seconds", 0.0)) + float(t.get("eval_seconds", 0.0)))


def calibration_ratio(finished: Iterable[tuple[float, float]]) -> float | None:
  """Σ actual / Σ predicted seconds over the finished jobs' ``(predicted, actual)`` pairs.

  None when no finished job has a prediction (nothing to calibrate on). Big
  jobs weigh more than small ones, as they do in the time left.
  """
  pairs = [(p, a) for p, a in finished if p is not None and a is not None and p > 0]
  if not pairs:
    return None
  return sum(a for _, a in pairs) / sum(p for p, _ in pairs)


def time_left(remaining: Iterable[float], ratio: float = 1.0, running: float = 0.0,
              elapsed: float = 0.0) -> float:
  """Seconds left: the running job's calibrated prediction less its elapsed time (never
  below zero), plus the calibrated predictions of the jobs not started."""
  return max(ratio * running - elapsed, 0.0) + ratio * sum(remaining)


def average_left(actual: Sequence[float], jobs_left: int, elapsed: float = 0.0) -> float | None:
  """The fallback: the finished jobs' mean time for each job left, less the running one's
  elapsed time; None before any job finished."""
  if not actual:
    return None
  return max(sum(actual) / len(actual) * jobs_left - elapsed, 0.0)


def format_duration(seconds: float) -> str:
  """``42 s``, ``3.5 min``, ``48 min``, ``2 h 05 min``."""
  seconds = max(float(seconds), 0.0)
  if seconds < 60:
    return f"{seconds:.0f} s"
  if seconds < 600:
    return f"{seconds / 60:.1f} min"
  if seconds < 3600:
    return f"{seconds / 60:.0f} min"
  hours, minutes = divmod(int(round(seconds / 60)), 60)
  return f"{hours} h {minutes:02d} min"
