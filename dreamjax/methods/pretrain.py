"""Representation learning on the unlabeled pool, for claim C7 and the deep dreamer.

Two ways to give the classifier better first layers than a random init:

* autoencoder pretraining: the classifier's own conv trunk encodes an image,
  a small transposed-conv decoder reconstructs it from the trunk's last
  feature map;
* a pretext task ("a different but similar task"): the classifier, with a
  4-way head, predicts which of 0/90/180/270° an image was rotated by
  (Gidaris et al. 2018).

Both return *trunk variables*: the ``Conv_{i}`` (and ``BatchNorm_{i}``)
entries of a :class:`dreamjax.training.models.CNN` built from the same model config.
:func:`init_fn` turns them into ``key -> variables`` for ``train.fit``: a fresh
classifier whose conv layers are the pretrained ones and whose dense layers
are new, then fine-tuned on the label budget.

The deep dreamer (:mod:`dreamjax.methods.dreamer`) is pretrained here too, as a whole
network of any model config: by the rotation pretext
(``train_rotation(..., whole=True)``) or contrastively (:func:`train_contrastive`,
SimCLR). Every trainer here takes images alone, never labels.
"""

import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dreamjax.methods import augment
from dreamjax.plumbing import checkpoint
from dreamjax.training import models
from dreamjax.plumbing import sharding
from dreamjax.training import train
from dreamjax.errors import CheckpointError, ConfigError
from dreamjax.generators import common

KINDS = ("ae", "pretext")


def trunk_of(variables) -> dict[str, Any]:
  """The conv trunk (``Conv_i``, ``BatchNorm_i``) of a classifier's variables."""
  def is_trunk(name):
    return name.startswith("Conv_") or name.startswith("BatchNorm_")
  return {coll: {k: v for k, v in tree.items() if is_trunk(k)}
          for coll, tree in variables.items() if coll in ("params", "batch_stats")}


def _check_trunk_shapes(fresh, pretrained, source: str) -> None:
  want = jax.tree.map(lambda x: tuple(x.shape), trunk_of(fresh))
  got = jax.tree.map(lambda x: tuple(np.shape(x)), pretrained)
  if want != got:
    raise ConfigError(f"{source}: the pretrained trunk does not fit this classifier (pretrained"
                      f" {got}, classifier {want}); use the same model config (conv_features,"
                      " use_bn) for pretraining and fine-tuning.")


def init_fn(model, image_shape, pretrained) -> Callable[[jax.Array], Any]:
  """``key -> variables``: a fresh init of ``model`` with the pretrained trunk in it."""
  image_shape = tuple(image_shape)
  _check_trunk_shapes(jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0),
                                                                   image_shape)),
                      pretrained, "init_from")

  def init(key):
    variables = models.init_variables(model, key, image_shape)
    return {coll: {**tree, **pretrained.get(coll, {})} for coll, tree in variables.items()}

  return init


# ---------------------------------------------------------------- autoencoder

class TrunkDecoder(nn.Module):
  """Mirrors the trunk: ×2 upsampling + conv where it pooled, a conv elsewhere."""
  image_shape: tuple[int, int, int]
  conv_features: tuple[int, ...]
  pool: tuple[bool, ...]

  @nn.compact
  def __call__(self, feature_map: jax.Array) -> jax.Array:
    x = feature_map
    for features, pooled in reversed(list(zip(self.conv_features, self.pool))):
      x = nn.relu(nn.Conv(features, (3, 3), padding="SAME")(common.upsample_2x(x) if pooled else x))
    height, width, channels = self.image_shape
    return nn.Conv(channels, (3, 3), padding="SAME")(x)[:, :height, :width, :]


def _trunk_features(model, variables, images, train_mode: bool):
  """The trunk's output (last conv block, pooled if it pools) and new BN stats."""
  _, state = model.apply(variables, images, train=train_mode,
                         mutable=["intermediates", "batch_stats"])
  last = len(model.conv_features) - 1
  x = state["intermediates"][f"conv{last}"][0]
  if model.pool[last]:
    x = models.max_pool_2x2(x)
  return x, state.get("batch_stats", {})


def make_autoencoder_step(model, decoder: TrunkDecoder, tx, batch_size: int,
                          mesh: jax.sharding.Mesh | None = None) -> Callable:
  """``step(state, images, _, key) -> (state, metrics)``; pure, jittable.

  The sampled batch is split by rows over ``mesh`` (default: every device);
  with BatchNorm the batch statistics then span every device's rows (XLA
  reduces them across devices), as on one device.
  """
  mesh = sharding.default(mesh)

  def loss_fn(params, state, x):
    cnn_vars = {"params": params["cnn"]}
    if state["batch_stats"]:
      cnn_vars["batch_stats"] = state["batch_stats"]
    feature_map, new_stats = _trunk_features(model, cnn_vars, x, train_mode=True)
    logits = decoder.apply({"params": params["decoder"]}, feature_map)
    loss = optax.sigmoid_binary_cross_entropy(logits, x).sum((1, 2, 3)).mean()
    return loss, new_stats

  def step(state, images, labels, key):
    del labels  # The pool has none.
    x, = sharding.sample_batch(mesh, key, batch_size, images.shape[0], images)
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state, x)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
            "batch_stats": new_stats}, {"loss": loss}

  return step


def _validate(cfg, pool_images, image_shape) -> None:
  for name, value in (("steps", cfg.steps), ("batch_size", cfg.batch_size),
                      ("log_every", cfg.log_every)):
    if value < 1:
      raise ConfigError(f"{name}={value} is invalid: must be >= 1.")
  if cfg.learning_rate <= 0:
    raise ConfigError(f"learning_rate={cfg.learning_rate} is invalid: must be > 0.")
  if np.ndim(pool_images) != 4 or len(pool_images) == 0:
    raise ConfigError(f"pool images have shape {np.shape(pool_images)}; expected a non-empty"
                      " [N, H, W, C] (is the pool empty because num_labeled=-1?).")
  if tuple(np.shape(pool_images)[1:]) != tuple(image_shape):
    raise ConfigError(f"pool images are {np.shape(pool_images)[1:]}, image_shape is {image_shape}.")


def train_autoencoder(cfg, pool_images, key: jax.Array, model_cfg, num_classes: int,
                      image_shape, *, progress=None, return_history: bool = False,
                      mesh: jax.sharding.Mesh | None = None, metrics_dir: str | None = None):
  """Trains the classifier's trunk as an autoencoder's encoder on the pool.

  Uses ``cfg.steps``, ``cfg.batch_size``, ``cfg.learning_rate`` (Adam) and
  ``cfg.log_every``. Returns the trunk variables (and the loss history when
  ``return_history``). Each step's batch is split by rows over ``mesh``
  (default: every device) and the trunk is replicated on it;
  ``cfg.batch_size`` must be a multiple of its size (else ConfigError).
  """
  _validate(cfg, pool_images, image_shape)
  mesh = sharding.default(mesh)
  sharding.check_divisible(mesh, int(cfg.batch_size))
  image_shape = tuple(image_shape)
  model = models.make_model(model_cfg, num_classes)
  decoder = TrunkDecoder(image_shape, tuple(model.conv_features), tuple(model.pool))
  k_cnn, k_dec, k_train = jax.random.split(key, 3)
  cnn_vars = models.init_variables(model, k_cnn, image_shape)
  feature_map, _ = jax.eval_shape(lambda v: _trunk_features(model, v, jnp.zeros((1, *image_shape)),
                                                            False), cnn_vars)
  dec_params = decoder.init(k_dec, jnp.zeros(feature_map.shape))["params"]
  params = {"cnn": cnn_vars["params"], "decoder": dec_params}
  tx = optax.adam(cfg.learning_rate)
  state = {"params": params, "opt_state": tx.init(params),
           "batch_stats": cnn_vars.get("batch_stats", {})}
  step = common.compile_step(make_autoencoder_step(model, decoder, tx, int(cfg.batch_size),
                                                   mesh), mesh)
  state, history = common.run_steps(step, state, pool_images, None, k_train, steps=int(cfg.steps),
                                    log_every=int(cfg.log_every), desc="autoencoder",
                                    progress=progress, mesh=mesh, metrics_dir=metrics_dir)
  variables = {"params": state["params"]["cnn"]}
  if state["batch_stats"]:
    variables["batch_stats"] = state["batch_stats"]
  trunk = trunk_of(variables)
  return (trunk, history) if return_history else trunk


# ------------------------------------------------------------------- rotation

def rotate_batch(images_NHWC: jax.Array, turns: jax.Array) -> jax.Array:
  """Rotates image ``i`` by ``turns[i]`` × 90° (square images)."""
  all_turns = jnp.stack([jnp.rot90(images_NHWC, k, axes=(1, 2)) for k in range(4)])
  return jnp.take_along_axis(all_turns, turns[None, :, None, None, None], axis=0)[0]


def rotation_transform(state, images, labels, key):
  """A ``train.BatchTransform``: random rotations, labelled by their quarter turns."""
  del state, labels
  turns = jax.random.randint(key, (images.shape[0],), 0, 4)
  return rotate_batch(images, turns), turns


def _pretext_train_config(cfg) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      steps=int(cfg.steps), batch_size=int(cfg.batch_size), learning_rate=float(cfg.learning_rate),
      weight_decay=1e-4, warmup_steps=min(100, int(cfg.steps) // 10), label_smoothing=0.0,
      log_every=int(cfg.log_every), eval_every=0, checkpoint_every=0))


def train_rotation(cfg, pool_images, key: jax.Array, model_cfg, image_shape, *,
                   progress=None, return_history: bool = False,
                   mesh: jax.sharding.Mesh | None = None, metrics_dir: str | None = None,
                   whole: bool = False):
  """Trains a CNN of ``model_cfg`` (4-way head) to predict rotations of pool images.

  Returns the trunk variables, or with ``whole`` every variable of the network
  (the deep dreamer dreams through all of it), and the history when
  ``return_history``. Only images are taken: the targets are the rotations
  drawn inside the step. Trains with :func:`dreamjax.training.train.fit` over ``mesh``
  (default: every device); ``cfg.batch_size`` must be a multiple of its size.
  """
  _validate(cfg, pool_images, image_shape)
  if image_shape[0] != image_shape[1]:
    raise ConfigError(f"model=pretext rotates by 90°, which needs square images; these are"
                      f" {image_shape[0]}×{image_shape[1]}.")
  mesh = sharding.default(mesh)
  sharding.check_divisible(mesh, int(cfg.batch_size))  # names cfg's field, before compute
  model = models.make_model(model_cfg, 4)
  seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
  result = train.fit(model, _pretext_train_config(cfg), np.asarray(pool_images, np.float32),
                     np.zeros((len(pool_images),), np.int32), seeds=[seed],
                     image_shape=tuple(image_shape), batch_transform=rotation_transform,
                     desc="rotation pretext", progress=progress, mesh=mesh,
                     metrics_dir=metrics_dir)
  variables = train.unstack(result.state.variables, 0)
  trunk = variables if whole else trunk_of(variables)
  history = [{"step": r["step"], "loss": r["loss"][0], "accuracy": r["accuracy"][0]}
             for r in result.history]
  return (trunk, history) if return_history else trunk


# ---------------------------------------------------------------- contrastive

def nt_xent(z: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """SimCLR's loss of ``z`` [2B, D], rows ``i`` and ``i + B`` two views of one image.

  Returns (loss, accuracy): the mean cross-entropy of picking each row's
  partner among the other 2B - 1 rows by cosine similarity / ``temperature``,
  and how often the most similar row is the partner.
  """
  z = z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-8)
  n = z.shape[0]
  sim = (z @ z.T) / temperature - 1e9 * jnp.eye(n, dtype=z.dtype)  # never oneself
  partner = (jnp.arange(n) + n // 2) % n
  loss = optax.softmax_cross_entropy_with_integer_labels(sim, partner).mean()
  return loss, jnp.mean(jnp.argmax(sim, -1) == partner)


def make_contrastive_step(model, tx, batch_size: int, augment_fn, temperature: float,
                          mesh: jax.sharding.Mesh | None = None) -> Callable:
  """``step(state, images, _, key) -> (state, metrics)``: two classical views of each
  image of a sampled batch pulled together, every other image pushed away."""
  mesh = sharding.default(mesh)

  def loss_fn(params, batch_stats, views):
    variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
    z, updates = model.apply(variables, views, train=True, mutable=["batch_stats"])
    loss, accuracy = nt_xent(z, temperature)
    return loss, (accuracy, updates.get("batch_stats", batch_stats))

  def step(state, images, labels, key):
    del labels  # The pool has none.
    k_batch, k_a, k_b = jax.random.split(key, 3)
    x, = sharding.sample_batch(mesh, k_batch, batch_size, images.shape[0], images)
    views = sharding.constrain_rows(mesh, jnp.concatenate([augment_fn(k_a, x),
                                                           augment_fn(k_b, x)]))
    (loss, (accuracy, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state["batch_stats"], views)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
            "batch_stats": new_stats}, {"loss": loss, "accuracy": accuracy}

  return step


def train_contrastive(cfg, pool_images, key: jax.Array, model_cfg, image_shape, *,
                      progress=None, return_history: bool = False,
                      mesh: jax.sharding.Mesh | None = None, metrics_dir: str | None = None):
  """Trains a CNN of ``model_cfg`` with SimCLR's objective on pool images (Chen et al. 2020).

  The CNN's dense layers are the projection head and its output (of
  ``cfg.projection_dim``) is what the loss compares; the views are
  :func:`dreamjax.methods.augment.classical_fn` of ``cfg.augment``, at temperature
  ``cfg.temperature``. Images only, as :func:`train_rotation`. Returns every
  variable of the network (and the history when ``return_history``).
  """
  _validate(cfg, pool_images, image_shape)
  if not cfg.temperature > 0:
    raise ConfigError(f"temperature={cfg.temperature} is invalid: must be > 0.")
  augment.validate_classical(cfg.augment, image_shape, prefix="augment")
  mesh = sharding.default(mesh)
  sharding.check_divisible(mesh, int(cfg.batch_size))
  model = models.make_model(model_cfg, int(cfg.projection_dim))
  k_init, k_train = jax.random.split(key)
  variables = models.init_variables(model, k_init, tuple(image_shape))
  tx = train.make_optimizer(_pretext_train_config(cfg))
  state = {"params": variables["params"], "opt_state": tx.init(variables["params"]),
           "batch_stats": variables.get("batch_stats", {})}
  step = common.compile_step(make_contrastive_step(
      model, tx, int(cfg.batch_size), augment.classical_fn(cfg.augment),
      float(cfg.temperature), mesh), mesh)
  state, history = common.run_steps(step, state, np.asarray(pool_images, np.float32), None,
                                    k_train, steps=int(cfg.steps), log_every=int(cfg.log_every),
                                    desc="contrastive", progress=progress, mesh=mesh,
                                    metrics_dir=metrics_dir)
  variables = {"params": state["params"]}
  if state["batch_stats"]:
    variables["batch_stats"] = state["batch_stats"]
  variables = jax.device_get(variables)
  return (variables, history) if return_history else variables


# ---------------------------------------------------------------- checkpoints

def save(path: str, kind: str, trunk, model_cfg, image_shape, meta: dict | None = None) -> None:
  """Writes pretrained trunk variables with what they fit (``kind``: ae | pretext)."""
  checkpoint.save(path, trunk, {"kind": kind, "model": model_cfg.to_dict(),
                                "image_shape": list(image_shape), **(meta or {})})


def _checkpoint_folder(path: str) -> str:
  nested = os.path.join(path, "checkpoint")
  return nested if checkpoint.exists(nested) else path


def load(path: str, model, image_shape):
  """Trunk variables from ``path`` (a run's workdir or its ``checkpoint`` folder)."""
  folder = _checkpoint_folder(path)
  if not checkpoint.exists(folder):
    raise ConfigError(f"init_from={path!r} holds no checkpoint; point it at the workdir of"
                      " experiments/train_generator.py --config.model=ae (or pretext).")
  meta = checkpoint.read_meta(folder)
  if meta.get("kind") not in KINDS:
    raise ConfigError(f"init_from={path!r} is a {meta.get('kind')!r} checkpoint; it must come"
                      " from --config.model=ae or --config.model=pretext.")
  try:
    trunk, _ = checkpoint.restore_from_init(folder, lambda: trunk_of(models.init_variables(
        model, jax.random.key(0), tuple(image_shape))))
  except CheckpointError as e:
    raise ConfigError(f"init_from={path!r}: its trunk (model {meta.get('model')}) does not fit"
                      f" this classifier; pretrain with the same model config. ({e})") from None
  return trunk


def init_fn_from_checkpoint(path: str, model, image_shape) -> Callable[[jax.Array], Any]:
  """``init_fn`` for ``train.fit`` from a pretraining run's checkpoint."""
  return init_fn(model, image_shape, load(path, model, image_shape))
