"""Dream objectives: plain functions ``(logits, acts, labels) -> score [N]``.

``acts`` maps the classifier's layer names (``models.layer_names``) to their
activations; ``labels`` are the images' own labels. Each objective scores every
image on its own, so a batch's gradient is each image's own gradient and a
dream never depends on which other images share its batch (the BatchNorm
prior is the one deliberate exception). Any function of this signature can be
passed as ``DreamSpec.objective``; the ones here are frozen dataclasses so two
equal objectives hash equal and reuse one compiled program.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

Objective = Callable[[jax.Array, dict[str, jax.Array], jax.Array], jax.Array]


def _per_image_mean(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1).mean(axis=1)


@dataclasses.dataclass(frozen=True)
class LayerMean:
  """Mean activation of a layer."""
  layer: str

  def __call__(self, logits, acts, labels):
    return _per_image_mean(acts[self.layer])


@dataclasses.dataclass(frozen=True)
class LayerL2:
  """Mean squared activation: the original DeepDream's objective, whose
  gradient is the activation itself (scaled to a per-element mean)."""
  layer: str

  def __call__(self, logits, acts, labels):
    return _per_image_mean(jnp.square(acts[self.layer]))


@dataclasses.dataclass(frozen=True)
class Channel:
  """Mean activation of one channel (conv map) or one unit (dense layer)."""
  layer: str
  channel: int

  def __call__(self, logits, acts, labels):
    return _per_image_mean(acts[self.layer][..., self.channel])


@dataclasses.dataclass(frozen=True)
class Neuron:
  """One unit: channel ``channel`` at ``position`` (row, col) of a conv map,
  the map's centre where a coordinate is -1; a dense layer's unit ``channel``."""
  layer: str
  channel: int
  position: tuple[int, int] = (-1, -1)

  def __call__(self, logits, acts, labels):
    a = acts[self.layer]
    if a.ndim == 2:
      return a[:, self.channel]
    row, col = self.position
    row = a.shape[1] // 2 if row < 0 else row
    col = a.shape[2] // 2 if col < 0 else col
    return a[:, row, col, self.channel]


@dataclasses.dataclass(frozen=True)
class ClassLogit:
  """A class logit: ``target_class`` for every image, or (-1) each image's own label."""
  target_class: int = -1

  def __call__(self, logits, acts, labels):
    if self.target_class < 0:
      return jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=1)[:, 0]
    return logits[:, self.target_class]


@dataclasses.dataclass(frozen=True)
class WeightedSum:
  """``Σ weight · objective`` over ``terms = ((weight, objective), ...)``."""
  terms: tuple[tuple[float, Objective], ...]

  def __call__(self, logits, acts, labels):
    return sum(w * f(logits, acts, labels) for w, f in self.terms)


OBJECTIVES = ("mean", "l2", "channel", "neuron", "logit")


def layer_tuple(layers) -> tuple[str, ...]:
  """``layers`` as a tuple; one name may be given as a plain string."""
  return (layers,) if isinstance(layers, str) else tuple(layers)


def from_config(cfg) -> Objective:
  """The objective a (validated) dream config names."""
  layers = layer_tuple(cfg.layers)
  if cfg.objective in ("mean", "l2"):
    per_layer = LayerMean if cfg.objective == "mean" else LayerL2
    weights = tuple(cfg.layer_weights) or (1.0,) * len(layers)
    if len(layers) == 1 and weights[0] == 1.0:
      return per_layer(layers[0])
    return WeightedSum(tuple((float(w), per_layer(l)) for w, l in zip(weights, layers)))
  if cfg.objective == "channel":
    return Channel(layers[0], int(cfg.channel))
  if cfg.objective == "neuron":
    return Neuron(layers[0], int(cfg.channel), tuple(int(p) for p in cfg.position))
  if cfg.objective == "logit":
    return ClassLogit(int(cfg.target_class))
  raise ValueError(f"unknown objective {cfg.objective!r}")  # validate() catches this first
