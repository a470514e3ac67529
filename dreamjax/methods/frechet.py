"""Fréchet distance between image sets in a reference classifier's features.

The FID recipe (Heusel et al. 2017) with the study's oracle classifier in
place of Inception: fit a Gaussian to each set's features and measure

  d² = |μa − μb|² + tr(Σa + Σb − 2 (Σa Σb)^½).

The trace of the matrix square root is computed as tr((Σa^½ Σb Σa^½)^½) from
symmetric eigendecompositions in float64: the same value, but the matrix is
symmetric positive semi-definite, so there is no complex round-off to discard
and near-singular covariances (few images, dead ReLUs) stay stable.
"""

import functools

import jax
import numpy as np
from jax.sharding import Mesh

from dreamjax.plumbing import sharding
from dreamjax.training import models
from dreamjax.errors import ConfigError


def _psd_sqrt(sym: np.ndarray) -> np.ndarray:
  eigvals, eigvecs = np.linalg.eigh(sym)
  return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def _feature_sets(features_a, features_b, need: str) -> tuple[np.ndarray, np.ndarray]:
  """Two ``[N, D]`` feature sets as float64, refused unless they share D and each has
  the two rows that ``need`` (what the distance estimates) takes."""
  a = np.asarray(features_a, np.float64)
  b = np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ConfigError(f"features must be [N, D] with the same D; got {a.shape} and {b.shape}.")
  if len(a) < 2 or len(b) < 2:
    raise ConfigError(f"need at least 2 images per set {need}; got {len(a)} and {len(b)}.")
  return a, b


def frechet_distance(features_a, features_b) -> float:
  """Squared Fréchet distance between Gaussians fitted to two ``[N, D]`` feature sets."""
  a, b = _feature_sets(features_a, features_b, "for a covariance")
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  sqrt_a = _psd_sqrt(cov_a)
  middle = sqrt_a @ cov_b @ sqrt_a
  trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
  d2 = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
  return float(max(d2, 0.0))


def draws(num_rows: int, num_images: int, max_draws: int = 1, seed: int = 0
          ) -> list[np.ndarray]:
  """Row indices of up to ``max_draws`` disjoint draws of ``num_images`` rows out of
  ``num_rows``, without replacement, from a fixed ``seed``; none when fewer rows.

  The same sizes always give the same draws, so a set's distance is a function of
  the set alone.
  """
  if num_images < 2 or max_draws < 1:
    raise ConfigError(f"draws: num_images={num_images} must be >= 2 and max_draws={max_draws}"
                      " >= 1.")
  count = min(int(max_draws), num_rows // num_images)
  order = np.random.default_rng(seed).permutation(num_rows)
  return [np.sort(order[i * num_images:(i + 1) * num_images]) for i in range(count)]


def matched_frechet(features, reference, num_images: int, max_draws: int = 1,
                    seed: int = 0) -> float | None:
  """Fréchet distance from ``num_images`` rows of ``features`` to ``reference``.

  The mean over :func:`draws` of that many rows (up to ``max_draws`` disjoint
  ones). Fréchet distance grows as a set shrinks (its covariance and mean are
  estimated from fewer images), so sets compared with one another are measured
  on the same number of images; more draws from a large set lower the spread
  of its value, not its expectation. None when the set has fewer than
  ``num_images`` rows. ``num_images=0``: every row, one distance (what the first
  studies recorded).
  """
  features = np.asarray(features)
  if not num_images:
    return frechet_distance(features, reference)
  rows = draws(len(features), int(num_images), int(max_draws), seed)
  if not rows:
    return None
  return float(np.mean([frechet_distance(features[r], reference) for r in rows]))


def kernel_inception_distance(features_a, features_b, max_rows: int = 2000,
                              seed: int = 0) -> float:
  """Kernel distance (KID; Bińkowski et al. 2018) between two ``[N, D]`` feature sets.

  The unbiased estimate of the squared MMD under the cubic polynomial kernel
  ``k(x, y) = (x·y / D + 1)³``. Unlike the Fréchet distance its expectation does
  not depend on the sets' sizes, so sets of 100 and 5000 images compare fairly.
  Sets larger than ``max_rows`` are subsampled (without replacement, fixed seed)
  to bound the N² kernel matrices.
  """
  a, b = _feature_sets(features_a, features_b, "for KID")
  rng = np.random.default_rng(seed)
  a = a[rng.choice(len(a), max_rows, replace=False)] if len(a) > max_rows else a
  b = b[rng.choice(len(b), max_rows, replace=False)] if len(b) > max_rows else b
  d = a.shape[1]
  k = lambda x, y: (x @ y.T / d + 1.0) ** 3
  kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
  m, n = len(a), len(b)
  within_a = (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
  within_b = (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
  return float(within_a + within_b - 2 * kab.mean())


@functools.partial(jax.jit, static_argnums=(0, 1))
def _layer(model, layer: str, variables, images):
  _, acts, _ = models.apply_with_activations(model, variables, images)
  return acts[layer].reshape((images.shape[0], -1))


def features(model, variables, images, layer: str = "dense0", batch_size: int = 1000, *,
             mesh: Mesh | None = None) -> np.ndarray:
  """Activations of ``layer`` (default: the penultimate ``dense0``), ``[N, D]`` float32.

  ``variables`` are ONE classifier's (not seed-stacked). Chunks of images are
  split by rows over ``mesh`` (default: every device).
  """
  if layer not in models.layer_names(model):
    raise ConfigError(f"fid_layer={layer!r} is not a layer of this classifier; choose one of"
                      f" {', '.join(models.layer_names(model))}.")
  return sharding.map_rows(functools.partial(_layer, model, layer), variables,
                           np.asarray(images, np.float32), mesh=sharding.default(mesh),
                           chunk=batch_size)


def fid(model, variables, images_a, images_b, layer: str = "dense0", *,
        mesh: Mesh | None = None) -> float:
  """Fréchet distance between two image sets in ``model``'s ``layer`` features."""
  return frechet_distance(features(model, variables, images_a, layer, mesh=mesh),
                          features(model, variables, images_b, layer, mesh=mesh))
