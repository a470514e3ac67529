"""What a study config asks for, read in one place: its seeds, each label budget's
training config and the shared pool's budget. Running a study and reporting it both
read these.
"""


def train_config(config, budget: int):
  """The classifier's training config at label budget ``budget``: ``config.train`` with
  the steps of ``config.train_steps_by_budget["N{budget}"]`` where it names one."""
  steps = (config.get("train_steps_by_budget") or {}).get(f"N{int(budget)}")
  if steps is None:
    return config.train
  tcfg = config.train.copy_and_resolve_references()
  tcfg.steps = int(steps)
  return tcfg


def steps_text(config) -> str:
  """The training length of the study's budgets: "600 training steps" where they share
  one, else each budget's ("training steps N100: 1200, N1000: 600")."""
  steps = {int(b): int(train_config(config, int(b)).steps) for b in config.budgets}
  if len(set(steps.values())) == 1:
    return f"{next(iter(steps.values()))} training steps"
  return "training steps " + ", ".join(f"N{b}: {n}" for b, n in sorted(steps.items()))


def pool_budget(config) -> int:
  """The label budget whose seed-0 pool the shared pool models train on.

  ``config.pool_budget``, or the study's largest budget where that is larger
  (0: the largest budget). Labeled subsets are nested across budgets (a
  seed's first images of each class), so this pool holds no image any of the
  study's budgets labels for seed 0, and one pool serves every budget.
  """
  return max(int(config.get("pool_budget", 0)), *(int(b) for b in config.budgets))


def seeds_of(config) -> tuple[int, ...]:
  """The study's seeds: ``num_seeds`` of them from ``first_seed``."""
  first = int(config.get("first_seed", 0))
  return tuple(range(first, first + int(config.num_seeds)))


def pool_generators(config) -> int:
  """G: the generators each pool generator arm trains (1 in a config made before G)."""
  return int(config.get("pool_generators", 1))
