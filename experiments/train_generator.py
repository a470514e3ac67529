r"""Train a VAE/GAN (or pretrain a trunk) and write samples, losses and results.

  python experiments/train_generator.py --config.model=vae --config.source=pool
  python experiments/train_generator.py --config.model=gan --config.source=labeled \
      --config.conditional=True
  python experiments/train_generator.py --config.model=ae --workdir runs/ae
  python experiments/train_classifier.py --config.init_from=runs/ae

Short forms: --model=vae|gan|ae|pretext and --source=labeled|pool set the
config fields of the same names.
"""

import os

from absl import flags

import dreamjax  # noqa: F401  (sets XLA flags before JAX starts)
from dreamjax import cli
from dreamjax.runs import generator

_CONFIG = cli.define_config(
    os.path.join(os.path.dirname(__file__), "..", "dreamjax", "configs",
    "generator.py"), "Config file (path[:preset]).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/generator", "Where results and checkpoints go.")
_MODEL = flags.DEFINE_string("model", None, "Shortcut for --config.model (vae|gan|ae|pretext).")
_SOURCE = flags.DEFINE_string("source", None, "Shortcut for --config.source (labeled|pool).")


def main(argv):
  del argv
  config = _CONFIG.value
  if _MODEL.value is not None:
    config.model = _MODEL.value
  if _SOURCE.value is not None:
    config.source = _SOURCE.value
  result = generator.train_and_evaluate(config, _WORKDIR.value)
  fd = result.get("frechet")
  print(f"{config.model} on {config.source}: losses {result['final_losses']}"
        + (f"; Fréchet samples/test {fd['samples_vs_test']:.2f},"
           f" real/test {fd['real_train_vs_test']:.2f}" if fd else ""))


if __name__ == "__main__":
  cli.run(main)
