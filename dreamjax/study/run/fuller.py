"""What the fuller presets add to a study that decides only some claims.

A study that decides fewer claims than the protocol has (the ``first`` preset:
the claims about Deep Dream) names, in its report, the presets that decide the
rest, the command that extends its own workdir to each (the cells it finished
are the same computation there and are not run again) and the time each would
take on this machine: the cost model of the cells still to run, priced at the
seconds per image-step this study's finished cells took and scheduled on the workers
of its last run (:func:`dreamjax.study.run.taskgraph.wall_seconds`).
"""

import dataclasses
from typing import Any, Mapping, Sequence

from dreamjax.configs import arms as arms_lib
from dreamjax.configs import study as study_configs
from dreamjax.study import claims, cost
from dreamjax.study import records as records_lib
from dreamjax.study import plan as plan_lib
from dreamjax.study.run import artefacts, taskgraph

PRESETS = ("quick", "conclusions")
# What a fuller preset keeps of the study it extends: the data and the seeds.
KEPT = ("dataset", "data_dir", "num_seeds", "first_seed")
CONFIG = "dreamjax/configs/study.py"


@dataclasses.dataclass(frozen=True)
class Fuller:
  preset: str
  claims: tuple[str, ...]     # claims this study left that the preset decides
  budgets: tuple[int, ...]
  jobs_left: int              # cells (and alignment jobs) the preset adds
  seconds: float | None       # its estimated wall time here; None without a price
  command: str


def preset_config(config, preset: str):
  """``preset``'s config on ``config``'s data and seeds."""
  fuller = study_configs.get_config(preset)
  for field in KEPT:
    if field in config:
      fuller[field] = config[field]
  return fuller


def seconds_per_image_step(config, arms: Mapping[str, arms_lib.Resolved],
                           records: Sequence[dict[str, Any]],
                           on_workers: bool = False) -> float | None:
  """What an image-step of the cost model took in this study (of ``config`` and its
  resolved ``arms``): the finished cells' wall time over their predicted image-steps
  (None before any cell finished). ``on_workers``: the cells ran as tasks, so their
  times leave out the shared models, which were tasks of their own."""
  costs = cost.job_costs(config, plan_lib.jobs(config, arms), arms,
                         charge_shared=not on_workers)
  by_key = {r["cell"]: r for r in records}
  pairs = [(costs[k], cost.record_seconds(by_key[k])) for k in costs if k in by_key]
  return cost.calibration_ratio(pairs)


def workers_of(workdir: str) -> int:
  """The local workers of the workdir's last run (0: it ran in one process)."""
  runs = [r for r in records_lib.read_sessions(workdir) if isinstance(r.get("compute"), dict)]
  return int(runs[-1]["compute"].get("workers", 0) or 0) if runs else 0


def fuller_presets(config, records: Sequence[dict[str, Any]], workdir: str) -> list[Fuller]:
  """For each of :data:`PRESETS` that decides a claim this study leaves: what it adds."""
  left = [c for c in claims.CLAIMS if c not in tuple(config.get("claims", claims.CLAIMS))]
  if not left:
    return []
  # The report has the study's config, not the arms its run resolved: resolved here once,
  # as each preset's config is below.
  workers = workers_of(workdir)
  price = seconds_per_image_step(config, arms_lib.resolve(config), records, workers > 0)
  done = {r["cell"] for r in records if r.get("status") == "ok"}
  built = artefacts.built(workdir)
  out = []
  for preset in PRESETS:
    fuller = preset_config(config, preset)
    decides = tuple(c for c in left if c in tuple(fuller.claims))
    if not decides:
      continue
    arms = arms_lib.resolve(fuller)
    jobs = plan_lib.jobs(fuller, arms)
    todo = [c.key for c in jobs if c.key not in done]
    seconds = None if price is None else taskgraph.wall_seconds(
        fuller, jobs, arms, done | {"oracle"}, price, workers, built=built)
    flags = [f"--config {CONFIG}:{preset}", f"--workdir {workdir}"]
    if config.dataset != study_configs.get_config(preset).dataset:
      flags.append(f"--config.dataset={config.dataset}")
    out.append(Fuller(preset, decides, tuple(int(b) for b in fuller.budgets), len(todo),
                      seconds, " ".join(["./launch.sh study", *flags])))
  return out


def lines(fuller: Sequence[Fuller]) -> list[str]:
  """The report's section on the claims this study leaves to fuller presets."""
  if not fuller:
    return []
  md = ["## Claims left to fuller presets", "",
        "This study decides only some of the claims. Each command below extends this"
        " workdir in place: the cells it finished are the same computation there and do not"
        " run again. Times are estimates for this machine: the cost model of the cells"
        " still to run (dreamjax/study/cost.py) at the seconds per image-step this"
        " study's cells took, scheduled on the workers of its last run.", "",
        "| preset | decides | label budgets | cells to run | estimated time | command |",
        "|---|---|---|---|---|---|"]
  for f in fuller:
    when = "unknown" if f.seconds is None else f"~{cost.format_duration(f.seconds)}"
    md.append(f"| `{f.preset}` | {', '.join(f.claims)} | {', '.join(map(str, f.budgets))} |"
              f" {f.jobs_left} | {when} | `{f.command}` |")
  return md + [""]
