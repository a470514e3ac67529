"""Claim C3: is an adversarial step the same move as a Deep Dream step?

Per image, the cosine between a dream direction (the input gradient a dream
ascends) and an attack direction, on the same model and image; see
:func:`gradient_alignment` for the sign conventions.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from dreamjax.plumbing import sharding
from dreamjax.training import models
from dreamjax.methods.adversarial import pgd, validate_attack
from dreamjax.errors import ConfigError


def _cosine(a, b):
  a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
  return jnp.sum(a * b, 1) / jnp.maximum(jnp.linalg.norm(a, axis=1) * jnp.linalg.norm(b, axis=1),
                                         1e-20)


@functools.lru_cache(maxsize=16)
def _directions_fn(model, layer: str):
  """jitted ``(variables, x, labels, targets) -> dict of per-image input gradients``."""

  @jax.jit
  def directions(variables, x, labels, targets):
    logits_of = lambda x: model.apply(variables, x, train=False)
    logit = lambda x, cls: jnp.take_along_axis(logits_of(x), cls[:, None], 1).sum()
    def layer_energy(x):  # the layer-objective dream: mean squared activation per image
      act = models.apply_with_activations(model, variables, x)[1][layer]
      return jnp.mean(jnp.square(act), axis=tuple(range(1, act.ndim))).sum()
    ce = lambda x, y: optax.softmax_cross_entropy_with_integer_labels(logits_of(x), y).sum()
    return {
        "dream_logit": jax.grad(logit)(x, labels),
        "dream_logit_target": jax.grad(logit)(x, targets),
        "dream_layer": jax.grad(layer_energy)(x),
        # What the attacks ascend: +CE(true label) untargeted, -CE(target) targeted.
        "attack_untargeted": jax.grad(ce)(x, labels),
        "attack_targeted": -jax.grad(ce)(x, targets),
    }

  return directions


def _stats(values: np.ndarray) -> dict[str, Any]:
  mean, std = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
  half = float(1.96 * std / np.sqrt(len(values)))  # normal approximation: N is hundreds
  return {"mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def gradient_alignment(model, variables, images, labels, *, layer: str, targets=None,
                       eps: float = 0.1, steps: int = 10, batch_size: int = 500,
                       mesh: Mesh | None = None) -> dict[str, Any]:
  """Claim C3: is an adversarial step the same move as a Deep Dream step?

  Per image, cosine similarities between a *dream direction* (the input
  gradient a dream ascends) and an *attack direction*, on the same model and
  image. Sign convention (so that +1 always reads "the same process"):

  * ``untargeted``: the attack ascends CE(true label), which lowers the true
    logit, so it is compared *negated* with the own-class logit dream:
    ``cos(∇z_y, -∇CE_y)``; +1 means the untargeted attack is exactly an
    own-class dream run backwards.
  * ``targeted``: targeted PGD ascends ``-CE(target)``, as a logit dream of the
    target class ascends ``z_t``: ``cos(∇z_t, -∇CE_t)``; +1: the same step.
  * ``layer``: the layer-objective dream direction ``∇ mean(act_layer²)`` (what
    Deep Dream ascends) against the same attack directions;
  * ``random``: a random Gaussian direction per image, the chance floor.

  Each pair is given for three attack directions: ``gradient`` (the raw loss
  gradient, the L2 FGSM step), ``fgsm`` (its sign, the L∞ FGSM step) and
  ``pgd`` (the whole L∞ PGD perturbation ``x_adv - x`` after ``steps`` steps
  from the clean image, signed as above). ``chance_std`` = 1/sqrt(pixels) is
  the spread of the cosine between random directions.

  Returns a dict: ``untargeted``/``targeted`` → ``logit``/``layer`` →
  ``gradient``/``fgsm``/``pgd`` → {mean, std, ci95}, plus ``per_image`` arrays
  under "untargeted/logit/pgd"-style keys. The headline numbers of C3 are
  repeated at the top: ``logit`` and ``layer`` = ``untargeted/*/gradient``
  (the dream direction against the negated loss-ascent direction).

  Chunks of images are split by rows over ``mesh`` (default: every device).
  """
  if layer not in models.layer_names(model):
    raise ConfigError(f"layer={layer!r} is invalid: must be one of"
                      f" {', '.join(models.layer_names(model))}.")
  validate_attack(eps=eps, steps=steps)
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  targets = ((labels + 1) % model.num_classes if targets is None
             else np.asarray(targets, np.int32))
  directions_fn = _directions_fn(model, layer)

  def cosines(variables, rows):
    x, y, t = rows
    d = directions_fn(variables, x, y, t)
    pgd_u = pgd(model, variables, x, y, jax.random.key(0), eps=eps, steps=steps,
                random_start=False)[0] - x
    pgd_t = pgd(model, variables, x, t, jax.random.key(0), eps=eps, steps=steps,
                random_start=False, targeted=True)[0] - x
    attacks = {
        "untargeted": {"gradient": -d["attack_untargeted"],
                       "fgsm": -jnp.sign(d["attack_untargeted"]), "pgd": -pgd_u},
        "targeted": {"gradient": d["attack_targeted"],
                     "fgsm": jnp.sign(d["attack_targeted"]), "pgd": pgd_t},
    }
    # A random direction per image: the chance floor any dream's cosine is read against.
    rand = jax.random.normal(jax.random.key(1), x.shape, x.dtype)
    dreams = {"untargeted": {"logit": d["dream_logit"], "layer": d["dream_layer"],
                             "random": rand},
              "targeted": {"logit": d["dream_logit_target"], "layer": d["dream_layer"],
                           "random": rand}}
    return {f"{kind}/{dream_name}/{attack_name}": _cosine(dream, attack)
            for kind in ("untargeted", "targeted")
            for dream_name, dream in dreams[kind].items()
            for attack_name, attack in attacks[kind].items()}

  flat = sharding.map_rows(cosines, variables, (images, labels, targets),
                           mesh=sharding.default(mesh), chunk=batch_size)
  out: dict[str, Any] = {"layer": layer, "num_images": len(images), "eps": float(eps),
                         "steps": int(steps),
                         "chance_std": float(1.0 / np.sqrt(np.prod(images.shape[1:]))),
                         "per_image": flat}
  for key, values in flat.items():
    kind, dream_name, attack_name = key.split("/")
    out.setdefault(kind, {}).setdefault(dream_name, {})[attack_name] = _stats(values)
  out["logit"] = out["untargeted"]["logit"]["gradient"]
  out["layer"] = out["untargeted"]["layer"]["gradient"]
  out["random"] = out["untargeted"]["random"]["gradient"]
  return out
