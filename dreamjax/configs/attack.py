"""Config of ``experiments/attack.py`` and the augmentation blocks it shares.

The blocks ``attack_config()``, ``classical_config()`` and ``noise_config()``
are also the ``attack``, ``classical`` and ``noise`` fields of the classifier
config, read by ``--config.augment=fgsm|pgd``, ``classical`` and ``noise``.
Pixels are in [0, 1], so ε and strengths are on that scale.

Presets (``--config dreamjax/configs/attack.py:PRESET``):
  default  the study's protocol: small CNN on the label budget, PGD ε = 0.1
  tiny     seconds-long run for tests
"""

import ml_collections

from dreamjax.configs import common


def attack_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "pgd"       # pgd | fgsm (fgsm: one step of size eps; steps is ignored)
  c.eps = 0.1            # radius of the ball around the clean image (>= 0)
  c.steps = 7            # PGD steps (>= 1); Madry et al. train with 7 on MNIST-scale data
  c.step_size = 0.0      # per-step move; 0 = 2.5·eps/steps
  c.norm = "linf"        # linf (signed steps) | l2 (normalised steps, eps per image)
  c.restarts = 1         # random restarts; the strongest per image is kept
  c.fraction = 0.5       # share of each training batch replaced by attacks, in [0, 1]
  return c


def classical_config() -> ml_collections.ConfigDict:
  """Label-preserving transforms; a strength of 0 turns that transform off."""
  c = ml_collections.ConfigDict()
  c.translate = 2           # max shift in pixels (zero padding + random crop)
  c.rotate_degrees = 10.0   # max rotation either way
  c.flip = False            # horizontal flip: off for Fashion-MNIST (its footwear all faces one way)
  c.brightness = 0.1        # max additive brightness change
  c.contrast = 0.2          # contrast factor drawn from [1 - c, 1 + c]
  return c


def noise_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.std = 0.1  # Gaussian pixel noise, then clipped to [0, 1]
  return c


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  c = common.data_config()
  c.model = common.model_config("small")
  c.train = common.train_config()
  c.num_seeds = 1          # classifiers trained (vmap) and attacked at once
  c.attack = attack_config()
  c.attack.steps = 10      # attack that makes the offline adversarial set
  c.offline = True         # write workdir/adversarial.npz from the labeled images
  c.robust = ml_collections.ConfigDict()
  c.robust.eps = 0.1       # the study's robust accuracy: L∞ PGD, ε = 0.1
  c.robust.steps = 20      # >= 20 steps with random start (docs/protocol.md)
  c.robust.restarts = 1
  c.robust.num_images = 1000  # test images attacked; -1 = all 10k
  c.alignment = ml_collections.ConfigDict()
  c.alignment.layer = "conv1"   # layer-objective dream used as the C3 contrast
  c.alignment.num_images = 500  # test images for the C3 cosines; 0 = skip
  c.alignment.steps = 10        # PGD steps of the 'pgd' direction
  if preset == "default":
    pass
  elif preset == "tiny":
    c.num_labeled = 100
    c.val_size = 200
    c.model = common.model_config("tiny")
    common.make_tiny(c.train, eval_every=0)
    c.attack.steps = 3
    c.robust.steps = 5
    c.robust.num_images = 100
    c.alignment.num_images = 50
    c.alignment.steps = 3
  else:
    raise ValueError(f"unknown preset {preset!r}; choose default or tiny")
  return c
