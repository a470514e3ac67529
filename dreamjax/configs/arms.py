"""The registry of study arms: the one description of each arm.

An arm turns a seed's labeled set into a training set. Its entry says
everything about it: its kind (what it adds to training), its source (which
model, generator or attack makes its images, as a typed value), its settings
with their defaults and checks, its report group and colour, and the function
that does the work. The study config lists arm names and may override any
setting by name (``--config.arm_settings.vae_pool.steps=100``); the runner
resolves them here. Which claims read an arm is declared by the rules
(:mod:`dreamjax.study.claims`), not here.

Functions are referenced as ``"module:function"`` (resolved on first use), so
this module imports nothing of the study; a test or a user may pass a callable.

Everything a generator is trained on is either the seed's labeled set or the
unlabeled pool, whose labels are never read. Dreams, adversarial sets and
pseudo-labels come from the seed's own baseline classifier, never from the
oracle.
"""

import dataclasses
import functools
import importlib
import json
from typing import Any, Callable, Mapping

import ml_collections

from dreamjax.configs import dream as dream_configs
from dreamjax.configs import generator as gen_configs
from dreamjax.errors import ConfigError

# Report colour of each group of arms.
GROUPS = {
    "reference": "#444444",    # the baseline
    "classical": "#22aa77",    # label-preserving transforms and noise
    "dream": "#3366cc",        # Deep Dream variants
    "adversarial": "#cc6633",  # FGSM / PGD, offline and in training
    "generator": "#aa33aa",    # VAEs, GANs and diffusion models
    "semi": "#999933",         # semi-supervised learning from the pool
    "transfer": "#888888",     # pretrained first layers
}

# What an arm adds to training.
KINDS = {
    "reference": "nothing: the labeled images alone",
    "stored": "copies of each labeled image made before training, stored with the cell",
    "online": "a fresh change of part of every batch, inside the jitted train step",
    "adversarial_training": "adversarial images of part of every batch (a robustness method)",
    "generator": "samples of a generative model, stored with the cell",
    "bank": "samples of a generative model drawn before training, many times the labeled set,"
            " replacing part of every batch inside the jitted train step, each used once"
            " before any repeats",
    "semi": "real unlabeled pool images with pseudo-labels",
    "transfer": "first layers pretrained on the unlabeled pool",
}


# --- sources: which model makes an arm's images, as typed values ----------------

@dataclasses.dataclass(frozen=True)
class Transform:
  """A fixed image transform (``classical`` or ``noise``, dreamjax.methods.augment)."""
  name: str


@dataclasses.dataclass(frozen=True)
class Classifier:
  """The network an arm dreams or attacks through: the seed's trained baseline
  (``baseline``); inside the train step, the model being trained (``current``); or
  ``pool_dreamer``, the deep network pretrained once per study on the unlabeled
  pool without its labels, or a user's own (dreamjax.methods.dreamer, the study config's
  ``pool_dreamer`` block), the same for every seed and cell."""
  which: str = "baseline"


@dataclasses.dataclass(frozen=True)
class Attack:
  """An attack (``fgsm`` or ``pgd``) on the seed's baseline, or on the model in training."""
  method: str
  model: Classifier = Classifier()


@dataclasses.dataclass(frozen=True)
class Generator:
  """A generative model of family ``family`` (a key of dreamjax.generators.TRAIN)
  trained on ``data``: ``labeled`` (the seed's labeled set, class-conditional, one per
  seed) or ``pool`` (the unlabeled pool, unconditional, trained once per study)."""
  family: str
  data: str

  @property
  def conditional(self) -> bool:
    return self.data == "labeled"


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A classifier trunk pretrained on the unlabeled pool with ``objective``
  (``ae``: reconstruction; ``pretext``: rotation prediction)."""
  objective: str


@dataclasses.dataclass(frozen=True)
class Pool:
  """The unlabeled pool's real images."""


Source = Transform | Classifier | Attack | Generator | Pretrained | Pool | None


@dataclasses.dataclass(frozen=True)
class Arm:
  """What one arm of the study is and does.

  ``generate(ctx, arm, seed, splits, key) -> Generated``: the seed's extra
  labeled images. ``transform(ctx, arm) -> BatchTransform``: applied to every
  training batch inside the jitted step. ``init(ctx, arm) -> (init_fn, seconds,
  image_steps)``: the classifier's starting weights. ``generate_seeds(ctx, arm,
  seeds, splits, keys) -> {seed: Generated}``: the same sets as ``generate`` seed
  by seed, made together. Each is a callable or ``"module:function"``; ``arm`` is
  this entry. ``unlabeled(ctx, arm) -> train.Unlabeled``: unlabeled images and the
  loss term a batch of them adds to every train step (semi-supervised arms).
  ``variants(arm, settings)`` expands one entry into several cells
  (``dream_sweep@0.2``, ...). ``settings`` are the defaults a config may override;
  ``check(settings)`` returns what is wrong with them (``[(field, must be), ...]``).
  """
  name: str
  group: str
  kind: str
  doc: str
  source: Source = None
  settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  generate: Callable[..., Any] | str | None = None
  transform: Callable[..., Any] | str | None = None
  init: Callable[..., Any] | str | None = None
  generate_seeds: Callable[..., Any] | str | None = None
  unlabeled: Callable[..., Any] | str | None = None
  variants: Callable[..., list[str]] | None = None
  check: Callable[[Any], list[tuple[str, str]]] | None = None
  needs_baseline: bool = False     # uses the seed's baseline classifier
  # Each copy of the labeled set is made on its own, from its own key
  # (cells.copy_key): an M-copy set is the first M copies of any larger one, so
  # the exchange-rate cells (M = 2, 4, 8) reuse the copies a smaller M made.
  per_copy: bool = False

  @property
  def color(self) -> str:
    return GROUPS[self.group]

  @property
  def stores_images(self) -> bool:
    return self.generate is not None

  def fn(self, role: str) -> Callable[..., Any] | None:
    """The callable of ``role`` (generate, transform, init, generate_seeds, unlabeled),
    resolved."""
    ref = getattr(self, role)
    if ref is None or callable(ref):
      return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


REGISTRY: dict[str, Arm] = {}


def register(arm: Arm) -> Arm:
  if arm.group not in GROUPS:
    raise ValueError(f"arm {arm.name!r}: unknown group {arm.group!r}; one of {list(GROUPS)}.")
  if arm.kind not in KINDS:
    raise ValueError(f"arm {arm.name!r}: unknown kind {arm.kind!r}; one of {list(KINDS)}.")
  if "@" in arm.name or "/" in arm.name or arm.name in REGISTRY:
    raise ValueError(f"arm {arm.name!r} is already registered or has '@' or '/' in its name.")
  REGISTRY[arm.name] = arm
  return arm


def base_name(arm: str) -> str:
  """``dream_sweep@0.2`` -> ``dream_sweep``."""
  return arm.split("@")[0]


def variant_value(arm: str) -> float | None:
  """``dream_sweep@0.2`` -> 0.2; None for an arm that is not a variant."""
  return float(arm.split("@")[1]) if "@" in arm else None


def generator_arm(arm: str) -> str | None:
  """The stored generator arm (kind ``generator``) whose generator ``arm`` samples: itself
  for a stored one; for a fresh-sample arm, the stored arm of the same source, so the
  two sample one generator trained alike (its settings, its key, its cache). None for an
  arm without a generator source."""
  entry = get(arm)
  if not isinstance(entry.source, Generator):
    return None
  if entry.kind == "generator":
    return entry.name
  for other in REGISTRY.values():
    if other.kind == "generator" and other.source == entry.source:
      return other.name
  raise ConfigError(f"arm {arm!r}: no stored generator arm has its source {entry.source}.")


def get(arm: str) -> Arm:
  try:
    return REGISTRY[base_name(arm)]
  except KeyError:
    raise ConfigError(f"arms: unknown arm {arm!r}; choose from {list(REGISTRY)}.") from None


def names() -> tuple[str, ...]:
  """Every registered arm, in report order."""
  return tuple(REGISTRY)


def sort_key(arm: str) -> tuple[int, float]:
  """Report order: registration order, variants by their value."""
  base = base_name(arm)
  order = list(REGISTRY).index(base) if base in REGISTRY else len(REGISTRY)
  return order, variant_value(arm) or 0.0


def color(arm: str) -> str:
  base = base_name(arm)
  return REGISTRY[base].color if base in REGISTRY else "#999999"


# --- settings --------------------------------------------------------------------

def settings_config() -> ml_collections.ConfigDict:
  """Every registered arm's settings at their defaults: the study config's
  ``arm_settings`` block, which a preset or a flag overrides by name."""
  return ml_collections.ConfigDict(
      {a.name: ml_collections.ConfigDict(dict(a.settings)) for a in REGISTRY.values()
       if a.settings})


def settings(config, arm: str) -> ml_collections.ConfigDict:
  """``arm``'s settings in ``config``: the entry's defaults, overridden by
  ``config.arm_settings.<arm>`` field by field."""
  entry = get(arm)
  out = ml_collections.ConfigDict(dict(entry.settings))
  given = (config.get("arm_settings") or {}).get(entry.name)
  if given:
    for field, value in dict(given).items():
      if field not in out:
        raise ConfigError(f"arm_settings.{entry.name}.{field}: {entry.name} has no setting"
                          f" {field!r}; its settings are {sorted(out)}.")
      out[field] = value
  return out


def validate(config) -> None:
  """Refuses unknown arms and settings, and settings an arm's checks reject."""
  for name in (config.get("arm_settings") or {}):
    if name not in REGISTRY:
      raise ConfigError(f"arm_settings.{name}: no such arm; choose from {list(REGISTRY)}.")
  for name in {base_name(a) for a in config.arms}:
    _check(get(name), settings(config, name))


def _check(entry: Arm, s) -> None:
  for field, must in (entry.check(s) if entry.check else []):
    raise ConfigError(f"arm_settings.{entry.name}.{field}={s[field]} is invalid: must be"
                      f" {must}.")


def cells_of(config, arm: str) -> list[str]:
  """The cell arm names of one config entry: itself, or its variants."""
  entry = get(arm)
  return entry.variants(entry, settings(config, arm)) if entry.variants else [arm]


# --- arms resolved against a study config, once ------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Resolved:
  """One arm as a study config makes it: what the code that runs a study reads of it.

  :func:`resolve` makes one per cell arm (``dream_sweep@0.2`` too) before any
  work starts, so nothing downstream looks the arm up by name or rebuilds its
  settings. ``settings`` and the derived configs are shared: read them, never
  change them.
  """
  name: str                      # the cell arm: "dream_sweep@0.2", "classical"
  entry: Arm
  settings: ml_collections.ConfigDict  # the entry's defaults, overridden by arm_settings
  variant: float | None          # a variant's value (a sweep's strength), else None
  # The stored generator arm whose generator this arm samples (itself for a stored
  # one, :func:`generator_arm`) and that arm's settings; None without a generator.
  generator_arm: str | None
  generator_settings: ml_collections.ConfigDict | None
  # Whatever the derived configs read of the study config: the generator preset and
  # its overrides, and the dream steps (0: the presets' own).
  study: Mapping[str, Any]
  # The entry of config.arms it is a cell arm of ("dream_sweep" for dream_sweep@0.2); ""
  # for an arm the study reads without running it (a stored twin, a matched dream).
  of: str = ""

  @property
  def source(self) -> Source:
    return self.entry.source

  @property
  def kind(self) -> str:
    return self.entry.kind

  @property
  def group(self) -> str:
    return self.entry.group

  @property
  def base(self) -> str:
    """The registry name (``dream_sweep`` of ``dream_sweep@0.2``)."""
    return self.entry.name

  @property
  def per_copy(self) -> bool:
    return self.entry.per_copy

  @property
  def needs_baseline(self) -> bool:
    return self.entry.needs_baseline

  @property
  def stores_images(self) -> bool:
    return self.entry.stores_images

  @property
  def dreams_through_pool_dreamer(self) -> bool:
    """It dreams through the study's pool dreamer, so the config's ``pool_dreamer``
    block is read."""
    return self.source == _POOL_DREAMER

  def fn(self, role: str) -> Callable[..., Any] | None:
    return self.entry.fn(role)

  @property
  def fingerprint(self) -> str:
    """Its settings as its training runs' checkpoints depend on them: a fresh-sample
    arm's include its stored twin's, whose generator it samples."""
    out = self.settings.to_dict()
    if self.generator_arm is not None and self.generator_arm != self.base:
      out = {**out, self.generator_arm: self.generator_settings.to_dict()}
    return json.dumps(out, sort_keys=True, default=str)

  @functools.cached_property
  def generator(self) -> ml_collections.ConfigDict:
    """The generator config of a generator or pretraining arm (a fresh-sample arm's:
    its stored twin's, trained with the twin's settings)."""
    source = self.source
    g = gen_configs.get_config(self.study["generator_preset"])
    if isinstance(source, Generator):
      g.model, g.conditional = source.family, source.conditional
    elif isinstance(source, Pretrained):
      g.model, g.conditional = source.objective, False
    else:
      raise ConfigError(f"arm {self.name!r} trains no generator or trunk (its source is"
                        f" {source}).")
    g.source = "labeled" if g.conditional else "pool"
    own = self.generator_settings if self.generator_settings is not None else self.settings
    g.steps = int(own.steps)
    g.update(self.study["generator_overrides"])
    return g

  @functools.cached_property
  def dream(self) -> ml_collections.ConfigDict:
    """The dream block of a dream arm (of one variant, ``dream_sweep@STRENGTH``)."""
    steps = int(self.study["dream_steps"])
    if self.variant is not None:
      strengths = tuple(float(x) for x in self.settings.strengths)
      layers = tuple(self.settings.get("layers", ("conv1",)))  # a sweep may name its layers
      for s, cfg in dream_configs.sweep_presets(strengths, steps or dream_configs.SWEEP_STEPS,
                                                layers):
        if abs(s - self.variant) < 1e-9:
          return cfg
      raise ConfigError(f"no dream sweep preset of strength {self.variant}.")
    cfg = dream_configs.get_preset(self.settings.preset)
    return dream_configs.with_steps(cfg, steps) if steps else cfg


def resolve(config) -> dict[str, Resolved]:
  """Every arm a study of ``config`` reads, resolved once, by cell arm name.

  Its cell arms first, in the order of ``config.arms`` (a variant entry gives its
  variants, ``dream_sweep@0.2`` ...), then the arms their functions read that the
  study does not run (a fresh-sample arm's stored twin, the dream a matched noise
  copies), with ``of`` empty. Refuses unknown arms and settings, and
  settings an arm's checks reject (:func:`validate`), those of the arms read too.
  """
  validate(config)
  out: dict[str, Resolved] = {}
  for name in config.arms:
    entry = get(name)
    given = settings(config, name)
    for cell_arm in (entry.variants(entry, given) if entry.variants else [name]):
      out[cell_arm] = dataclasses.replace(resolve_arm(config, cell_arm), of=name)
  for arm in list(out.values()):
    for other in (arm.generator_arm, arm.settings.get("match")):
      if other and other not in out:
        out[other] = resolve_arm(config, other)
        _check(out[other].entry, out[other].settings)
  return out


def resolve_arm(config, arm: str) -> Resolved:
  """One arm (``dream_sweep@0.2`` too) resolved against ``config``, unchecked: what
  :func:`resolve` makes for each arm of a study."""
  entry = get(arm)
  twin = generator_arm(arm)
  study = {"generator_preset": config.get("generator_preset", "default"),
           "generator_overrides": (config.get("generator_overrides") or
                                   ml_collections.ConfigDict()).to_dict(),
           "dream_steps": config.get("dream_steps", 0)}
  return Resolved(arm, entry, settings(config, arm), variant_value(arm), twin,
                  settings(config, twin) if twin is not None else None, study)


# --- checks of the built-in settings ----------------------------------------------

def _positive_steps(s) -> list[tuple[str, str]]:
  return [] if int(s.steps) == s.steps and s.steps >= 1 else [("steps", "a whole number >= 1")]


def _dream_preset(s) -> list[tuple[str, str]]:
  return [] if s.preset in dream_configs.PRESETS else [
      ("preset", f"one of {sorted(dream_configs.PRESETS)}")]


def _strengths(s) -> list[tuple[str, str]]:
  ok = len(s.strengths) >= 1 and all(float(x) > 0 for x in s.strengths)
  return [] if ok else [("strengths", "a non-empty list of positive strengths")]


def _matched_dream(s) -> list[tuple[str, str]]:
  entry = REGISTRY.get(s.match)
  if entry is None or "preset" not in entry.settings:
    return [("match", "a registered dream arm with a preset (e.g. dream_online)")]
  return [] if int(s.num_images) >= 2 else [("num_images", "a whole number >= 2")]


def _pool_generator_settings(s) -> list[tuple[str, str]]:
  return _positive_steps(s) or (
      [] if isinstance(s.balanced, bool) else [("balanced", "True or False")])


def _fixmatch_settings(s) -> list[tuple[str, str]]:
  if not (int(s.mu) == s.mu and s.mu >= 1):
    return [("mu", "a whole number >= 1 (unlabeled images per labeled one in a step)")]
  if not 0 <= s.threshold <= 1:
    return [("threshold", "in [0, 1]")]
  return [] if s.lambda_u >= 0 else [("lambda_u", ">= 0")]


def _whole_at_least_one(field: str):
  def check(s) -> list[tuple[str, str]]:
    v = s[field]
    return [] if int(v) == v and v >= 1 else [(field, "a whole number >= 1")]
  return check


def _sweep_variants(arm: Arm, s) -> list[str]:
  return [f"{arm.name}@{float(x):g}" for x in s.strengths]


# --- the arms ------------------------------------------------------------------
_GEN = "dreamjax.study.run.generate"


def _dream(name: str, preset: str, doc: str) -> Arm:
  return Arm(name, "dream", "stored", doc, source=Classifier("baseline"),
             settings={"preset": preset}, generate=f"{_GEN}:dream", check=_dream_preset,
             needs_baseline=True, per_copy=True)


def _generator(family: str, data: str, steps: int, doc: str) -> Arm:
  name = f"{family}_{'small' if data == 'labeled' else 'pool'}"
  if data == "labeled":
    return Arm(name, "generator", "generator", doc, source=Generator(family, data),
               settings={"steps": steps}, generate=f"{_GEN}:small_generator",
               generate_seeds=f"{_GEN}:small_generators", check=_positive_steps)
  # balanced: the pseudo-labeled samples kept are the most confident of each class, at
  # most M·N/classes per class, so the classes the labeler finds easy cannot crowd out
  # the rest (False: every sample above the threshold, in the order drawn).
  return Arm(name, "generator", "generator", doc, source=Generator(family, data),
             settings={"steps": steps, "balanced": True}, generate=f"{_GEN}:pool_generator",
             check=_pool_generator_settings, needs_baseline=True)


register(Arm("baseline", "reference", "reference", "the N labeled images alone"))
register(Arm("classical", "classical", "stored", "one offline copy per image: shift, rotation,"
             " brightness, contrast (dm-pix)", source=Transform("classical"),
             generate=f"{_GEN}:classical", per_copy=True))
register(Arm("classical_online", "classical", "online", "a fresh classical transform of half"
             " of every batch, inside the train step", source=Transform("classical"),
             transform=f"{_GEN}:classical_online"))
register(Arm("noise", "classical", "stored", "one offline copy per image with Gaussian pixel"
             " noise", source=Transform("noise"), generate=f"{_GEN}:noise", per_copy=True))
register(Arm("noise_online", "classical", "online", "fresh Gaussian noise on half of every batch",
             source=Transform("noise"), transform=f"{_GEN}:noise_online"))
register(Arm("noise_matched_online", "classical", "online", "fresh Gaussian noise on half of"
             " every batch, its σ set so its mean L2 size equals the online dream's (C2's"
             " matched comparator)", source=Transform("noise"),
             settings={"match": "dream_online", "num_images": 256},
             transform=f"{_GEN}:noise_matched_online", check=_matched_dream,
             needs_baseline=True))
register(_dream("dream_subtle", "subtle", "a few small Deep Dream steps from each image"))
register(_dream("dream_strong", "strong", "three octaves of Deep Dream: the classic look"))
register(_dream("dream_logit", "logit", "ascend each image's own class logit inside an ε-ball"))
register(_dream("dream_bn", "bn", "strong dream with DeepInversion's BatchNorm prior"))
register(Arm("dream_online", "dream", "online", "a subtle dream of half of every batch from the"
             " current model, inside the train step", source=Classifier("current"),
             settings={"preset": "subtle"}, transform=f"{_GEN}:dream_online",
             check=_dream_preset))
register(Arm("dream_sweep", "dream", "stored", "dreams of increasing strength",
             source=Classifier("baseline"), settings={"strengths": (0.05, 0.2, 0.8, 3.2)},
             generate=f"{_GEN}:dream", check=_strengths, variants=_sweep_variants,
             needs_baseline=True, per_copy=True))

# Deep Dream through a network deeper than the classifier and trained on far more (and
# other) data than its N labels, as Deep Dream through Inception was: the pool dreamer.
# Its one config is the study's pool_dreamer block, since all four arms share it.
_POOL_DREAMER = Classifier("pool_dreamer")


def _deep_dream(name: str, preset: str, doc: str) -> Arm:
  return Arm(name, "dream", "stored", doc, source=_POOL_DREAMER, settings={"preset": preset},
             generate=f"{_GEN}:dream", check=_dream_preset, per_copy=True)


def _deep_sweep_check(s) -> list[tuple[str, str]]:
  ok = len(s.layers) >= 1 and all(isinstance(x, str) and x for x in s.layers)
  return _strengths(s) + ([] if ok else [("layers", "a non-empty list of layer names")])


register(_deep_dream("deep_dream_subtle", "deep_subtle", "a subtle dream of every image"
                     " through the deep pool dreamer"))
register(_deep_dream("deep_dream_strong", "deep_strong", "three octaves of Deep Dream through"
                     " the deep pool dreamer: the classic look"))
register(Arm("deep_dream_online", "dream", "online", "a subtle dream of half of every batch"
             " through the deep pool dreamer, inside the train step", source=_POOL_DREAMER,
             settings={"preset": "deep_subtle"}, transform=f"{_GEN}:dream_online",
             check=_dream_preset))
register(Arm("deep_dream_sweep", "dream", "stored", "dreams of increasing strength through the"
             " deep pool dreamer", source=_POOL_DREAMER,
             settings={"strengths": (0.05, 0.2, 0.8, 3.2), "layers": ("conv3",)},
             generate=f"{_GEN}:dream", check=_deep_sweep_check, variants=_sweep_variants,
             per_copy=True))
register(Arm("fgsm", "adversarial", "stored", "one offline FGSM copy per image",
             source=Attack("fgsm"), generate=f"{_GEN}:adversarial", needs_baseline=True,
             per_copy=True))
register(Arm("pgd", "adversarial", "stored", "one offline PGD copy per image",
             source=Attack("pgd"), generate=f"{_GEN}:adversarial", needs_baseline=True,
             per_copy=True))
register(Arm("pgd_train", "adversarial", "adversarial_training", "PGD adversarial training"
             " (Madry et al. 2018)", source=Attack("pgd", Classifier("current")),
             transform=f"{_GEN}:pgd_train"))
register(_generator("vae", "labeled", 8000, "conditional VAE trained on the N labeled images"))
register(_generator("gan", "labeled", 3000, "conditional GAN trained on the N labeled images"))
register(_generator("vae", "pool", 12000, "VAE trained on the unlabeled pool, pseudo-labeled"))
register(_generator("gan", "pool", 16000, "GAN trained on the unlabeled pool, pseudo-labeled"))
# The diffusion lengths are the generator length chooser's choice on the validation split
# (docs/results.md, "Sizing the diffusion arms"): the longest of each fixed grid.
register(_generator("diffusion", "labeled", 8000, "class-conditional flow-matching diffusion"
                   " model trained on the N labeled images, sampled with guidance"))
register(_generator("diffusion", "pool", 16000, "flow-matching diffusion model trained on the"
                   " unlabeled pool, pseudo-labeled"))
# Fresh samples in every batch: the same generators as the stored arms above (each
# samples its stored twin's generator, trained with its settings and key), drawn anew
# inside the train step for the share of every batch the online arms replace. The
# VAE's and GAN's decoders run in the step; a diffusion model's sampler runs tens of
# network passes per image, so its arms draw from a bank made before training.
_FRESH = "dreamjax.study.run.fresh"
register(Arm("vae_small_online", "generator", "online", "fresh samples of vae_small's"
             " generator in half of every batch, drawn in the train step with the labels of"
             " the images they replace", source=Generator("vae", "labeled"),
             transform=f"{_FRESH}:small_online"))
register(Arm("gan_small_online", "generator", "online", "fresh samples of gan_small's"
             " generator in half of every batch, drawn in the train step with the labels of"
             " the images they replace", source=Generator("gan", "labeled"),
             transform=f"{_FRESH}:small_online"))
# candidates: samples drawn per replaced image; the baseline labels them in the step and
# each replaced image takes a confident one of its own class, else stays.
register(Arm("vae_pool_online", "generator", "online", "fresh samples of vae_pool's"
             " generator in half of every batch, pseudo-labeled in the train step by the"
             " seed's baseline: each replaced image takes a confident sample of its class",
             source=Generator("vae", "pool"), settings={"candidates": 4},
             transform=f"{_FRESH}:pool_online", check=_whole_at_least_one("candidates"),
             needs_baseline=True))
register(Arm("gan_pool_online", "generator", "online", "fresh samples of gan_pool's"
             " generator in half of every batch, pseudo-labeled in the train step by the"
             " seed's baseline: each replaced image takes a confident sample of its class",
             source=Generator("gan", "pool"), settings={"candidates": 4},
             transform=f"{_FRESH}:pool_online", check=_whole_at_least_one("candidates"),
             needs_baseline=True))
# bank_multiple: the bank holds this many samples per labeled image.
register(Arm("diffusion_small_online", "generator", "bank", "half of every batch from a bank"
             " of 20·N samples of diffusion_small's model, drawn with the labeled set's"
             " labels before training", source=Generator("diffusion", "labeled"),
             settings={"bank_multiple": 20}, transform=f"{_FRESH}:small_bank",
             check=_whole_at_least_one("bank_multiple")))
register(Arm("diffusion_pool_online", "generator", "bank", "half of every batch from a bank"
             " of 20·N samples of diffusion_pool's model, pseudo-labeled by the seed's"
             " baseline as diffusion_pool's are (confident, class-balanced)",
             source=Generator("diffusion", "pool"), settings={"bank_multiple": 20},
             transform=f"{_FRESH}:pool_bank", check=_whole_at_least_one("bank_multiple"),
             needs_baseline=True))
register(Arm("self_training", "semi", "semi", "pool images pseudo-labeled by the baseline where"
             " it is confident, plus online classical augmentation", source=Pool(),
             generate=f"{_GEN}:self_training", transform=f"{_GEN}:classical_online",
             needs_baseline=True))
# mu: 3 unlabeled images per labeled one, where the paper takes 7: each unlabeled image
# costs a weak forward pass, a strong augmentation and a gradient pass, so a step's cost
# grows with mu, and 7 would make the cell several times dearer again on a CPU
# (docs/methods.md, FixMatch).
register(Arm("fixmatch", "semi", "semi", "FixMatch (Sohn et al. 2020): every step adds mu·B"
             " pool images, each strong augmentation trained towards the current model's"
             " confident label of a weak one", source=Pool(),
             settings={"mu": 3, "threshold": 0.95, "lambda_u": 1.0},
             transform=f"{_GEN}:fixmatch_weak", unlabeled=f"{_GEN}:fixmatch",
             check=_fixmatch_settings))
register(Arm("ae_pretrain", "transfer", "transfer", "classifier trunk pretrained as an"
             " autoencoder on the pool", source=Pretrained("ae"), settings={"steps": 2000},
             init=f"{_GEN}:pretrained_init", check=_positive_steps))
register(Arm("pretext_transfer", "transfer", "transfer", "classifier trunk pretrained to predict"
             " rotations of pool images", source=Pretrained("pretext"), settings={"steps": 2000},
             init=f"{_GEN}:pretrained_init", check=_positive_steps))
