"""Generative models for the study's C4/C6 arms: a VAE, a GAN and a
flow-matching diffusion model, each optionally class-conditional, plus
pseudo-labelling of unconditional samples."""

from dreamjax.generators import diffusion, gan, vae
from dreamjax.generators.diffusion import sample_diffusion, train_diffusion
from dreamjax.generators.gan import sample_gan, train_gan
from dreamjax.generators.io import load, save
from dreamjax.generators.pseudo import balanced_selection, probabilities, pseudo_label
from dreamjax.generators.vae import sample_vae, train_vae

TRAIN = {"vae": train_vae, "gan": train_gan, "diffusion": train_diffusion}
SAMPLE = {"vae": sample_vae, "gan": sample_gan, "diffusion": sample_diffusion}
PREPARE = {"vae": vae.prepare_training, "gan": gan.prepare_training,  # for common.train_seeds
           "diffusion": diffusion.prepare_training}

__all__ = ["train_vae", "sample_vae", "train_gan", "sample_gan", "train_diffusion",
           "sample_diffusion", "pseudo_label", "probabilities", "balanced_selection", "save",
           "load",
           "TRAIN", "SAMPLE", "PREPARE"]
