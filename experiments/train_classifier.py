r"""Train the dreamjax classifier and report its held-out test accuracy.

  python experiments/train_classifier.py --workdir runs/clf
  python experiments/train_classifier.py --config dreamjax/configs/classifier.py:full
  python experiments/train_classifier.py --config.augment_file=runs/dream/augmented.npz

Flags and work: :func:`dreamjax.commands.train_classifier` (also ``dreamjax train_classifier``).
"""

from dreamjax import commands  # imports dreamjax first, which sets XLA flags before JAX starts

if __name__ == "__main__":
  commands.run_command("train_classifier")
