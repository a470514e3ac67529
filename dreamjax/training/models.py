"""The classifier: a small Flax (Linen) CNN with named activations.

Layer names are stable and public because Deep Dream objectives and the
BatchNorm prior refer to them: ``conv0``, ``conv1``, ... (after ReLU),
``dense0``, ... (after ReLU) and ``logits``. With ``use_bn`` each conv has a
BatchNorm whose *input* is recorded as ``bn{i}`` (collection ``bn_inputs``),
for DeepInversion's statistics prior; its running statistics live in
``variables["batch_stats"][f"BatchNorm_{i}"]``. Parameter modules are named
``Conv_{i}``, ``BatchNorm_{i}``, ``Dense_{i}`` and ``Head``.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamjax.errors import ConfigError


def max_pool_2x2(x_NHWC: jax.Array) -> jax.Array:
  """2×2/2 max pool with 'SAME' padding, written as reshape + max.

  Same values as ``nn.max_pool(x, (2, 2), (2, 2), 'SAME')``, but XLA's gradient
  of this form is a cheap select instead of a scatter (see benchmarks/README.md).
  """
  n, h, w, c = x_NHWC.shape
  ph, pw = h % 2, w % 2
  if ph or pw:
    x_NHWC = jnp.pad(x_NHWC, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
  h2, w2 = (h + ph) // 2, (w + pw) // 2
  return x_NHWC.reshape(n, h2, 2, w2, 2, c).max(axis=(2, 4))


@jax.custom_vjp
def add_channel_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """``y + bias`` over the last axis, whose bias gradient is a matrix product.

  Autodiff's gradient of the bias is a sum over every other axis, which
  XLA:CPU runs slower than ``ones @ g.reshape(-1, C)`` on a train step's
  activations (measured in benchmarks/README.md). ``bias`` must have ``y``'s dtype.
  """
  return y + bias


def _add_channel_bias_fwd(y, bias):
  return y + bias, None


def _add_channel_bias_bwd(_, g):
  c = g.shape[-1]
  return g, jnp.ones((g.size // c,), g.dtype) @ g.reshape(-1, c)


add_channel_bias.defvjp(_add_channel_bias_fwd, _add_channel_bias_bwd)


def conv3x3_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3×3 'SAME' convolution, stride 1, NHWC input and HWIO kernel: XLA's conv, the one
  :class:`Conv3x3` runs (``benchmarks/conv_forms.py --step`` times others in its place)."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv3x3(nn.Module):
  """``nn.Conv(features, (3, 3), padding='SAME')`` with the same parameters
  (names, shapes, initialisers, and so the same initial values), whose bias
  gradient goes through :func:`add_channel_bias`."""
  features: int
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    y = conv3x3_xla(x, kernel)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
      y = add_channel_bias(y, bias.astype(self.dtype))
    return y


class CNN(nn.Module):
  """conv3×3 (+BN) + ReLU (+2×2 max-pool) blocks, then dense layers."""
  num_classes: int = 10
  conv_features: Sequence[int] = (32, 64)
  pool: Sequence[bool] = (True, True)
  dense_features: Sequence[int] = (128,)
  use_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_NHWC: jax.Array, train: bool = False) -> jax.Array:
    x = x_NHWC.astype(self.dtype)
    for i, (features, pool) in enumerate(zip(self.conv_features, self.pool)):
      x = Conv3x3(features, use_bias=not self.use_bn, dtype=self.dtype, name=f"Conv_{i}")(x)
      if self.use_bn:
        self.sow("bn_inputs", f"bn{i}", x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                         name=f"BatchNorm_{i}")(x)
      x = nn.relu(x)
      self.sow("intermediates", f"conv{i}", x)
      if pool:
        x = max_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    for i, features in enumerate(self.dense_features):
      x = nn.relu(nn.Dense(features, dtype=self.dtype, name=f"Dense_{i}")(x))
      self.sow("intermediates", f"dense{i}", x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="Head")(x)
    self.sow("intermediates", "logits", logits)
    return logits.astype(jnp.float32)


def check_config(model_config, field: str = "model") -> None:
  """Refuses a model config no :class:`CNN` can be made of, naming ``field`` (the
  config block it is, e.g. ``oracle.model``) and what it must be."""
  cfg = model_config
  conv = tuple(cfg.conv_features)
  pool = tuple(cfg.pool)
  if not conv or any(int(f) < 1 for f in conv):
    raise ConfigError(f"{field}.conv_features={conv} must be a non-empty list of positive"
                      " widths.")
  if len(pool) != len(conv):
    raise ConfigError(f"{field}.pool={pool} must have one entry per conv layer ({len(conv)}).")
  if any(int(f) < 1 for f in cfg.dense_features):
    raise ConfigError(f"{field}.dense_features={tuple(cfg.dense_features)} must be positive.")
  try:
    jnp.dtype(cfg.get("dtype", "float32"))
  except TypeError:
    raise ConfigError(f"{field}.dtype={cfg.get('dtype')!r} is not a dtype; use float32 or"
                      " bfloat16.") from None


def make_model(model_config, num_classes: int) -> CNN:
  cfg = model_config
  check_config(cfg)
  return CNN(num_classes=num_classes, conv_features=tuple(cfg.conv_features),
             pool=tuple(cfg.pool), dense_features=tuple(cfg.dense_features),
             use_bn=bool(cfg.use_bn), dtype=jnp.dtype(cfg.get("dtype", "float32")))


def layer_names(model: CNN) -> tuple[str, ...]:
  """The activation names objectives may refer to, input side first."""
  return (tuple(f"conv{i}" for i in range(len(model.conv_features)))
          + tuple(f"dense{i}" for i in range(len(model.dense_features))) + ("logits",))


def apply_with_activations(model: CNN, variables, images_NHWC: jax.Array
                           ) -> tuple[jax.Array, dict[str, jax.Array], dict[str, jax.Array]]:
  """Pure inference pass: (logits, activations by layer name, BN inputs by name).

  BatchNorm uses its running statistics (``train=False``), so the pass is a
  function of ``variables`` and ``images`` alone and can be differentiated
  with respect to the images.
  """
  logits, state = model.apply(variables, images_NHWC, train=False,
                              mutable=["intermediates", "bn_inputs"])
  acts = {k: v[0] for k, v in state["intermediates"].items()}
  bn_inputs = {k: v[0] for k, v in state.get("bn_inputs", {}).items()}
  return logits, acts, bn_inputs


def init_variables(model: CNN, key: jax.Array, image_shape: tuple[int, int, int]):
  """Parameters (and BatchNorm statistics) only: sown activations are dropped."""
  variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
