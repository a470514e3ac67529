r"""Deep Dream a split with a classifier: augmented-set file, figures, results.json.

  python experiments/dream.py --config dreamjax/configs/dream.py:subtle --workdir runs/dream
  python experiments/dream.py --config dreamjax/configs/dream.py:strong \
      --config.classifier_dir=runs/clf --config.split=labeled
  python experiments/dream.py --config dreamjax/configs/dream.py:subtle \
      --config.dream.steps=40 --config.dream.layers="('conv0',)"

Without --config.classifier_dir a classifier is trained first (and reused by
a rerun with the same --workdir). Flags and work: :func:`dreamjax.commands.dream`.
"""

from dreamjax import commands  # imports dreamjax first, which sets XLA flags before JAX starts

if __name__ == "__main__":
  commands.run_command("dream")
