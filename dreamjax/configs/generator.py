"""Config of ``experiments/train_generator.py``: generators and pretraining.

Presets (``--config dreamjax/configs/generator.py:PRESET``):
  default  real Fashion-MNIST, the settings the study uses
  tiny     seconds-long run for tests

The VAE/GAN settings (sub-pixel upsampling, widths, batch 32, latent size,
learning rates) were chosen by measurement with an all-labels oracle CNN as
the judge, per CPU-second of training; the measurements, and the steps where
each generator's samples stop improving, are in docs/methods.md and
docs/results.md.
"""

import ml_collections

from dreamjax.configs import common

MODELS = ("vae", "gan", "diffusion", "ae", "pretext")
SOURCES = ("labeled", "pool")


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  c = common.data_config()
  c.model = "vae"              # vae | gan | diffusion | ae (autoencoder pretraining)
                               # | pretext (rotation)
  c.source = "pool"            # labeled: the label budget | pool: unlabeled, labels never read
  c.conditional = False        # vae/gan/diffusion: condition on the class (needs source=labeled)
  c.num_classes = 0            # conditional: label range; 0 = the dataset's classes
  c.latent_dim = 16            # vae/gan: size of the latent code z
  c.widths = (16, 32)          # vae/gan: channels of each stride-2 conv stage of the
                               # encoder / discriminator; the decoder / generator mirrors them
  c.upsample = "subpixel"      # vae/gan decoder stages: subpixel (DCGAN's topology, sub-pixel
                               # convs) | nearest (×2 + conv, then a full-resolution conv)
  c.steps = 8000               # optimizer steps (each GAN step updates D once, then G once)
  c.batch_size = 64            # ae/pretext batch (and vae/gan's when generator_batch_size=0)
  c.generator_batch_size = 32  # vae/gan (and diffusion's when diffusion_batch_size=0) batch;
                               # 0 = batch_size
  c.learning_rate = 1e-3       # Adam step size of the ae and pretext models
  c.vae_learning_rate = 3e-3   # vae: Adam step size
  c.kl_weight = 1.0            # vae: weight of the KL term (1 = the ELBO itself)
  c.kl_warmup_steps = 0        # vae: KL weight ramps from 0 over these steps (0 = none)
  c.sample_temperature = 1.0   # vae: prior scale at sampling (1 = the prior itself)
  c.gan_learning_rate = 1e-3   # gan: Adam step size of both players (DCGAN: 2e-4)
  c.beta1 = 0.5                # gan: Adam β1; DCGAN's 0.5 damps the players' oscillation
  c.beta2 = 0.999              # gan: Adam β2
  c.real_label = 0.9           # gan: one-sided label smoothing, D's target on real images
  c.gan_loss = "ns"            # gan: ns (non-saturating) | hinge
  c.diffaug = ""               # gan: DiffAugment policy, e.g. "translation,cutout" ('' = none)
  c.ema_decay = 0.0            # gan: sample from an EMA of G's weights (0 = no EMA)
  c.r1_gamma = 0.0             # gan: R1 penalty weight on D at real images (0 = none)
  # diffusion: flow matching with a small U-Net (dreamjax/generators/diffusion.py).
  c.diffusion_widths = (32, 64)     # U-Net channels at each resolution (×2 stride between)
  c.diffusion_patch = 2             # pixels per side folded into channels first (1 or 2)
  c.diffusion_batch_size = 0        # 0 = generator_batch_size
  c.diffusion_learning_rate = 1e-3  # Adam step size (gradients clipped to norm 1)
  c.diffusion_ema_decay = 0.999     # sample from a weight average (0 = the last weights)
  c.diffusion_label_dropout = 0.1   # conditional: share of labels dropped to the null class
  c.diffusion_sample_steps = 20     # Euler steps from noise to image
  c.diffusion_guidance = 2.0        # conditional: classifier-free guidance weight (1 = none)
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
    c.generator_batch_size = 0
    c.diffusion_widths = (8, 16)
    c.diffusion_sample_steps = 4
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


def generator_batch_size(cfg, model: str | None = None) -> tuple[str, int]:
  """(field name, value) of the VAE/GAN/diffusion batch: ``diffusion_batch_size``
  for a diffusion model (``model``, default ``cfg.model``) where it is set, else
  ``generator_batch_size``, or ``batch_size`` where that is 0 or absent
  (configs saved before it existed)."""
  if (model or cfg.get("model")) == "diffusion" and int(cfg.get("diffusion_batch_size", 0)):
    return "diffusion_batch_size", int(cfg.diffusion_batch_size)
  if int(cfg.get("generator_batch_size", 0)):
    return "generator_batch_size", int(cfg.generator_batch_size)
  return "batch_size", int(cfg.batch_size)


def vae_learning_rate_field(cfg) -> str:
  """The VAE's step-size field: ``vae_learning_rate``, or ``learning_rate`` in
  configs saved before it existed."""
  return "vae_learning_rate" if "vae_learning_rate" in cfg else "learning_rate"
