"""Config of the deep dreamer (:mod:`dreamjax.methods.dreamer`): the study's ``pool_dreamer`` block.

The ``deep_dream_*`` arms dream through one network, deeper and wider than
the classifier, pretrained once per study on the unlabeled pool without its
labels (or a user's own, ``checkpoint``). Every setting of that network is
here, in one block the study config holds (``--config.pool_dreamer.steps=500``),
since all of those arms share it; the arms' own settings say only how to dream.

Presets:
  default  the study's: four conv layers up to 128 wide, rotation pretext, a
           few minutes on a 2-core CPU (docs/methods.md)
  tiny     seconds-long, for tests
"""

import ml_collections

from dreamjax.configs import attack as attack_configs

OBJECTIVES = ("rotation", "contrastive")


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # '' = pretrain one on the pool; else a file of dreamjax.methods.dreamer.save (docs/usage.md),
  # whose own model config and image shape are used and checked against the data.
  c.checkpoint = ""
  # rotation: predict which quarter turn an image was given (Gidaris et al. 2018);
  # contrastive: SimCLR's NT-Xent between two classical augmentations of each image.
  c.objective = "rotation"
  c.model = ml_collections.ConfigDict()
  # Pooling after the first two layers keeps the deep layers at 7×7, where a 3×3 conv
  # sees most of a 28×28 image, and the widths double per layer: a dream step costs a
  # few of the classifier's, which the online arm pays in every training step.
  c.model.conv_features = (16, 32, 64, 128)
  c.model.pool = (True, True, False, False)
  c.model.dense_features = (128,)
  c.model.use_bn = True
  c.model.dtype = "float32"
  c.steps = 1000              # optimiser steps of the pretraining
  c.batch_size = 128
  c.learning_rate = 2e-3      # AdamW peak, warmup then cosine decay (dreamjax.training.train)
  c.log_every = 100
  c.projection_dim = 64       # contrastive: size of the projection the loss compares
  c.temperature = 0.2         # contrastive: NT-Xent temperature
  c.augment = attack_configs.classical_config()  # contrastive: the two views' transforms
  c.augment.translate = 4     # stronger than the classifier's: two views of an image must
  c.augment.rotate_degrees = 20.0  # differ enough that matching them needs its content
  c.augment.brightness = 0.3
  c.augment.contrast = 0.4
  if preset == "default":
    pass
  elif preset == "tiny":
    c.model.conv_features = (4, 8, 8, 16)
    c.model.dense_features = (16,)
    c.steps = 20
    c.batch_size = 32
    c.log_every = 10
    c.projection_dim = 8
  else:
    raise ValueError(f"unknown pool_dreamer preset {preset!r}; choose default or tiny")
  return c
