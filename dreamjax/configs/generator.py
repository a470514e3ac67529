"""Config of ``experiments/train_generator.py``: generators and pretraining.

Presets (``--config dreamjax/configs/generator.py:PRESET``):
  default  real Fashion-MNIST; a pool-trained VAE in about a minute and a GAN in
           about a minute and a half on 2 free CPU cores
  tiny     seconds-long run for tests
"""

import ml_collections

from dreamjax.configs import common

MODELS = ("vae", "gan", "ae", "pretext")
SOURCES = ("labeled", "pool")


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  c = common.data_config()
  c.model = "vae"              # vae | gan | ae (autoencoder pretraining) | pretext (rotation)
  c.source = "pool"            # labeled: the label budget | pool: unlabeled, labels never read
  c.conditional = False        # vae/gan: condition on the class (needs source=labeled)
  c.num_classes = 0            # conditional: label range; 0 = the dataset's classes
  c.latent_dim = 32            # vae/gan: size of the latent code z
  c.widths = (16, 32)          # vae/gan: channels of each stride-2 conv stage of the
                               # encoder / discriminator; the decoder / generator mirrors them
  c.steps = 1200               # optimizer steps (each GAN step updates D once, then G once)
  c.batch_size = 64
  c.learning_rate = 1e-3       # Adam step size of the vae, ae and pretext models
  c.kl_weight = 1.0            # vae: weight of the KL term (1 = the ELBO itself)
  c.gan_learning_rate = 2e-4   # gan: Adam step size of both players (DCGAN's value)
  c.beta1 = 0.5                # gan: Adam β1; DCGAN's 0.5 damps the players' oscillation
  c.real_label = 0.9           # gan: one-sided label smoothing, D's target on real images
  c.log_every = 100            # history row, progress line and NaN check interval
  c.sample_batch = 500         # images per jitted sampling call (one compile for any count)
  # Augmented-dataset file (vae/gan): M generated images per real labeled image.
  c.augment_per_image = 1      # M; 0 = write no file
  c.pseudo_label_threshold = 0.9  # unconditional: keep samples the labeler's softmax
                                  # gives at least this confidence, in [0, 1]
  c.labeler_workdir = ""       # train_classifier.py workdir whose seed-0 model pseudo-labels;
                               # '' = train one here on the label budget (the `train` block)
  # Fréchet distance of samples, in the features of the reference ("oracle") classifier.
  c.fid_num = 2000             # samples and real test images compared (0 = skip)
  c.fid_layer = "dense0"       # the classifier activation used as feature space
  c.reference_workdir = ""     # train_classifier.py workdir (preset full) of the oracle;
                               # '' = train one here on every training label
  c.reference_steps = 1000     # steps of that in-run oracle (the `train` block otherwise)
  # The classifier: trunk of the ae/pretext models, and labeler/oracle architecture.
  c.classifier = common.model_config("small")
  c.train = common.train_config()  # how the labeler and the oracle are trained
  c.train.eval_every = 0
  c.train.checkpoint_every = 0
  if preset == "default":
    pass
  elif preset == "tiny":
    c.num_labeled = 100
    c.val_size = 200
    c.latent_dim = 4
    c.widths = (4, 8)
    c.steps = 30
    c.batch_size = 16
    c.log_every = 10
    c.sample_batch = 50
    c.fid_num = 100
    c.reference_steps = 30
    c.pseudo_label_threshold = 0.2
    c.classifier = common.model_config("tiny")
    common.make_tiny(c.train)
  else:
    raise ValueError(f"unknown preset {preset!r}; choose default or tiny")
  return c
