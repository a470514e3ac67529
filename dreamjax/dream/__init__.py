"""Deep Dream: jitted activation-gradient ascent from real images.

  spec = dream.from_config(cfg, model)        # validated, hashable settings
  out = dream.dream_batch(model, spec, variables, images, labels, valid, key)
  res = dream.dream_dataset(model, variables, images, labels, cfg, key)

Layout: ``objectives`` (what to ascend), ``priors`` (TV, L2, BatchNorm
statistics), ``spec`` (validation), ``engine`` (the jitted batch dream with
jitter, octaves and ε projection), ``dataset`` (a whole split in chunks),
``zoom`` (the long zoom; its pictures are in :mod:`dreamjax.figures`).
"""

from dreamjax.dream import objectives, priors
from dreamjax.dream.dataset import DreamResult, dream_dataset
from dreamjax.dream.engine import dream_batch, normalize_gradient, octave_shapes, project
from dreamjax.dream.objectives import (ClassLogit, Channel, LayerL2, LayerMean, Neuron,
                                       Objective, WeightedSum)
from dreamjax.dream.priors import bn_statistic_distance, image_l2, total_variation
from dreamjax.dream.spec import DreamSpec, from_config, validate
from dreamjax.dream.zoom import dream_zoom, zoom_in

__all__ = [
    "objectives", "priors", "DreamResult", "dream_dataset", "dream_batch",
    "normalize_gradient", "octave_shapes", "project", "ClassLogit", "Channel", "LayerL2",
    "LayerMean", "Neuron", "Objective", "WeightedSum", "bn_statistic_distance", "image_l2",
    "total_variation", "DreamSpec", "from_config", "validate", "dream_zoom", "zoom_in",
]
