"""Config of ``experiments/train_classifier.py``.

Presets (``--config dreamjax/configs/classifier.py:PRESET``):
  default  the label budget (N = 1000), small CNN
  full     every training label (the ≥ 91% Fashion-MNIST check)
  tiny     seconds-long run for tests
"""

import ml_collections

from dreamjax.configs import attack
from dreamjax.configs import common


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  c = common.data_config()
  c.model = common.model_config("small")
  c.train = common.train_config()
  c.augment_file = ""   # an augmented-dataset .npz appended to the labeled set
  c.augment = "none"    # on-the-fly: none | classical | noise | fgsm | pgd
  c.classical = attack.classical_config()  # strengths read by augment=classical
  c.noise = attack.noise_config()          # std read by augment=noise
  c.attack = attack.attack_config()        # eps, steps, fraction read by augment=fgsm|pgd
  c.init_from = ""      # checkpoint of a pretrained autoencoder / pretext trunk
  c.num_seeds = 1       # seeds seed, seed+1, ... trained at once (vmap)
  if preset == "default":
    pass
  elif preset == "full":
    c.num_labeled = -1
    c.val_size = 5000
    c.train.steps = 6000          # ~14 epochs of 55k at batch 128
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
  elif preset == "tiny":
    c.num_labeled = 100
    c.val_size = 200
    c.model = common.model_config("tiny")
    common.make_tiny(c.train, eval_every=10)
  else:
    raise ValueError(f"unknown preset {preset!r}; choose default, full or tiny")
  return c
