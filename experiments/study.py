r"""Run the dreamjax study: every claim of the seed answer, with CIs and verdicts.

  python experiments/study.py                                   # quick preset
  python experiments/study.py --config dreamjax/configs/study.py:conclusions
  python experiments/study.py --config.dataset=tfds:mnist       # another dataset
  python experiments/study.py --dry_run                         # validate + plan only

Rerunning with the same --workdir resumes: finished cells are skipped. The
flags and the work are :func:`dreamjax.commands.study`; ``dreamjax study`` and
``./launch.sh study`` run the same.
"""

from dreamjax import commands  # imports dreamjax first, which sets XLA flags before JAX starts

if __name__ == "__main__":
  commands.run_command("study")
