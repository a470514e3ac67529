"""Seed-stacked pytrees: K independent models trained and evaluated together.

The study's seeds are its unit of replication; stacking them along a leading
axis ``K`` lets one compiled program train or evaluate all of them. How the K
seeds of each workload run on each backend is decided in one place,
:data:`PROGRAMS`, and read by the classifier's trainer, the generators'
trainer, evaluation and attacks.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


# How the K seeds of a workload run, by backend:
#   "vmap"      one program, jax.vmap over the seed axis;
#   "unrolled"  one program holding one copy of the computation per seed (map_seeds);
#   "in_turn"   one one-seed program, called once per seed.
# Accelerators run a vmapped (grouped) convolution well and gain most from one
# large launch. XLA:CPU turns a vmapped convolution into a grouped one, slower than
# separate ones, so CPU never vmaps; between unrolled and in turn the faster one
# depends on the workload, and each choice here is the faster one measured by the
# benchmarks that time both (bench.py for the classifier step, generator_layers.py
# for the generator steps, ascent.py for the PGD evaluation; the table of what was
# tried in benchmarks/README.md).
WORKLOADS = ("classifier_step", "generator_step", "evaluation", "attack")
PROGRAMS = {
    "cpu": {"classifier_step": "in_turn", "generator_step": "unrolled",
            "evaluation": "unrolled", "attack": "unrolled"},
}
ACCELERATOR = "vmap"  # every workload, on any backend PROGRAMS does not list


def how(workload: str, backend: str | None = None) -> str:
  """``vmap``, ``unrolled`` or ``in_turn``: how the seeds of ``workload`` run."""
  if workload not in WORKLOADS:
    raise ValueError(f"unknown seed workload {workload!r}; one of {WORKLOADS}.")
  return PROGRAMS.get(backend or jax.default_backend(), {}).get(workload, ACCELERATOR)


def seed_keys(seeds) -> jax.Array:
  """One root key per seed, stacked."""
  return jnp.stack([jax.random.key(int(s)) for s in seeds])


# Step s's key of each seed: ``fold_in(roots[i], s)`` for K seed-stacked roots, one program.
fold_in_each = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))


def map_seeds(fn: Callable, in_axes: int | None | tuple[int | None, ...] = 0,
              workload: str = "evaluation") -> Callable:
  """``fn`` over a leading seed axis, in one program, as :func:`how` says for ``workload``.

  ``vmap``: ``jax.vmap(fn, in_axes)``. Otherwise unrolled: the same results
  (axis 0 or None per argument), but each seed keeps ungrouped convolutions and
  matmuls, which XLA:CPU runs faster and may run side by side; compile time
  grows with K, so it suits the handful of seeds a study uses.
  """
  if how(workload) == "vmap":
    return jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    if len(axes) != len(args):
      raise ValueError(f"map_seeds: {len(axes)} in_axes for {len(args)} arguments.")
    if any(a not in (0, None) for a in axes):
      raise ValueError(f"map_seeds: in_axes={axes} must each be 0 or None.")
    stacked = [a for a, ax in zip(args, axes) if ax == 0]
    if not stacked:
      raise ValueError("map_seeds: no argument has a seed axis (in_axes all None).")
    k = jax.tree.leaves(stacked[0])[0].shape[0]
    outs = [fn(*[unstack(a, i) if ax == 0 else a for a, ax in zip(args, axes)])
            for i in range(k)]
    return stack(outs)

  return mapped


def unstack(tree, i: int):
  """The i-th seed's slice of a seed-stacked pytree."""
  return jax.tree.map(lambda x: x[i], tree)


def stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def pad_to_common(sets: list[tuple[np.ndarray, np.ndarray]]):
  """Stacks per-seed (images, labels) of different lengths: arrays + counts."""
  n = max(len(y) for _, y in sets)
  images = np.zeros((len(sets), n, *sets[0][0].shape[1:]), np.float32)
  labels = np.zeros((len(sets), n), np.int32)
  for i, (x, y) in enumerate(sets):
    images[i, :len(y)], labels[i, :len(y)] = x, y
  return images, labels, np.asarray([len(y) for _, y in sets], np.int32)
