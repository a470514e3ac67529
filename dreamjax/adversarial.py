"""Adversarial examples: FGSM and PGD, robust accuracy, adversarial training, C3.

Every attack ascends one per-example objective of the input with the model
fixed: the cross-entropy of the true label (untargeted) or minus the
cross-entropy of a target label (targeted), in L∞ (signed-gradient steps) or
L2 (normalised-gradient steps), projected back into the ε-ball around the clean
image and clipped to the [0, 1] pixel range after every step. That is the same
loop as a Deep Dream, with a different objective and a projection; claim C3 of
STUDY.md measures how close the two directions really are
(:func:`gradient_alignment`).

Models are evaluated with ``train=False`` (BatchNorm running statistics), so an
attack is a pure function of ``(variables, images, labels, key)``.

Loop form: a walk is a Python loop over one jitted program of ``WALK_CHUNK``
steps. On CPU that ran 2x faster than ``lax.fori_loop`` (the while-loop body
loses XLA:CPU's convolution threading) and 8% faster than one program per
step, and unlike a fully unrolled walk it compiles once for every step count
that is a multiple of the chunk. Inside a jitted train step the same loop simply
unrolls (few steps there). The clean image is always the first candidate, so ``success``
never falls below clean misclassification and robust accuracy ≤ clean accuracy.

Devices: :func:`robust_accuracy`, :func:`adversarial_dataset` and
:func:`gradient_alignment` take ``devices`` as :func:`dreamjax.train.fit`
does. With several (default: every device of the job,
:func:`dreamjax.train.fit_mesh`) the weights are replicated on a ``("data",)``
mesh and each chunk, zero-padded to a multiple of the device count, is split
by rows over it (:func:`dreamjax.sharding.put_rows`); the jitted start, walk,
outcome and keep programs follow those shardings, so each device attacks its
own rows. Results equal one device's up to float rounding: the random start
is drawn for the whole padded chunk, and with JAX's default
``jax_threefry_partitionable`` a row's draw does not depend on how many
padding rows follow it. With one device nothing is sharded.
"""

import dataclasses
import functools
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dreamjax import models, sharding, train
from dreamjax.errors import ConfigError

NORMS = ("linf", "l2")
METHODS = ("pgd", "fgsm")


def default_step_size(eps: float, steps: int) -> float:
  """Madry et al. (2018): 2.5·ε/steps lets a walk reach the ball's surface from anywhere."""
  return 2.5 * eps / steps


def validate_attack(*, eps, steps=1, step_size=None, norm="linf", restarts=1, fraction=None,
                    method=None, prefix: str = "attack") -> None:
  """Raises :class:`ConfigError` naming the first invalid setting; runs no compute."""
  checks = [
      ("eps", eps, eps is not None and eps >= 0, ">= 0 (pixels are in [0, 1])"),
      ("steps", steps, isinstance(steps, (int, np.integer)) and steps >= 1, "an integer >= 1"),
      ("step_size", step_size, step_size is None or step_size >= 0,
       ">= 0 (0 or None: 2.5·eps/steps)"),
      ("norm", norm, norm in NORMS, f"one of {', '.join(NORMS)}"),
      ("restarts", restarts, isinstance(restarts, (int, np.integer)) and restarts >= 1,
       "an integer >= 1"),
  ]
  if fraction is not None:
    checks.append(("fraction", fraction, 0.0 <= fraction <= 1.0, "in [0, 1]"))
  if method is not None:
    checks.append(("method", method, method in METHODS, f"one of {', '.join(METHODS)}"))
  for name, value, ok, valid in checks:
    if not ok:
      raise ConfigError(f"{prefix}.{name}={value!r} is invalid: must be {valid}.")


# ---------------------------------------------------------------- pure pieces


def _objective(model, variables, x, labels, targeted: bool):
  """Per-example value the attack ascends, and the logits."""
  logits = model.apply(variables, x, train=False)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return (-ce if targeted else ce), logits


def _l2(x):
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim)), keepdims=True))


def _ascent_direction(grad, norm: str):
  if norm == "linf":
    return jnp.sign(grad)
  return grad / jnp.maximum(_l2(grad), 1e-12)


def _project(delta, eps, norm: str):
  if norm == "linf":
    return jnp.clip(delta, -eps, eps)
  return delta * jnp.minimum(1.0, eps / jnp.maximum(_l2(delta), 1e-12))


def _start(key, x0, eps, *, norm: str):
  """x0 plus a uniform draw from the ε-ball (eps = 0: x0 itself)."""
  if norm == "linf":
    delta = jax.random.uniform(key, x0.shape, minval=-1.0, maxval=1.0) * eps
  else:
    k_dir, k_rad = jax.random.split(key)
    direction = jax.random.normal(k_dir, x0.shape)
    direction = direction / jnp.maximum(_l2(direction), 1e-12)
    dim = np.prod(x0.shape[1:])
    radius = jax.random.uniform(k_rad, (x0.shape[0],) + (1,) * (x0.ndim - 1)) ** (1.0 / dim)
    delta = direction * radius * eps
  return jnp.clip(x0 + delta, 0.0, 1.0)


def _step(model, variables, x0, x, labels, eps, step_size, *, norm: str, targeted: bool):
  grad = jax.grad(lambda x: _objective(model, variables, x, labels, targeted)[0].sum())(x)
  x = x + step_size * _ascent_direction(grad, norm)
  return jnp.clip(x0 + _project(x - x0, eps, norm), 0.0, 1.0)


def _outcome(model, variables, x, labels, *, targeted: bool):
  objective, logits = _objective(model, variables, x, labels, targeted)
  pred = jnp.argmax(logits, -1)
  success = (pred == labels) if targeted else (pred != labels)
  return success, objective


def _keep_better(best, new):
  """Per example: a success beats a failure; otherwise the higher objective wins."""
  (bx, bs, bo), (nx, ns, no) = best, new
  take = (ns & ~bs) | ((ns == bs) & (no > bo))
  pick = lambda a, b: jnp.where(take.reshape(take.shape + (1,) * (a.ndim - take.ndim)), b, a)
  return pick(bx, nx), pick(bs, ns), pick(bo, no)


# Steps of one PGD walk traced into one program. On the 2-core CPU, PGD with 10
# steps on the reference CNN ran at 866 image·steps/s with 1 step per program,
# 916 with 2, 941 with 5 and 947 with 10; chunks of 5 bound the compile time and
# keep one program for every step count that is a multiple of 5.
WALK_CHUNK = 5


@dataclasses.dataclass(frozen=True)
class _Ops:
  start: Callable[..., Any]    # (key, x0, eps) -> x
  walk: Callable[..., Any]     # (variables, x0, x, labels, eps, step_size, n) -> x after n steps
  outcome: Callable[..., Any]  # (variables, x, labels) -> (success, objective)
  keep: Callable[..., Any]     # (best, new) -> best


@functools.lru_cache(maxsize=64)
def _ops(model, norm: str, targeted: bool, mode: str) -> _Ops:
  """The attack's pieces, ``inline`` (to trace inside another jit), ``jit`` or
  ``jit_K`` (vmapped over a leading model axis of variables, keys and x)."""
  start = functools.partial(_start, norm=norm)
  step = functools.partial(_step, model, norm=norm, targeted=targeted)
  outcome = functools.partial(_outcome, model, targeted=targeted)
  keep = _keep_better
  if mode == "jit_K":  # K models in one program (train.map_seeds: fast on CPU)
    start = train.map_seeds(start, in_axes=(0, None, None))
    step = train.map_seeds(step, in_axes=(0, None, 0, None, None, None))
    outcome = train.map_seeds(outcome, in_axes=(0, 0, None))

  def walk(variables, x0, x, labels, eps, step_size, n):
    for _ in range(n):
      x = step(variables, x0, x, labels, eps, step_size)
    return x

  if mode in ("jit", "jit_K"):
    start, outcome, keep = (jax.jit(f) for f in (start, outcome, keep))
    walk = jax.jit(walk, static_argnums=6)
  return _Ops(start, walk, outcome, keep)


def _run(ops: _Ops, variables, x0, labels, key, *, eps, steps, step_size, random_start,
         restarts, num_models: int | None = None):
  """Best of ``restarts`` PGD walks (and of the clean image), per example."""
  clean = ops.start(_model_keys(key, num_models), x0, 0.0)
  best = (clean, *ops.outcome(variables, clean, labels))
  for r in range(restarts):
    x = ops.start(_model_keys(jax.random.fold_in(key, r), num_models), x0,
                  eps if random_start else 0.0)
    for done in range(0, steps, WALK_CHUNK):
      x = ops.walk(variables, x0, x, labels, eps, step_size, min(WALK_CHUNK, steps - done))
    best = ops.keep(best, (x, *ops.outcome(variables, x, labels)))
  return best[0], best[1]


def _model_keys(key, num_models):
  return key if num_models is None else jax.random.split(key, num_models)


# ---------------------------------------------------------------- public API


def pgd(model, variables, images, labels, key, *, eps: float, steps: int,
        step_size: float | None = None, norm: str = "linf", targeted: bool = False,
        random_start: bool = True, restarts: int = 1):
  """Projected gradient descent (Madry et al. 2018) on one model.

  Args:
    images: float ``[N, H, W, C]`` in [0, 1].
    labels: int ``[N]``: the true labels, or the target classes if ``targeted``.
    step_size: per-step move (L∞: per pixel; L2: per image); None or 0: 2.5·eps/steps.
  Returns:
    ``(adv_images [N, H, W, C], success [N] bool)``; success means misclassified
    (untargeted) or classified as the target (targeted).
  """
  validate_attack(eps=eps, steps=steps, step_size=step_size, norm=norm, restarts=restarts)
  step_size = step_size or default_step_size(eps, steps)
  return _run(_ops(model, norm, bool(targeted), "jit"), variables, jnp.asarray(images),
              jnp.asarray(labels, jnp.int32), key, eps=float(eps), steps=int(steps),
              step_size=float(step_size), random_start=random_start, restarts=int(restarts))


def fgsm(model, variables, images, labels, *, eps: float, norm: str = "linf",
         targeted: bool = False):
  """Fast gradient sign method (Goodfellow et al. 2015): one step of size ε."""
  validate_attack(eps=eps, norm=norm)
  return _run(_ops(model, norm, bool(targeted), "jit"), variables, jnp.asarray(images),
              jnp.asarray(labels, jnp.int32), jax.random.key(0), eps=float(eps), steps=1,
              step_size=float(eps), random_start=False, restarts=1)


def _chunks(n: int, size: int):
  size = min(size, n)
  return size, [(s, min(s + size, n)) for s in range(0, n, size)]


def robust_accuracy(model, variables_K, images, labels, key, *, eps: float = 0.1,
                    steps: int = 20, restarts: int = 1, batch_size: int = 500,
                    step_size: float | None = None, norm: str = "linf",
                    devices: Sequence[jax.Device] | None = None) -> np.ndarray:
  """Accuracy of each of K seed-stacked models under untargeted PGD, shape ``[K]``.

  All K models are attacked in one vmapped program; an image counts as correct
  only if the clean image and every restart are classified correctly.
  ``devices``: see the module docstring (default: every device of the job).
  """
  validate_attack(eps=eps, steps=steps, step_size=step_size, norm=norm, restarts=restarts)
  if batch_size < 1:
    raise ConfigError(f"batch_size={batch_size} is invalid: must be >= 1.")
  step_size = step_size or default_step_size(eps, steps)
  num_models = jax.tree.leaves(variables_K)[0].shape[0]
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  mesh = train.fit_mesh(devices)
  variables_K = sharding.put_weights(mesh, variables_K, devices)
  ops = _ops(model, norm, False, "jit_K")
  size, spans = _chunks(len(images), batch_size)
  correct = np.zeros((num_models,), np.int64)
  for i, (s, e) in enumerate(spans):
    x, y = sharding.put_rows(mesh, (images[s:e], labels[s:e]), size)
    _, success = _run(ops, variables_K, x, y, jax.random.fold_in(key, i),
                      eps=float(eps), steps=int(steps), step_size=float(step_size),
                      random_start=True, restarts=int(restarts), num_models=num_models)
    correct += np.sum(~sharding.to_host(success)[:, :e - s], axis=1)
  return correct / len(images)


def adversarial_dataset(model, variables, images, labels, key, *, method: str = "pgd",
                        eps: float, steps: int = 10, chunk_size: int = 256,
                        step_size: float | None = None, norm: str = "linf",
                        restarts: int = 1, devices: Sequence[jax.Device] | None = None
                        ) -> tuple[np.ndarray, dict[str, Any]]:
  """Offline adversarial copies of ``images`` (same labels) from one trained model.

  Returns ``(adv_images float32 [N, H, W, C], info)``; info holds seconds,
  success_rate and the mean L∞ / L2 distance to the clean images. ``devices``:
  see the module docstring (default: every device of the job).
  """
  validate_attack(eps=eps, steps=steps, step_size=step_size, norm=norm, restarts=restarts,
                  method=method)
  if chunk_size < 1:
    raise ConfigError(f"chunk_size={chunk_size} is invalid: must be >= 1.")
  if method == "fgsm":
    steps, step_size, restarts, random_start = 1, eps, 1, False
  else:
    step_size, random_start = step_size or default_step_size(eps, steps), True
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  mesh = train.fit_mesh(devices)
  variables = sharding.put_weights(mesh, variables, devices)
  ops = _ops(model, norm, False, "jit")
  size, spans = _chunks(len(images), chunk_size)
  t0 = time.perf_counter()
  adv, success = np.empty_like(images), np.empty((len(images),), bool)
  for i, (s, e) in enumerate(spans):
    x, y = sharding.put_rows(mesh, (images[s:e], labels[s:e]), size)
    x, ok = _run(ops, variables, x, y, jax.random.fold_in(key, i),
                 eps=float(eps), steps=int(steps), step_size=float(step_size),
                 random_start=random_start, restarts=int(restarts))
    x, ok = sharding.to_host((x, ok))
    adv[s:e], success[s:e] = x[:e - s], ok[:e - s]
  delta = (adv - images).reshape(len(images), -1)
  info = {"method": method, "norm": norm, "eps": float(eps), "steps": int(steps),
          "step_size": float(step_size), "restarts": int(restarts), "num_images": len(images),
          "seconds": time.perf_counter() - t0, "success_rate": float(success.mean()),
          "mean_linf": float(np.abs(delta).max(1).mean()),
          "mean_l2": float(np.sqrt((delta ** 2).sum(1)).mean())}
  return adv, info


def adversarial_batch_transform(model, *, method: str, eps: float, steps: int,
                                fraction: float, step_size: float | None = None,
                                norm: str = "linf", random_start: bool = True):
  """A :data:`dreamjax.train.BatchTransform` for adversarial training (Madry et al. 2018).

  Inside the jitted train step, the first ``round(fraction·batch)`` examples of
  each (randomly drawn) batch are replaced by PGD/FGSM examples of the current
  model (``state.params``, ``state.batch_stats``); labels stay the true labels.
  """
  validate_attack(eps=eps, steps=steps, step_size=step_size, norm=norm, fraction=fraction,
                  method=method)
  if method == "fgsm":
    steps, step_size, random_start = 1, eps, False
  else:
    step_size = step_size or default_step_size(eps, steps)
  ops = _ops(model, norm, False, "inline")

  def transform(state, images, labels, key):
    num_adv = int(round(fraction * images.shape[0]))  # static: shapes are known here
    if num_adv == 0:
      return images, labels
    variables = {"params": state.params}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
    variables = jax.lax.stop_gradient(variables)
    adv, _ = _run(ops, variables, images[:num_adv], labels[:num_adv], key, eps=eps,
                  steps=steps, step_size=step_size, random_start=random_start, restarts=1)
    return images.at[:num_adv].set(adv), labels

  return transform


# ---------------------------------------------------------------- C3


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
                       devices: Sequence[jax.Device] | None = None) -> dict[str, Any]:
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
  * the contrast (``layer``): the layer-objective dream direction
    ``∇ mean(act_layer²)`` against the same attack directions.

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

  ``devices``: see the module docstring (default: every device of the job).
  """
  if layer not in models.layer_names(model):
    raise ConfigError(f"layer={layer!r} is invalid: must be one of"
                      f" {', '.join(models.layer_names(model))}.")
  validate_attack(eps=eps, steps=steps)
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  num_classes = model.num_classes
  targets = (labels + 1) % num_classes if targets is None else np.asarray(targets, np.int32)
  mesh = train.fit_mesh(devices)
  variables = sharding.put_weights(mesh, variables, devices)
  directions_fn = _directions_fn(model, layer)
  size, spans = _chunks(len(images), batch_size)
  per_image: dict[str, list[np.ndarray]] = {}
  for s, e in spans:
    x, y, t = sharding.put_rows(mesh, (images[s:e], labels[s:e], targets[s:e]), size)
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
    dreams = {"untargeted": {"logit": d["dream_logit"], "layer": d["dream_layer"]},
              "targeted": {"logit": d["dream_logit_target"], "layer": d["dream_layer"]}}
    for kind in ("untargeted", "targeted"):
      for dream_name, dream in dreams[kind].items():
        for attack_name, attack in attacks[kind].items():
          cos = sharding.to_host(_cosine(dream, attack))[:e - s]
          per_image.setdefault(f"{kind}/{dream_name}/{attack_name}", []).append(cos)
  flat = {k: np.concatenate(v) for k, v in per_image.items()}
  out: dict[str, Any] = {"layer": layer, "num_images": len(images), "eps": float(eps),
                         "steps": int(steps),
                         "chance_std": float(1.0 / np.sqrt(np.prod(images.shape[1:]))),
                         "per_image": flat}
  for key, values in flat.items():
    kind, dream_name, attack_name = key.split("/")
    out.setdefault(kind, {}).setdefault(dream_name, {})[attack_name] = _stats(values)
  out["logit"] = out["untargeted"]["logit"]["gradient"]
  out["layer"] = out["untargeted"]["layer"]["gradient"]
  return out
