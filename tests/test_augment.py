import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import synthetic_images, on_mesh
from dreamjax.methods import augment
from dreamjax.training import models, train
from dreamjax.configs import classifier as classifier_config
from dreamjax.configs import common
from dreamjax.errors import ConfigError


def _images(n=16):
  x, y = synthetic_images(n, seed=5)
  return (x.astype(np.float32) / 255.0)[..., None], y.astype(np.int32)


def _only(**strengths):
  """A classical config with every transform off except ``strengths``."""
  cfg = augment.classical_config()
  cfg.translate, cfg.rotate_degrees, cfg.flip, cfg.brightness, cfg.contrast = 0, 0.0, False, 0.0, 0.0
  cfg.update(strengths)
  return cfg


@pytest.mark.parametrize("make", [
    lambda: augment.classical_fn(augment.classical_config()),
    lambda: augment.classical_fn(_only(flip=True, translate=3, rotate_degrees=30.0,
                                       brightness=0.5, contrast=0.5)),
    lambda: augment.noise_fn(augment.noise_config()),
    lambda: augment.shift_fn(2),                            # FixMatch's weak augmentation
    lambda: augment.strong_fn(augment.strong_config()),     # and its strong one
])
def test_transforms_keep_shape_and_range_and_are_deterministic_per_key(make):
  chex.clear_trace_counter()
  x, _ = _images()
  fn = jax.jit(chex.assert_max_traces(make(), n=1))
  a = fn(jax.random.key(0), x)
  b = fn(jax.random.key(0), x)
  c = fn(jax.random.key(1), x)
  chex.assert_shape(a, x.shape)
  chex.assert_tree_all_finite(a)
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c) and not np.array_equal(a, x)


def test_translation_is_a_shift_with_black_borders():
  x, _ = _images(8)
  out = np.asarray(augment.classical_fn(_only(translate=2))(jax.random.key(3), x))
  for img, res in zip(x, out):
    padded = np.pad(img, ((2, 2), (2, 2), (0, 0)))
    shifts = [(dy, dx) for dy in range(5) for dx in range(5)
              if np.array_equal(padded[dy:dy + 28, dx:dx + 28], res)]
    assert shifts, "output is no shift of the input"


def test_flip_gives_the_image_or_its_mirror_and_is_off_by_default():
  assert augment.classical_config().flip is False  # Fashion-MNIST: left/right carries meaning
  x, _ = _images(16)
  out = np.asarray(augment.classical_fn(_only(flip=True))(jax.random.key(4), x))
  same = [np.array_equal(o, i) for o, i in zip(out, x)]
  mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
  assert all(s or m for s, m in zip(same, mirrored))
  assert any(mirrored) and any(same)


def test_noise_has_the_configured_std():
  cfg = augment.noise_config()
  cfg.std = 0.05
  x = np.full((64, 28, 28, 1), 0.5, np.float32)  # far from the clip at 0 and 1
  out = np.asarray(augment.noise_fn(cfg)(jax.random.key(0), x))
  assert abs((out - x).std() - 0.05) < 0.003 and abs((out - x).mean()) < 0.003


def test_offline_copies_labels_and_positions():
  x, y = _images(10)
  fn = augment.noise_fn(augment.noise_config())
  out, labels, pos = augment.offline(x, y, jax.random.key(0), fn, copies=3, chunk_size=4)
  chex.assert_shape(out, (30, 28, 28, 1))
  np.testing.assert_array_equal(pos, np.tile(np.arange(10), 3))
  np.testing.assert_array_equal(labels, y[pos])
  assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
  assert not np.array_equal(out[:10], out[10:20])  # each copy draws anew
  again, _, _ = augment.offline(x, y, jax.random.key(0), fn, copies=3, chunk_size=4)
  np.testing.assert_array_equal(out, again)
  assert np.all(np.abs(out[:10] - x).reshape(10, -1).max(1) > 0)  # padded chunk too


@pytest.mark.parametrize("choice", ["classical", "noise", "fgsm", "pgd"])
def test_batch_transform_in_the_train_step_does_not_retrace(choice):
  chex.clear_trace_counter()
  config = classifier_config.get_config("tiny")
  config.augment = choice
  config.attack.steps = 2
  model = models.make_model(common.model_config("tiny"), 10)
  transform = augment.batch_transform(config, model)
  x, y = _images(32)
  state = train.create_state(model, optax.adam(1e-3),
                             models.init_variables(model, jax.random.key(0), (28, 28, 1)))
  step = jax.jit(train.make_train_step(model, 8, batch_transform=chex.assert_max_traces(
      transform, n=1)))
  state, x, y = on_mesh((state, jnp.asarray(x), jnp.asarray(y)))
  for i in range(3):
    state, metrics = step(state, x, y, 32, jax.random.key(i))
  chex.assert_tree_all_finite(metrics)


def test_none_is_no_transform():
  config = classifier_config.get_config("tiny")
  assert config.augment == "none"
  assert augment.batch_transform(config, None) is None


@pytest.mark.parametrize("field,value,name", [
    ("augment", "mixup", "augment='mixup'"),
    ("classical.rotate_degrees", -5.0, "classical.rotate_degrees=-5.0"),
    ("classical.translate", -1, "classical.translate=-1"),
    ("classical.contrast", 1.0, "classical.contrast=1.0"),
    ("noise.std", -0.1, "noise.std=-0.1"),
    ("attack.eps", -0.1, "attack.eps=-0.1"),
    ("attack.steps", 0, "attack.steps=0"),
    ("attack.norm", "l1", "attack.norm='l1'"),
    ("attack.fraction", 1.5, "attack.fraction=1.5"),
])
def test_bad_settings_are_refused(field, value, name):
  config = classifier_config.get_config("tiny")
  block = field.split(".")[0]
  config.augment = {"classical": "classical", "noise": "noise", "attack": "pgd"}.get(block, value)
  if "." in field:
    sub, key = field.split(".")
    config[sub][key] = value
  with pytest.raises(ConfigError, match=name):
    augment.batch_transform(config, None)  # no model needed: refused before any compute


def _study_online_transforms(model):
  """The four online arms' transforms, built as the study builds them (the deep dreamer
  a fresh one of the tiny study's config: what matters here is that it is fixed)."""
  from dreamjax.methods import dreamer  # pylint: disable=g-import-not-at-top
  from dreamjax.configs import study as study_configs  # pylint: disable=g-import-not-at-top
  from dreamjax.dream import online  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import generate  # pylint: disable=g-import-not-at-top
  cfg = study_configs.get_config("tiny")
  deep = dreamer.model_of(cfg.pool_dreamer)
  return {
      "deep_dream_online": online.batch_transform(
          deep, generate.dream_config(cfg, "deep_dream_online"), fraction=cfg.online_fraction,
          variables=models.init_variables(deep, jax.random.key(7), (28, 28, 1))),
      "classical_online": augment.online_transform(
          augment.classical_fn(augment.classical_config()), cfg.online_fraction),
      "noise_online": augment.online_transform(augment.noise_fn(augment.noise_config()),
                                               cfg.online_fraction),
      "dream_online": online.batch_transform(model, generate.dream_config(cfg, "dream_subtle"),
                                             fraction=cfg.online_fraction)}


@pytest.mark.parametrize("arm", ["classical_online", "noise_online", "dream_online",
                                 "deep_dream_online"])
def test_online_arms_compile_once_and_transform_anew_every_step(arm):
  """Inside the jitted step an online transform is traced once, and each step changes
  its part of the batch anew (a new draw, a dream of the model as it is now, or a
  fresh jitter of the fixed deep dreamer's dream)."""
  chex.clear_trace_counter()
  model = models.make_model(common.model_config("tiny"), 10)
  transform = _study_online_transforms(model)[arm]
  x, y = _images(16)
  state = train.create_state(model, optax.adam(1e-2),
                             models.init_variables(model, jax.random.key(0), (28, 28, 1)))
  step = jax.jit(train.make_train_step(model, 8, batch_transform=chex.assert_max_traces(
      transform, n=1)))
  seen = jax.jit(transform)  # the same function on its own, to look at what a step sees
  state, xs, ys = on_mesh((state, jnp.asarray(x), jnp.asarray(y)))
  outs, initial = [], state
  for i in range(3):
    out, labels = seen(state, xs, ys, jax.random.key(i))
    outs.append(np.asarray(out))
    if arm == "deep_dream_online" and i:  # through the fixed dreamer, not the classifier
      np.testing.assert_array_equal(np.asarray(seen(initial, xs, ys, jax.random.key(i))[0]),
                                    outs[-1])
    np.testing.assert_array_equal(np.asarray(labels), y)  # labels are kept
    state, metrics = step(state, xs, ys, 16, jax.random.key(i))
  chex.assert_tree_all_finite(metrics)
  n = int(round(0.5 * 16))
  for a, b in zip(outs, outs[1:]):
    assert not np.allclose(a[:n], b[:n])  # the transformed part changes every step
  for a in outs:
    assert not np.allclose(a[:n], x[:n])
    np.testing.assert_array_equal(a[n:], x[n:])  # the rest of the batch is left as drawn


def test_strong_augmentation_cuts_out_a_grey_square():
  """With only the cutout on, each image keeps its pixels but for one square (clipped at
  the border) of the fill value."""
  cfg = augment.strong_config()
  cfg.translate, cfg.rotate_degrees, cfg.brightness, cfg.contrast, cfg.noise_std = 0, 0.0, 0.0, 0.0, 0.0
  x, _ = _images(16)
  out = np.asarray(augment.strong_fn(cfg)(jax.random.key(2), x))
  changed = out != x
  np.testing.assert_array_equal(out[changed], cfg.cutout_fill)
  for mask in changed[..., 0]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert len(rows) <= cfg.cutout and len(cols) <= cfg.cutout
  sizes = (out == cfg.cutout_fill).reshape(16, -1).sum(1)
  assert sizes.max() == cfg.cutout ** 2  # a square wholly inside the image somewhere
