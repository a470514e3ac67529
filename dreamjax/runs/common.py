"""What every command does before its own work."""

from jax.sharding import Mesh

from dreamjax import data as data_lib
from dreamjax import sharding
from dreamjax.fileio import check_writable


def start(config, workdir: str) -> tuple[Mesh, data_lib.Splits]:
  """Refuses an unwritable workdir before any compute, makes the job's one mesh,
  and reads and splits the data ``config`` names."""
  check_writable(workdir)
  return sharding.make_mesh(), data_lib.load_splits(config)
