"""The registry of study arms: one entry per arm, read by everything that knows arms.

An arm turns a seed's labeled set into a training set: extra generated images
with labels (``generate``), an on-the-fly change of every batch
(``transform``) or first layers to start from (``init``). The configs (which
arms run), the runner (what each cell does), the report (order, groups,
colours) and the verdict rules (which arms a claim compares) all read this
registry. Adding an arm is one :func:`register` call plus its function; see
``tests/test_study.py::test_a_registered_arm_runs_in_a_tiny_study``.

Everything a generator is trained on is either the seed's labeled set or the
unlabeled pool, whose labels are never read. Dreams, adversarial sets and
pseudo-labels come from the seed's own baseline classifier, never from the
oracle.
"""

import dataclasses
from typing import Any, Callable

from dreamjax.errors import ConfigError
from dreamjax.study.artefacts import arm_key  # noqa: F401  (part of the arms' interface)

# Report colour of each group of arms.
GROUPS = {
    "reference": "#444444",    # the baseline
    "classical": "#22aa77",    # label-preserving transforms and noise
    "dream": "#3366cc",        # Deep Dream variants
    "adversarial": "#cc6633",  # FGSM / PGD, offline and in training
    "generator": "#aa33aa",    # VAEs and GANs
    "semi": "#999933",         # semi-supervised learning from the pool
    "transfer": "#888888",     # pretrained first layers
}


@dataclasses.dataclass(frozen=True)
class Arm:
  """What one arm of the study is and does.

  ``generate(ctx, arm_name, seed, splits, key) -> Generated``: the seed's extra
  labeled images. ``transform(ctx, arm_name) -> BatchTransform``: applied to
  every training batch inside the jitted step. ``init(ctx, arm_name) ->
  (init_fn, seconds)``: the classifier's starting weights. ``variants(config)``
  expands one config entry into several cells (``dream_sweep@0.2``, ...).
  """
  name: str
  group: str
  doc: str
  generate: Callable[..., Any] | None = None
  transform: Callable[..., Any] | None = None
  init: Callable[..., Any] | None = None
  needs_baseline: bool = False     # uses the seed's baseline classifier
  claims: tuple[str, ...] = ()     # verdict rules that read this arm
  variants: Callable[[Any], list[str]] | None = None
  # Each copy of the labeled set is made on its own, from its own key
  # (cells.copy_key): an M-copy set is the first M copies of any larger one, so
  # the exchange-rate cells (M = 2, 4, 8) reuse the copies a smaller M made.
  per_copy: bool = False
  # ``generate_seeds(ctx, arm_name, seeds, splits, keys) -> {seed: Generated}``:
  # the same sets as ``generate`` seed by seed, made together (faster).
  generate_seeds: Callable[..., Any] | None = None

  @property
  def color(self) -> str:
    return GROUPS[self.group]


REGISTRY: dict[str, Arm] = {}


def register(arm: Arm) -> Arm:
  if arm.group not in GROUPS:
    raise ValueError(f"arm {arm.name!r}: unknown group {arm.group!r}; one of {list(GROUPS)}.")
  if "@" in arm.name or arm.name in REGISTRY:
    raise ValueError(f"arm {arm.name!r} is already registered or has '@' in its name.")
  REGISTRY[arm.name] = arm
  return arm


def base_name(arm: str) -> str:
  """``dream_sweep@0.2`` -> ``dream_sweep``."""
  return arm.split("@")[0]


def get(arm: str) -> Arm:
  try:
    return REGISTRY[base_name(arm)]
  except KeyError:
    raise ConfigError(f"arms: unknown arm {arm!r}; choose from {list(REGISTRY)}.") from None


def names() -> tuple[str, ...]:
  """Every registered arm, in report order."""
  return tuple(REGISTRY)


def claimed_by(claim: str) -> tuple[str, ...]:
  return tuple(a.name for a in REGISTRY.values() if claim in a.claims)


def sort_key(arm: str) -> tuple[int, float]:
  """Report order: registration order, sweep variants by strength."""
  base = base_name(arm)
  order = list(REGISTRY).index(base) if base in REGISTRY else len(REGISTRY)
  return order, float(arm.split("@")[1]) if "@" in arm else 0.0


def color(arm: str) -> str:
  base = base_name(arm)
  return REGISTRY[base].color if base in REGISTRY else "#999999"


# --- the arms ------------------------------------------------------------------
# pylint: disable=g-import-not-at-top,wrong-import-position
from dreamjax.study import generate as gen  # noqa: E402

register(Arm("baseline", "reference", "the N labeled images alone"))
register(Arm("classical", "classical", "one offline copy per image: shift, rotation, brightness,"
             " contrast (dm-pix)", generate=gen.classical, claims=("C1", "C4", "C5"),
             per_copy=True))
register(Arm("classical_online", "classical", "a fresh classical transform of half of every"
             " batch, inside the train step", transform=gen.classical_online,
             claims=("C2", "C4", "C5")))
register(Arm("noise", "classical", "one offline copy per image with Gaussian pixel noise",
             generate=gen.noise, claims=("C2",), per_copy=True))
register(Arm("noise_online", "classical", "fresh Gaussian noise on half of every batch",
             transform=gen.noise_online, claims=("C2",)))
register(Arm("dream_subtle", "dream", "a few small Deep Dream steps from each image",
             generate=gen.dream, needs_baseline=True, per_copy=True, claims=("C2", "C5")))
register(Arm("dream_strong", "dream", "three octaves of Deep Dream: the classic look",
             generate=gen.dream, needs_baseline=True, per_copy=True, claims=("C1", "C5")))
register(Arm("dream_logit", "dream", "ascend each image's own class logit inside an ε-ball",
             generate=gen.dream, needs_baseline=True, per_copy=True, claims=("C3", "C5")))
register(Arm("dream_bn", "dream", "strong dream with DeepInversion's BatchNorm prior",
             generate=gen.dream, needs_baseline=True, per_copy=True, claims=("C5",)))
register(Arm("dream_online", "dream", "a subtle dream of half of every batch from the current"
             " model, inside the train step", transform=gen.dream_online, claims=("C2", "C5")))
register(Arm("dream_sweep", "dream", "dreams of increasing strength",
             generate=gen.dream, needs_baseline=True, variants=gen.sweep_variants,
             per_copy=True))
register(Arm("fgsm", "adversarial", "one offline FGSM copy per image",
             generate=gen.adversarial, needs_baseline=True, per_copy=True, claims=("C5",)))
register(Arm("pgd", "adversarial", "one offline PGD copy per image",
             generate=gen.adversarial, needs_baseline=True, per_copy=True, claims=("C3", "C5")))
register(Arm("pgd_train", "adversarial", "PGD adversarial training (Madry et al. 2018)",
             transform=gen.pgd_train, claims=("C2",)))
register(Arm("vae_small", "generator", "conditional VAE trained on the N labeled images",
             generate=gen.small_generator, generate_seeds=gen.small_generators,
             claims=("C4", "C5", "C6")))
register(Arm("gan_small", "generator", "conditional GAN trained on the N labeled images",
             generate=gen.small_generator, generate_seeds=gen.small_generators,
             claims=("C4", "C5", "C6")))
register(Arm("vae_pool", "generator", "VAE trained on the unlabeled pool, pseudo-labeled",
             generate=gen.pool_generator, needs_baseline=True, claims=("C5", "C6", "C7")))
register(Arm("gan_pool", "generator", "GAN trained on the unlabeled pool, pseudo-labeled",
             generate=gen.pool_generator, needs_baseline=True, claims=("C5", "C6", "C7")))
register(Arm("self_training", "semi", "pool images pseudo-labeled by the baseline where it"
             " is confident, plus online classical augmentation", generate=gen.self_training,
             transform=gen.classical_online, needs_baseline=True, claims=("C6", "C7")))
register(Arm("ae_pretrain", "transfer", "classifier trunk pretrained as an autoencoder on the"
             " pool", init=gen.pretrained_init, claims=("C7",)))
register(Arm("pretext_transfer", "transfer", "classifier trunk pretrained to predict rotations"
             " of pool images", init=gen.pretrained_init, claims=("C7",)))
