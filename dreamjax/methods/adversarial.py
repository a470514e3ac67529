"""Adversarial examples: FGSM and PGD, robust accuracy, adversarial training, C3.

Every attack ascends one per-example objective of the input with the model
fixed: the cross-entropy of the true label (untargeted) or minus the
cross-entropy of a target label (targeted), in L∞ (signed-gradient steps) or
L2 (normalised-gradient steps), projected back into the ε-ball around the clean
image and clipped to the [0, 1] pixel range after every step. That is the same
loop as a Deep Dream, with a different objective and a projection; claim C3 of
the study (docs/protocol.md) measures how close the two directions really are
(:func:`gradient_alignment`).

Models are evaluated with ``train=False`` (BatchNorm running statistics), so an
attack is a pure function of ``(variables, images, labels, key)``.

Loop form: a walk is a Python loop over one jitted program of ``WALK_CHUNK``
steps. On CPU that is faster than ``lax.fori_loop`` (the while-loop body
loses XLA:CPU's convolution threading) and than one program per step
(benchmarks/README.md), and unlike a fully unrolled walk it compiles once for
every step count that is a multiple of the chunk. Inside a jitted train step the same loop simply
unrolls (few steps there). The clean image is always the first candidate, so ``success``
never falls below clean misclassification and robust accuracy ≤ clean accuracy.

Devices: :func:`robust_accuracy` and :func:`adversarial_dataset` run their
chunks through :func:`dreamjax.plumbing.sharding.map_rows` on the caller's mesh
(default: every device), so each device attacks its own rows. Results equal
one device's up to float rounding: the random start is drawn for the whole
padded chunk, and with JAX's default ``jax_threefry_partitionable`` a row's
draw does not depend on how many padding rows follow it. Claim C3's gradient
alignment is in :mod:`dreamjax.methods.alignment`.
"""

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from dreamjax.plumbing import sharding
from dreamjax.training.seeds import map_seeds
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
  if mode == "jit_K":  # K models in one program (seeds.how decides its form)
    start = map_seeds(start, in_axes=(0, None, None), workload="attack")
    step = map_seeds(step, in_axes=(0, None, 0, None, None, None), workload="attack")
    outcome = map_seeds(outcome, in_axes=(0, 0, None), workload="attack")

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
  images, labels = _beside(variables, (images, _int32(labels)))
  return _run(_ops(model, norm, bool(targeted), "jit"), variables, images, labels, key,
              eps=float(eps), steps=int(steps), step_size=float(step_size),
              random_start=random_start, restarts=int(restarts))


def fgsm(model, variables, images, labels, *, eps: float, norm: str = "linf",
         targeted: bool = False):
  """Fast gradient sign method (Goodfellow et al. 2015): one step of size ε."""
  validate_attack(eps=eps, norm=norm)
  images, labels = _beside(variables, (images, _int32(labels)))
  return _run(_ops(model, norm, bool(targeted), "jit"), variables, images, labels,
              jax.random.key(0), eps=float(eps), steps=1, step_size=float(eps),
              random_start=False, restarts=1)


def _int32(labels):
  """Labels as int32, where they are: device arrays (rows of a multi-host chunk) stay put."""
  return labels.astype(jnp.int32) if isinstance(labels, jax.Array) else np.asarray(labels, np.int32)


def _beside(variables, tree):
  """Host arrays of ``tree`` placed where ``variables`` are replicated (a train state's mesh).

  Every jitted piece of an attack then sees one placement and compiles once;
  arrays already on devices (rows split by :func:`dreamjax.plumbing.sharding.map_rows`)
  stay as they are.
  """
  leaf = jax.tree.leaves(variables)[0]
  where = getattr(leaf, "sharding", None)
  if not (isinstance(where, NamedSharding) and where.is_fully_replicated):
    return jax.tree.map(jnp.asarray, tree)
  return jax.tree.map(lambda a: a if isinstance(a, jax.Array)
                      else sharding.replicate(where.mesh, np.asarray(a)), tree)


def robust_accuracy(model, variables_K, images, labels, key, *, eps: float = 0.1,
                    steps: int = 20, restarts: int = 1, batch_size: int = 500,
                    step_size: float | None = None, norm: str = "linf",
                    mesh: Mesh | None = None) -> np.ndarray:
  """Accuracy of each of K seed-stacked models under untargeted PGD, shape ``[K]``.

  All K models are attacked in one program; an image counts as correct only if
  the clean image and every restart are classified correctly.
  """
  validate_attack(eps=eps, steps=steps, step_size=step_size, norm=norm, restarts=restarts)
  if batch_size < 1:
    raise ConfigError(f"batch_size={batch_size} is invalid: must be >= 1.")
  step_size = step_size or default_step_size(eps, steps)
  num_models = jax.tree.leaves(variables_K)[0].shape[0]
  ops = _ops(model, norm, False, "jit_K")

  def attack(variables_K, rows, key):
    x, y = rows
    return _run(ops, variables_K, x, y, key, eps=float(eps), steps=int(steps),
                step_size=float(step_size), random_start=True, restarts=int(restarts),
                num_models=num_models)[1]

  success = sharding.map_rows(attack, variables_K, (np.asarray(images, np.float32),
                                                    np.asarray(labels, np.int32)),
                              mesh=sharding.default(mesh), chunk=batch_size, key=key,
                              row_axis=1)
  return np.sum(~success, axis=1) / len(images)


def adversarial_dataset(model, variables, images, labels, key, *, method: str = "pgd",
                        eps: float, steps: int = 10, chunk_size: int = 256,
                        step_size: float | None = None, norm: str = "linf",
                        restarts: int = 1, mesh: Mesh | None = None
                        ) -> tuple[np.ndarray, dict[str, Any]]:
  """Offline adversarial copies of ``images`` (same labels) from one trained model.

  Returns ``(adv_images float32 [N, H, W, C], info)``; info holds seconds,
  success_rate and the mean L∞ / L2 distance to the clean images.
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
  ops = _ops(model, norm, False, "jit")

  def attack(variables, rows, key):
    return _run(ops, variables, *rows, key, eps=float(eps), steps=int(steps),
                step_size=float(step_size), random_start=random_start, restarts=int(restarts))

  t0 = time.perf_counter()
  adv, success = sharding.map_rows(attack, variables, (images, labels),
                                   mesh=sharding.default(mesh), chunk=chunk_size, key=key)
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
  """A :data:`dreamjax.training.train.BatchTransform` for adversarial training (Madry et al. 2018).

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
    variables = jax.lax.stop_gradient(state.variables)  # the model, held fixed for the attack
    adv, _ = _run(ops, variables, images[:num_adv], labels[:num_adv], key, eps=eps,
                  steps=steps, step_size=step_size, random_start=random_start, restarts=1)
    return images.at[:num_adv].set(adv), labels

  return transform
