r"""Train the dreamjax classifier and report its held-out test accuracy.

  python experiments/train_classifier.py --workdir runs/clf
  python experiments/train_classifier.py --config dreamjax/configs/classifier.py:full
  python experiments/train_classifier.py --config.augment_file=runs/dream/augmented.npz
"""

import os

from absl import flags

import dreamjax  # noqa: F401  (sets XLA flags before JAX starts)
from dreamjax import cli
from dreamjax.runs import classifier

_CONFIG = cli.define_config(
    os.path.join(os.path.dirname(__file__), "..", "dreamjax", "configs",
    "classifier.py"), "Config file (path[:preset]).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/classifier", "Where results and checkpoints go.")


def main(argv):
  del argv
  result = classifier.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(f"test accuracy: {result['test_accuracy']:.4f}")


if __name__ == "__main__":
  cli.run(main)
