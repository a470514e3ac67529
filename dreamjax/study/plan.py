"""A study config's jobs, as values: which cells it runs, and in which order.

Pure functions of the config and its resolved arms
(:func:`dreamjax.configs.arms.resolve`): running a study
(:mod:`dreamjax.study.run`) and reporting it (the fuller presets of
:mod:`dreamjax.study.run.fuller`) both read them.
"""

import dataclasses
from typing import Mapping

from dreamjax.configs import arms as arms_lib
from dreamjax.study import claims

# What a job of the study does: train an arm's classifiers (a cell), or measure
# C3's alignment of dream and attack directions on a budget's baselines.
TRAIN, ALIGNMENT = "train", "alignment"
# Why a cell is not one of its budget's main cells: more copies per image of a
# stored-image arm, or the baseline at more real labels (the exchange rate).
MORE_COPIES, MORE_LABELS = "copies", "labels"


@dataclasses.dataclass(frozen=True)
class Cell:
  """One job of the study: an arm at one label budget, every seed at once.

  Its one string form, :attr:`key` (``N1000/dream_sweep@0.3``,
  ``N1000/classical/M4``, ``N1250/baseline``, ``N1000/alignment``), names it in
  results.jsonl and the log; nothing parses it back.
  """
  budget: int
  arm: str            # e.g. "dream_sweep@0.3"; "alignment" for an alignment job
  copies: int = 1     # M generated images per labeled image
  exchange: str = ""  # "" (a main cell), MORE_COPIES or MORE_LABELS
  job: str = TRAIN

  @classmethod
  def of(cls, budget: int, arm: str, copies: int, main_copies: int) -> "Cell":
    """``arm`` at ``budget`` with ``copies`` per image: a main cell at the study's own
    ``main_copies`` (``N1000/classical``), else an exchange cell (``N1000/classical/M4``)."""
    return cls(budget, arm, copies, "" if copies == main_copies else MORE_COPIES)

  @classmethod
  def alignment(cls, budget: int) -> "Cell":
    return cls(budget, "alignment", job=ALIGNMENT)

  @property
  def main(self) -> bool:
    """One of its budget's main cells (an alignment job counts as one)."""
    return not self.exchange

  @property
  def key(self) -> str:
    return f"N{self.budget}/{self.arm}" + (f"/M{self.copies}" if self.exchange == MORE_COPIES
                                            else "")

  @property
  def folder(self) -> str:
    return folder_of(self.key)

  @property
  def run(self) -> str:
    """The name of its training run under its budget (:meth:`Context.fit`): its arm, and
    an exchange cell's copies (``classical_M4``); its folder is ``N<budget>/<run>``."""
    return self.arm + (f"_M{self.copies}" if self.exchange == MORE_COPIES else "")


def folder_of(key: str) -> str:
  """The workdir folder of the job whose key (results.jsonl's ``cell``) is ``key``."""
  return key.replace("@", "_at_").replace("/M", "_M")


def plan(config, arms: Mapping[str, arms_lib.Resolved], num_classes: int = 10) -> list[Cell]:
  """Cells in the order they run; within a budget, baseline first (other arms use it).

  The primary budget also gets the exchange-rate cells, after its arms: each
  of ``exchange.arms`` at more copies per image (``N1000/classical/M4``) and
  the baseline at more real labels (``N1250/baseline``, rounded to a whole
  number per class), and the strength sweep (which no verdict reads) runs
  there alone. ``arms``: the config's resolved arms (:func:`dreamjax.configs.arms.resolve`).
  """
  cells = []
  m0 = int(config.copies)
  for n in config.budgets:
    primary = n == int(config.primary_budget)
    for name in config.arms:
      mine = [a for a in arms.values() if a.of == name]  # itself, or its variants
      if any(a.entry.variants for a in mine) and not primary:
        continue
      cells += [Cell.of(n, a.name, m0, m0) for a in mine]
    if not primary:
      continue
    for name in config.exchange.arms:
      if name in config.arms:
        cells += [Cell.of(n, name, int(m), m0) for m in config.exchange.copies if int(m) != m0]
    cells += [Cell(b, "baseline", m0, MORE_LABELS)  # a budget's own serves it
              for b in exchange_budgets(n, config.exchange.label_factors, num_classes)
              if b not in tuple(config.budgets)]
  return cells


def exchange_budgets(n: int, factors, num_classes: int) -> list[int]:
  """``n × factor`` real labels for each factor, rounded to a whole number per class."""
  return sorted({int(round(n * float(f) / num_classes)) * num_classes for f in factors} - {n})


def has_alignment(arms: Mapping[str, arms_lib.Resolved]) -> bool:
  """Whether the study of these resolved arms measures C3's alignment: it runs an arm
  C3's rule reads."""
  return any(a.base in claims.reads("C3") for a in arms.values() if a.of)


def job_order(config, cells: list[Cell], with_alignment: bool) -> list[Cell]:
  """Every job in dependency order: per budget its cells, then its C3 alignment; the
  cells of no main budget (exchange rates) last."""
  jobs = []
  for n in config.budgets:
    jobs += [c for c in cells if c.budget == n and c.main]
    if with_alignment:
      jobs.append(Cell.alignment(n))
  return jobs + [c for c in cells if not c.main]


def jobs(config, arms: Mapping[str, arms_lib.Resolved], num_classes: int = 10) -> list[Cell]:
  """Every job of the study of ``config`` and its resolved ``arms``, in dependency order:
  its :func:`plan`'s cells and, where it measures them, its C3 alignments."""
  return job_order(config, plan(config, arms, num_classes), has_alignment(arms))
