r"""Deep Dream a split with a classifier: augmented-set file, figures, results.json.

  python experiments/dream.py --config dreamjax/configs/dream.py:subtle --workdir runs/dream
  python experiments/dream.py --config dreamjax/configs/dream.py:strong \
      --config.classifier_dir=runs/clf --config.split=labeled
  python experiments/dream.py --config dreamjax/configs/dream.py:subtle \
      --config.dream.steps=40 --config.dream.layers="('conv0',)"

Without --config.classifier_dir a classifier is trained first (and reused by
a rerun with the same --workdir).
"""

import os

from absl import flags

import dreamjax  # noqa: F401  (sets XLA flags before JAX starts)
from dreamjax import cli
from dreamjax.runs import dream

_CONFIG = cli.define_config(
    os.path.join(os.path.dirname(__file__), "..", "dreamjax", "configs", "dream.py"),
    "Config file (path[:preset]); presets: subtle, strong, logit, bn, tiny.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/dream", "Where the outputs go.")


def main(argv):
  del argv
  result = dream.dream_split(_CONFIG.value, _WORKDIR.value)
  print(f"dreamed {result['count']} images in {result['seconds']:.1f}s"
        f" ({result['image_steps_per_s']:,.0f} image·steps/s); mean L2 {result['mean_l2']:.3f},"
        f" mean L∞ {result['mean_linf']:.3f}, objective gain {result['mean_objective_gain']:.4g}")


if __name__ == "__main__":
  cli.run(main)
