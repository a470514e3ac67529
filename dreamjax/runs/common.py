"""What every command does before its own work."""

import functools
import json
import os
from typing import Any, Callable, TypeVar

import jax
from jax.sharding import Mesh
import ml_collections

from dreamjax.plumbing import checkpoint, sharding
from dreamjax.training import models, train
from dreamjax import data as data_lib
from dreamjax.training import seeds as seeds_lib
from dreamjax.errors import CheckpointError, ConfigError
from dreamjax.plumbing.fileio import writable_workdir

_Result = TypeVar("_Result")


def in_workdir(run: Callable[..., _Result]) -> Callable[..., _Result]:
  """``run(config, workdir, ...)``, its workdir checked writable first (made if missing).

  An unwritable workdir is refused before any compute, and a run refused
  before it wrote anything (bad data, a label budget the data cannot give, a
  bad file named in the config) leaves no folder behind that it made
  (:func:`dreamjax.plumbing.fileio.writable_workdir`). The run function of every
  command but the study (whose runner uses that itself) wears it.
  """
  @functools.wraps(run)
  def wrapped(config, workdir: str, *args: Any, **kwargs: Any) -> _Result:
    with writable_workdir(workdir):
      return run(config, workdir, *args, **kwargs)
  return wrapped


def start(config) -> tuple[Mesh, data_lib.Splits]:
  """The job's one mesh, and the data ``config`` names, read and split (the run function
  checked its workdir first: :func:`in_workdir`)."""
  return sharding.make_mesh(), data_lib.load_splits(config)


def load_classifier(workdir: str, num_classes: int, image_shape, *, seed_index: int = 0):
  """(model, one seed's variables) of an ``experiments/train_classifier.py`` run."""
  try:
    with open(os.path.join(workdir, "results.json")) as f:
      run_config = ml_collections.ConfigDict(json.load(f)["config"])
  except (OSError, ValueError, KeyError) as e:
    raise ConfigError(f"{workdir!r} is not a train_classifier.py workdir ({e}).") from None
  model = models.make_model(run_config.model, num_classes)
  tx = train.make_optimizer(run_config.train)
  keys = seeds_lib.seed_keys([run_config.seed + i for i in range(run_config.num_seeds)])
  try:
    state, _ = checkpoint.restore_from_init(os.path.join(workdir, "checkpoint"), lambda: jax.vmap(
        lambda k: train.create_state(model, tx, models.init_variables(model, k, tuple(image_shape))))(
            keys))
  except CheckpointError as e:
    raise ConfigError(f"{workdir}: no usable classifier checkpoint ({e}); rerun"
                      " train_classifier.py with checkpoint_every > 0.") from None
  return model, seeds_lib.unstack(state.variables, seed_index)
