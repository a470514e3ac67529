r"""Attack the dreamjax classifier: robust accuracy, offline adversarial set, C3.

  python experiments/attack.py --workdir runs/attack
  python experiments/attack.py --config dreamjax/configs/attack.py:tiny --workdir /tmp/a
  python experiments/attack.py --config.attack.method=fgsm --config.robust.restarts=5

Then train on the adversarial set as an augmentation arm:
  python experiments/train_classifier.py --config.augment_file=runs/attack/adversarial.npz

Flags and work: :func:`dreamjax.commands.attack`.
"""

from dreamjax import commands  # imports dreamjax first, which sets XLA flags before JAX starts

if __name__ == "__main__":
  commands.run_command("attack")
