"""What every command does before its own work."""

import json
import os

import jax
from jax.sharding import Mesh

from dreamjax import checkpoint, models, sharding, train
from dreamjax import data as data_lib
from dreamjax import seeds as seeds_lib
from dreamjax.errors import CheckpointError, ConfigError
from dreamjax.fileio import check_writable


def start(config, workdir: str) -> tuple[Mesh, data_lib.Splits]:
  """Refuses an unwritable workdir before any compute, makes the job's one mesh,
  and reads and splits the data ``config`` names."""
  check_writable(workdir)
  return sharding.make_mesh(), data_lib.load_splits(config)


def load_classifier(workdir: str, num_classes: int, image_shape, *, seed_index: int = 0):
  """(model, one seed's variables) of an ``experiments/train_classifier.py`` run."""
  import ml_collections  # pylint: disable=g-import-not-at-top
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
