"""Generative models for the study's C4/C6 arms: a VAE and a GAN, each
optionally class-conditional, plus pseudo-labelling of unconditional samples."""

from dreamjax.generators import gan, vae
from dreamjax.generators.gan import sample_gan, train_gan
from dreamjax.generators.io import load, save
from dreamjax.generators.pseudo import balanced_selection, probabilities, pseudo_label
from dreamjax.generators.vae import sample_vae, train_vae

TRAIN = {"vae": train_vae, "gan": train_gan}
SAMPLE = {"vae": sample_vae, "gan": sample_gan}
PREPARE = {"vae": vae.prepare_training, "gan": gan.prepare_training}  # for common.train_seeds

__all__ = ["train_vae", "sample_vae", "train_gan", "sample_gan", "pseudo_label", "probabilities",
           "balanced_selection", "save", "load",
           "TRAIN", "SAMPLE", "PREPARE"]
