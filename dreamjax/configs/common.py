"""Config blocks shared by every experiment."""

import ml_collections


def data_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.dataset = "fashion_mnist"  # or 'idx:/folder' or 'tfds:NAME'
  c.data_dir = ""              # '' = DREAMJAX_DATA_DIR, then /usr/share/datasets/fashion-mnist
  c.num_labeled = 1000         # label budget N (equal per class); -1 = every label
  c.val_size = 1000            # validation images carved from train (monitoring only)
  c.seed = 0                   # draws the splits; also the model seed
  return c


def model_config(size: str = "small") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  if size == "tiny":    # tests: compiles and runs in seconds
    c.conv_features, c.pool, c.dense_features = (4, 8), (True, True), (16,)
  elif size == "small":  # default: trains fast on 2 CPU cores
    c.conv_features, c.pool, c.dense_features = (32, 64), (True, True), (128,)
  elif size == "reference":  # the benchmark's reference CNN
    c.conv_features, c.pool, c.dense_features = (32, 64, 128), (False, True, True), (256,)
  elif size == "large":  # accelerators
    c.conv_features, c.pool, c.dense_features = (64, 128, 256), (False, True, True), (512,)
  else:
    raise ValueError(f"unknown model size {size!r}")
  c.use_bn = False         # BatchNorm after each conv (needed by the dream 'bn' prior)
  c.dtype = "float32"
  return c


def train_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.steps = 1500            # optimizer steps (same for every arm of the study)
  c.batch_size = 128
  c.learning_rate = 2e-3    # AdamW peak, warmup then cosine decay to 1%
  c.weight_decay = 1e-4
  c.warmup_steps = 100
  c.label_smoothing = 0.0
  c.log_every = 100         # progress line and NaN check interval
  c.eval_every = 500        # validation accuracy interval (0: only at the end)
  c.checkpoint_every = 500  # 0: never
  return c


def make_tiny(train, eval_every: int | None = None) -> None:
  """Shrinks a ``train`` block in place to the seconds-long run of ``tiny`` presets.

  ``eval_every`` (with ``checkpoint_every`` alike) is left as it is when None.
  """
  train.steps = 30
  train.batch_size = 32
  train.warmup_steps = 5
  train.log_every = 10
  if eval_every is not None:
    train.eval_every = eval_every
    train.checkpoint_every = eval_every
