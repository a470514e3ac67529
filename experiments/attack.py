r"""Attack the dreamjax classifier: robust accuracy, offline adversarial set, C3.

  python experiments/attack.py --workdir runs/attack
  python experiments/attack.py --config dreamjax/configs/attack.py:tiny --workdir /tmp/a
  python experiments/attack.py --config.attack.method=fgsm --config.robust.restarts=5

Then train on the adversarial set as an augmentation arm:

  python experiments/train_classifier.py --config.augment_file=runs/attack/adversarial.npz
"""

import os

from absl import flags

import dreamjax  # noqa: F401  (sets XLA flags before JAX starts)
from dreamjax import cli
from dreamjax.runs import attack

_CONFIG = cli.define_config(
    os.path.join(os.path.dirname(__file__), "..", "dreamjax", "configs", "attack.py"),
    "Config file (path[:preset]).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/attack", "Where results and checkpoints go.")


def main(argv):
  del argv
  out = attack.run(_CONFIG.value, _WORKDIR.value)
  print(f"clean accuracy: {out['clean_accuracy']:.4f}")
  print(f"robust accuracy (PGD eps={_CONFIG.value.robust.eps}): {out['robust_accuracy']:.4f}")
  if "alignment" in out:
    a = out["alignment"]
    print(f"C3 cosine: logit dream vs attack {a['logit']['mean']:.3f},"
          f" layer dream vs attack {a['layer']['mean']:.3f}")


if __name__ == "__main__":
  cli.run(main)
