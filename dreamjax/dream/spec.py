"""The dream settings: checked against the model before any compute, then frozen.

``validate(cfg, model)`` refuses a bad setting with a :class:`ConfigError`
naming the field and its valid choices. ``DreamSpec`` is the hashable form the
jitted code takes as a static argument: equal settings share one compiled
program per input shape.
"""

import dataclasses
import math

from dreamjax.training import models
from dreamjax.dream import objectives
from dreamjax.errors import ConfigError

NORMALIZE = ("mean_abs", "std")
EPS_NORMS = ("linf", "l2")


@dataclasses.dataclass(frozen=True)
class DreamSpec:
  objective: objectives.Objective
  steps: int = 10
  step_size: float = 0.01
  normalize: str = "mean_abs"
  jitter: int = 0
  octaves: int = 1
  octave_scale: float = 1.4
  eps: float = 0.0
  eps_norm: str = "linf"
  tv_weight: float = 0.0
  l2_weight: float = 0.0
  bn_weight: float = 0.0

  @property
  def total_steps(self) -> int:
    return self.steps * self.octaves

  def replace(self, **changes) -> "DreamSpec":
    return dataclasses.replace(self, **changes)


def _layer_width(model, layer: str) -> int:
  kind, i = layer.rstrip("0123456789"), layer[len(layer.rstrip("0123456789")):]
  if layer == "logits":
    return model.num_classes
  return (model.conv_features if kind == "conv" else model.dense_features)[int(i)]


def _number(name, value, ok, valid):
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (
      isinstance(value, float) and not math.isfinite(value)) or not ok(value):
    raise ConfigError(f"dream.{name}={value!r} is invalid: must be {valid}.")


def validate(cfg, model) -> None:
  """Raises :class:`ConfigError` for the first bad field of the dream block ``cfg``."""
  names = models.layer_names(model)
  if cfg.objective not in objectives.OBJECTIVES:
    raise ConfigError(f"dream.objective={cfg.objective!r} is unknown; choose one of"
                      f" {', '.join(objectives.OBJECTIVES)}.")
  layers = objectives.layer_tuple(cfg.layers)
  if not layers:
    raise ConfigError(f"dream.layers is empty; name at least one of the model's layers:"
                      f" {', '.join(names)}.")
  for layer in layers:
    if layer not in names:
      raise ConfigError(f"dream.layers has {layer!r}, which is not a layer of this model;"
                        f" its layers are {', '.join(names)}.")
  weights = tuple(cfg.layer_weights)
  if weights and len(weights) != len(layers):
    raise ConfigError(f"dream.layer_weights={weights} needs one weight per layer"
                      f" ({len(layers)}: {', '.join(layers)}), or () for all 1.")
  if cfg.objective in ("channel", "neuron"):
    width = _layer_width(model, layers[0])
    _number("channel", cfg.channel, lambda v: isinstance(v, int) and 0 <= v < width,
            f"an integer in [0, {width}) (the width of {layers[0]})")
  if cfg.objective == "neuron":
    pos = tuple(cfg.position)
    if len(pos) != 2 or any(not isinstance(p, int) or p < -1 for p in pos):
      raise ConfigError(f"dream.position={pos} must be (row, col) with each >= 0, or -1"
                        " for the centre.")
  if cfg.objective == "logit":
    _number("target_class", cfg.target_class,
            lambda v: isinstance(v, int) and -1 <= v < model.num_classes,
            f"an integer in [0, {model.num_classes}), or -1 for each image's own label")
  _number("steps", cfg.steps, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
  _number("step_size", cfg.step_size, lambda v: v > 0, "> 0")
  if cfg.normalize not in NORMALIZE:
    raise ConfigError(f"dream.normalize={cfg.normalize!r} is unknown; choose one of"
                      f" {', '.join(NORMALIZE)}.")
  _number("jitter", cfg.jitter, lambda v: isinstance(v, int) and v >= 0,
          "an integer >= 0 (pixels)")
  _number("octaves", cfg.octaves, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
  _number("octave_scale", cfg.octave_scale, lambda v: v > 1, "> 1")
  _number("eps", cfg.eps, lambda v: v >= 0, ">= 0 (0: no projection)")
  if cfg.eps_norm not in EPS_NORMS:
    raise ConfigError(f"dream.eps_norm={cfg.eps_norm!r} is unknown; choose one of"
                      f" {', '.join(EPS_NORMS)}.")
  for name in ("tv_weight", "l2_weight", "bn_weight"):
    _number(name, cfg[name], lambda v: v >= 0, ">= 0 (0: off)")
  if cfg.bn_weight > 0 and not model.use_bn:
    raise ConfigError(f"dream.bn_weight={cfg.bn_weight} needs a classifier with BatchNorm"
                      " (model.use_bn=True); this one has none. Set dream.bn_weight=0 or"
                      " train with --config.model.use_bn=True.")


def from_config(cfg, model) -> DreamSpec:
  """Validates ``cfg`` against ``model`` and freezes it."""
  validate(cfg, model)
  return DreamSpec(
      objective=objectives.from_config(cfg), steps=int(cfg.steps),
      step_size=float(cfg.step_size), normalize=str(cfg.normalize), jitter=int(cfg.jitter),
      octaves=int(cfg.octaves), octave_scale=float(cfg.octave_scale), eps=float(cfg.eps),
      eps_norm=str(cfg.eps_norm), tv_weight=float(cfg.tv_weight),
      l2_weight=float(cfg.l2_weight), bn_weight=float(cfg.bn_weight))
