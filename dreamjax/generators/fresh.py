"""Fresh generator samples inside a jitted train step: pure, jittable pieces.

:func:`prior_sampler` draws a batch of a trained VAE's or GAN's samples from
fresh latents (one decoder pass, cheap enough for every step);
:func:`match_classes` gives each slot of a batch a distinct confident sample
of the slot's class, the in-step form of class-balanced pseudo-labels; and
:func:`bank_rows` reads a bank of samples drawn before training (a diffusion
model's, whose sampler is too slow for every step) in order, so that every
sample is used once before any is used again.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from dreamjax.generators import common, gan, vae

# (variables, labels [n] or None, key, n) -> images [n, H, W, C] in [0, 1]
Sampler = Callable[[object, jax.Array | None, jax.Array, int], jax.Array]

FAMILIES = ("vae", "gan")


def prior_sampler(kind: str, cfg, params) -> tuple[Sampler, object]:
  """``(sample, variables)`` of a trained VAE or GAN (``params`` as its trainer returns them).

  ``sample(variables, labels, key, n)`` draws ``n`` images from fresh latents,
  the same computation as :func:`dreamjax.generators.sample_vae` /
  ``sample_gan`` (decoder means of N(0, T²I) draws for the VAE): conditional
  models take the ``n`` labels to draw, unconditional ones None. ``variables``
  are the networks' weights alone, which a study stacks over seeds.
  """
  image_shape, num_classes = common.shape_of(params)
  if kind == "vae":
    module = vae.make_module(cfg, image_shape, num_classes)
    temperature = float(cfg.get("sample_temperature", 1.0))

    def sample(variables, labels, key, n):
      z = temperature * jax.random.normal(key, (n, module.latent_dim))
      logits = module.apply(variables, z, labels if num_classes else None,
                            method=vae.VAE.decode)
      return jax.nn.sigmoid(logits)

    return sample, params["vae"]
  if kind == "gan":
    gen, _ = gan.make_modules(cfg, image_shape, num_classes)
    latent_dim = int(cfg.latent_dim)

    def sample(variables, labels, key, n):
      z = jax.random.normal(key, (n, latent_dim))
      return gen.apply(variables, z, labels if num_classes else None)

    return sample, params["generator"]
  raise ValueError(f"no in-step sampler for {kind!r}; one of {FAMILIES}.")


def match_classes(probs: jax.Array, targets: jax.Array, threshold: float
                  ) -> tuple[jax.Array, jax.Array]:
  """``(index [n], found [n])``: a distinct candidate for each slot of class ``targets``.

  ``probs [C, classes]`` are a labeler's class probabilities of C candidates;
  a candidate's pseudo-label is its arg-max class, its confidence its top
  probability. Slot ``i`` gets the r-th most confident candidate labeled
  ``targets[i]`` among those whose confidence reaches ``threshold``, where r
  counts the slots of that class before it (ties: the earlier candidate), so
  no candidate fills two slots; ``found[i]`` is False where its class has too
  few such candidates (``index[i]`` is then 0 and means nothing).
  """
  classes = probs.shape[-1]
  order = jnp.argsort(-probs.max(-1), stable=True)  # most confident first
  ranked = probs[order]
  label = ranked.argmax(-1)
  ok = ranked.max(-1) >= threshold
  of_class = jax.nn.one_hot(label, classes, dtype=jnp.int32) * ok[:, None]
  cand_rank = jnp.sum((jnp.cumsum(of_class, axis=0) - 1) * of_class, axis=-1)
  slot = jax.nn.one_hot(targets, classes, dtype=jnp.int32)
  slot_rank = jnp.sum((jnp.cumsum(slot, axis=0) - 1) * slot, axis=-1)
  match = ((label[None, :] == targets[:, None]) & ok[None, :]
           & (cand_rank[None, :] == slot_rank[:, None]))
  return order[jnp.argmax(match, axis=-1)], match.any(-1)


def bank_rows(step: jax.Array, n: int, count: jax.Array) -> jax.Array:
  """The ``n`` bank rows of train step ``step``: draws ``step·n .. step·n + n - 1`` of
  a bank of ``count`` samples read in order, wrapping around, so every sample is
  used once before any is used again."""
  return (step.astype(jnp.int32) * n + jnp.arange(n, dtype=jnp.int32)) % count
