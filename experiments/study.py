r"""Run the dreamjax study: every claim of the seed answer, with CIs and verdicts.

  python experiments/study.py                                   # quick preset
  python experiments/study.py --config dreamjax/configs/study.py:full --workdir runs/full
  python experiments/study.py --config.dataset=tfds:mnist       # another dataset
  python experiments/study.py --dry_run                         # validate + plan only

Rerunning with the same --workdir resumes: finished cells are skipped.
"""

import os

from absl import flags
from absl import logging

import dreamjax  # noqa: F401  (sets XLA flags before JAX starts)
from dreamjax import cli
from dreamjax.study import report, runner

_CONFIG = cli.define_config(
    os.path.join(os.path.dirname(__file__), "..", "dreamjax", "configs", "study.py"),
    "Study config (path[:preset]); presets quick, full, tiny.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/study_quick", "Results, checkpoints, report.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Validate config and data, print the plan, stop.")
_RETRY = flags.DEFINE_bool("retry_failed", False, "Run failed cells again instead of keeping them.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Rewrite the report from results.jsonl.")


def main(argv):
  del argv
  if _REPORT_ONLY.value:
    runner.check_workdir(_CONFIG.value, _WORKDIR.value)  # the report must describe this study
    paths = report.write_report(_CONFIG.value, _WORKDIR.value)
    print(f"report: {paths['report']}")
    return
  out = runner.run_study(_CONFIG.value, _WORKDIR.value, dry_run=_DRY_RUN.value,
                         retry_failed=_RETRY.value, log=logging.info)
  if "report" in out:
    print(f"report: {out['report']}")


if __name__ == "__main__":
  cli.run(main)
