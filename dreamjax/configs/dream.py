"""Config of Deep Dream (``dreamjax.dream``) and of ``experiments/dream.py``.

Presets (``get_preset(name)`` for the dream block alone, or
``--config dreamjax/configs/dream.py:PRESET`` for the whole experiment):
  subtle  a few small steps on one scale: a faint texture, the label survives
  strong  three octaves of many steps: the classic "extreme" Deep Dream look
  logit   ascend each image's own class logit inside an L∞ ε-ball, the same
          budget as the study's PGD (ε = 0.1), so the two can be compared
  bn      like strong, plus DeepInversion's BatchNorm-statistics prior (and
          small TV / L2 priors); needs a classifier with ``model.use_bn``
  tiny    (experiment only) seconds-long run for tests
  deep_subtle, deep_strong
          subtle and strong for the study's deep dreamer (dreamjax/methods/dreamer.py,
          four conv layers): a deeper layer, the same strengths; the small
          classifier has no such layer

Strength. A dream's *strength* is ``octaves × steps × step_size``: with the
``mean_abs`` normalisation every step moves the pixels by ``step_size`` on
average (before clipping), so the strength bounds the mean absolute change a
dream can make. ``sweep_presets`` varies it from subtle to extreme at a fixed
number of steps. Every dream also *measures* its size (L2 and L∞ distance
from its source), which is what the study reports.
"""

import ml_collections

from dreamjax.configs import common

PRESETS = ("subtle", "strong", "logit", "bn", "deep_subtle", "deep_strong")
DEFAULT_SWEEP = (0.05, 0.15, 0.5, 1.5, 4.0)
SWEEP_STEPS = 20  # steps of every sweep point; only step_size changes


def dream_config() -> ml_collections.ConfigDict:
  """The dream block with every field; presets change some of them."""
  c = ml_collections.ConfigDict()
  # What to ascend: mean | l2 | channel | neuron | logit (see dreamjax/dream/objectives.py).
  # 'mean' / 'l2' sum over `layers` (weighted); 'channel' / 'neuron' use layers[0].
  c.objective = "l2"
  c.layers = ("conv1",)     # activation names from models.layer_names(model)
  c.layer_weights = ()      # one weight per layer for 'mean' / 'l2'; () = all 1
  c.channel = 0             # channel ('channel'), or unit ('neuron') of layers[0]
  c.position = (-1, -1)     # (row, col) of the 'neuron' on a conv map; -1 = centre
  c.target_class = -1       # 'logit': this class for every image; -1 = each image's own label
  c.steps = 10              # ascent steps per octave (0 returns the input unchanged)
  c.step_size = 0.01        # pixels moved per step, in units of the normalised gradient
  c.normalize = "mean_abs"  # g / mean|g| (original DeepDream) | 'std': g / std(g) (TF tutorial)
  c.jitter = 0              # max random roll (pixels) before each step, undone after it
  c.octaves = 1             # scales processed, smallest first (1 = full size only)
  c.octave_scale = 1.4      # size ratio between neighbouring octaves (must be > 1)
  c.eps = 0.0               # project each dream onto an ε-ball around its source; 0 = off
  c.eps_norm = "linf"       # the ball's norm: linf | l2 (per image)
  c.tv_weight = 0.0         # total-variation prior (mean squared neighbour difference)
  c.l2_weight = 0.0         # image L2 prior (mean squared pixel)
  c.bn_weight = 0.0         # BatchNorm-statistics prior (DeepInversion); needs model.use_bn
  return c


def get_preset(name: str) -> ml_collections.ConfigDict:
  """The dream block of preset ``name`` (one of ``PRESETS``)."""
  c = dream_config()
  if name == "subtle":
    c.steps, c.step_size, c.jitter = 10, 0.005, 1       # strength 0.05
  elif name == "strong":
    c.steps, c.step_size, c.jitter = 20, 0.01, 2        # strength 0.6
    c.octaves, c.octave_scale = 3, 1.4
  elif name == "logit":
    c.objective, c.layers, c.target_class = "logit", ("logits",), -1
    c.steps, c.step_size = 20, 0.01                     # strength 0.2, capped by ε
    c.eps, c.eps_norm = 0.1, "linf"                     # the study's PGD budget
  elif name == "bn":
    c.steps, c.step_size, c.jitter = 20, 0.01, 2        # strength 0.6, as strong
    c.octaves, c.octave_scale = 3, 1.4
    c.bn_weight, c.tv_weight, c.l2_weight = 1.0, 0.05, 0.01
  elif name == "deep_subtle":
    c.layers = ("conv2",)
    c.steps, c.step_size, c.jitter = 10, 0.005, 1       # strength 0.05, as subtle
  elif name == "deep_strong":
    c.layers = ("conv3",)
    c.steps, c.step_size, c.jitter = 20, 0.01, 2        # strength 0.6, as strong
    c.octaves, c.octave_scale = 3, 1.4
  else:
    raise ValueError(f"unknown dream preset {name!r}; choose one of {', '.join(PRESETS)}")
  return c


def strength(c) -> float:
  """``octaves × steps × step_size``: see the module docstring."""
  return float(c.octaves * c.steps * c.step_size)


def with_steps(c, steps: int) -> ml_collections.ConfigDict:
  """``c`` with ``steps`` ascent steps per octave and the same :func:`strength`
  (``step_size`` scaled by old/new steps). Modifies and returns ``c``."""
  if int(steps) != steps or steps < 1:
    raise ValueError(f"dream steps={steps} must be an integer >= 1")
  if c.steps != steps:
    c.step_size = float(c.step_size) * c.steps / int(steps)
    c.steps = int(steps)
  return c


def sweep_presets(strengths=DEFAULT_SWEEP, steps: int = SWEEP_STEPS, layers=("conv1",)
                  ) -> list[tuple[float, ml_collections.ConfigDict]]:
  """Dream blocks from subtle to extreme: single-scale ``l2`` dreams on ``layers``
  (conv1, the small classifier's last conv), ``steps`` steps each,
  ``step_size = strength / steps``."""
  if int(steps) != steps or steps < 1:
    raise ValueError(f"sweep steps={steps} must be an integer >= 1")
  out = []
  for s in strengths:
    if s <= 0:
      raise ValueError(f"sweep strength {s} must be > 0")
    c = dream_config()
    c.layers = tuple(layers)
    c.steps, c.step_size, c.jitter = int(steps), float(s) / steps, 1
    out.append((float(s), c))
  return out


def get_config(preset: str = "subtle") -> ml_collections.ConfigDict:
  """The whole experiment: data, classifier, dream block, outputs."""
  c = common.data_config()
  c.model = common.model_config("small")
  c.train = common.train_config()
  c.train.steps = 500          # classifier steps when no classifier_dir is given
  c.train.eval_every = 0
  c.classifier_dir = ""        # workdir of experiments/train_classifier.py; '' = train here
  c.split = "labeled"          # which images to dream: labeled | val | test (labels needed)
  c.max_images = -1            # dream only the first N of the split; -1 = all
  c.chunk_size = 256           # images per jitted call (bounds memory)
  c.grid_images = 8            # sources shown in grid.png (0 = no grid)
  c.grid_presets = ()          # more presets dreamed on the grid's sources only, one column each
  c.zoom_frames = 8            # frames of the zoom strip; 0 = none
  c.zoom_scale = 1.1           # zoom per frame (> 1)
  c.zoom_gif = False           # also write zoom.gif
  c.preset = preset
  if preset == "tiny":
    c.num_labeled, c.val_size = 100, 100
    c.model = common.model_config("tiny")
    c.train.steps, c.train.batch_size, c.train.warmup_steps = 30, 32, 5
    c.train.log_every, c.train.eval_every = 10, 0
    c.dream = get_preset("subtle")
    c.dream.steps = 3
    c.chunk_size = 64
    c.grid_images, c.zoom_frames = 4, 3
  else:
    c.dream = get_preset(preset)
    c.model.use_bn = preset == "bn"  # the BatchNorm prior needs BatchNorm layers
  return c
