r"""Train a VAE/GAN/diffusion model (or pretrain a trunk) and write samples, losses and results.

  python experiments/train_generator.py --config.model=vae --config.source=pool
  python experiments/train_generator.py --config.model=gan --config.source=labeled \
      --config.conditional=True
  python experiments/train_generator.py --model=diffusion --source=labeled \
      --config.conditional=True
  python experiments/train_generator.py --config.model=ae --workdir runs/ae
  python experiments/train_classifier.py --config.init_from=runs/ae

Short forms: --model=vae|gan|diffusion|ae|pretext and --source=labeled|pool set the
config fields of the same names. Flags and work: :func:`dreamjax.commands.train_generator`.
"""

from dreamjax import commands  # imports dreamjax first, which sets XLA flags before JAX starts

if __name__ == "__main__":
  commands.run_command("train_generator")
