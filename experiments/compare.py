r"""Compare two runs of a study: each cell's paired change, each claim's verdict in both.

  python experiments/compare.py --a=docs/results/quick --b=runs/steps1200 \
      --name_a="300 steps" --name_b="1200 steps" --out=docs/results/steps_1200

Both folders hold a finished study (a workdir, or a copy written by ``dreamjax
study --report_only --publish``) on the same data and seeds. Flags and work:
:func:`dreamjax.commands.compare`.
"""

from dreamjax import commands  # imports dreamjax first, which sets XLA flags before JAX starts

if __name__ == "__main__":
  commands.run_command("compare")
