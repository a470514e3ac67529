import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamjax import dream, figures
from dreamjax.plumbing import sharding
from dreamjax.training import models, train
from dreamjax.configs import classifier
from dreamjax.configs import dream as dream_configs
from dreamjax.errors import ConfigError
from conftest import synthetic_images


def _train(use_bn: bool, steps: int):
  cfg = classifier.get_config("tiny")
  cfg.model.use_bn = use_bn
  cfg.train.steps, cfg.train.warmup_steps, cfg.train.eval_every = steps, 5, 0
  x, y = synthetic_images(200)
  x = x[..., None] / np.float32(255)
  model = models.make_model(cfg.model, 10)
  res = train.fit(model, cfg.train, x, y.astype(np.int32), seeds=[0])
  return model, train.unstack(res.state.variables, 0), x[:48], y[:48].astype(np.int32)


@pytest.fixture(scope="module")
def trained():
  return _train(use_bn=False, steps=100)


@pytest.fixture(scope="module")
def trained_bn():
  return _train(use_bn=True, steps=60)


def _cfg(**changes):
  c = dream_configs.dream_config()
  for k, v in changes.items():
    c[k] = v
  return c


def _dream(model, variables, x, y, cfg, seed=0, chunk_size=256):
  return dream.dream_dataset(model, variables, x, y, cfg, jax.random.key(seed),
                             chunk_size=chunk_size, progress=lambda _: None)


def test_objective_increases_with_steps(trained):
  model, variables, x, y = trained
  gains = [_dream(model, variables, x, y, _cfg(steps=s, jitter=1)).objective_gain.mean()
           for s in (1, 4, 12)]
  assert 0 < gains[0] < gains[1] < gains[2], gains


def test_zero_steps_returns_input(trained):
  model, variables, x, y = trained
  res = _dream(model, variables, x, y, _cfg(steps=0, octaves=3, jitter=2))
  np.testing.assert_array_equal(res.images, x)
  assert np.all(res.l2 == 0) and np.all(res.objective_gain == 0)


def test_shape_range_and_reported_distances(trained):
  model, variables, x, y = trained
  res = _dream(model, variables, x, y, _cfg(steps=4, step_size=0.1, octaves=2, jitter=2))
  chex.assert_shape(res.images, x.shape)
  chex.assert_tree_all_finite(res.images)
  assert res.images.dtype == np.float32
  assert res.images.min() >= 0 and res.images.max() <= 1
  delta = (res.images - x).reshape(len(x), -1)
  np.testing.assert_allclose(res.l2, np.linalg.norm(delta, axis=1), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(res.linf, np.abs(delta).max(axis=1), rtol=1e-5)
  assert res.linf.min() > 0.05  # a step of 0.1 moves the image
  assert res.image_steps_per_s > 0 and res.seconds > 0


def test_jitter_roll_is_undone(trained):
  model, variables, x, y = trained
  # Steps far too small to matter: only an un-undone roll could move the image.
  res = _dream(model, variables, x, y, _cfg(steps=5, step_size=1e-6, jitter=4))
  np.testing.assert_allclose(res.images, x, atol=1e-4)
  # And a neuron's dream stays near its receptive field in the source's frame.
  _, acts, _ = models.apply_with_activations(model, variables, jnp.asarray(x[:4]))
  live_channel = int(np.asarray(acts["conv0"])[:, 6, 20].sum(0).argmax())  # nonzero gradient
  spec = dream.from_config(_cfg(objective="neuron", layers=("conv0",), channel=live_channel,
                                position=(6, 20), steps=6, step_size=0.05, jitter=3), model)
  out = dream.dream_batch(model, spec, variables, x[:4], y[:4], np.ones(4, bool),
                          jax.random.key(0))
  moved = np.abs(np.asarray(out["images"]) - x[:4]).max(axis=(0, 3)) > 1e-6
  rows, cols = np.nonzero(moved)
  assert moved.any()
  assert rows.min() >= 6 - 4 and rows.max() <= 6 + 4, (rows.min(), rows.max())
  assert cols.min() >= 20 - 4 and cols.max() <= 20 + 4, (cols.min(), cols.max())


def test_octave_shapes():
  assert dream.octave_shapes((28, 28), 1, 1.4) == [(28, 28)]
  assert dream.octave_shapes((28, 28), 3, 1.4) == [(14, 14), (20, 20), (28, 28)]
  assert dream.octave_shapes((28, 20), 2, 2.0) == [(14, 10), (28, 20)]


def test_logit_objective_raises_the_target_logit(trained):
  model, variables, x, y = trained
  target = 3
  res = _dream(model, variables, x, y, _cfg(objective="logit", layers=("logits",),
                                             target_class=target, steps=10, step_size=0.02))
  before = np.asarray(model.apply(variables, x))
  after = np.asarray(model.apply(variables, res.images))
  assert np.all(after[:, target] > before[:, target])
  np.testing.assert_allclose(res.objective_gain, after[:, target] - before[:, target], rtol=1e-3,
                             atol=1e-4)
  assert (after.argmax(1) == target).mean() > (before.argmax(1) == target).mean()


def test_own_label_logit(trained):
  model, variables, x, y = trained
  res = _dream(model, variables, x, y, dream_configs.get_preset("logit"))
  before = np.asarray(model.apply(variables, x))[np.arange(len(y)), y]
  after = np.asarray(model.apply(variables, res.images))[np.arange(len(y)), y]
  assert np.mean(after > before) > 0.9
  assert res.linf.max() <= 0.1 + 1e-6


def _bn_distance(model, variables, images):
  _, _, bn_inputs = models.apply_with_activations(model, variables, jnp.asarray(images))
  return float(dream.bn_statistic_distance(bn_inputs, variables["batch_stats"]))


def test_bn_prior_lowers_bn_statistic_distance(trained_bn):
  model, variables, x, y = trained_bn
  base = dict(steps=10, step_size=0.03, jitter=1)
  free = _dream(model, variables, x, y, _cfg(**base))
  prior = _dream(model, variables, x, y, _cfg(bn_weight=1.0, **base))
  d_free, d_prior = (_bn_distance(model, variables, r.images) for r in (free, prior))
  assert d_prior < d_free, (d_prior, d_free)


def test_bn_statistics_ignore_padding(trained_bn):
  model, variables, x, _ = trained_bn
  _, _, bn = models.apply_with_activations(model, variables, jnp.asarray(x[:10]))
  _, _, bn_pad = models.apply_with_activations(
      model, variables, jnp.concatenate([jnp.asarray(x[:10]), jnp.zeros_like(x[:6])]))
  a = dream.bn_statistic_distance(bn, variables["batch_stats"])
  b = dream.bn_statistic_distance(bn_pad, variables["batch_stats"], jnp.arange(16) < 10)
  np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_projection_holds(trained, norm):
  model, variables, x, y = trained
  eps = 0.05 if norm == "linf" else 0.5
  res = _dream(model, variables, x, y, _cfg(steps=6, step_size=0.1, octaves=2, jitter=1,
                                             eps=eps, eps_norm=norm))
  size = res.linf if norm == "linf" else res.l2
  assert size.max() <= eps * (1 + 1e-5)
  assert size.min() > 0.9 * eps  # big steps: every dream reaches the boundary
  assert res.images.min() >= 0 and res.images.max() <= 1


def test_same_key_same_dream(trained):
  model, variables, x, y = trained
  cfg = _cfg(steps=4, step_size=0.05, octaves=2, jitter=3)
  a, b = (_dream(model, variables, x, y, cfg, seed=7) for _ in range(2))
  np.testing.assert_array_equal(a.images, b.images)
  c = _dream(model, variables, x, y, cfg, seed=8)
  assert not np.array_equal(a.images, c.images)


def test_chunks_and_repeated_calls_do_not_retrace(trained):
  model, variables, x, y = trained
  layer_l2 = dream.LayerL2("conv1")
  # The objective runs only while tracing: 3 programs (before, step, after).
  counted = chex.assert_max_traces(lambda logits, acts, labels: layer_l2(logits, acts, labels),
                                   n=3)
  spec = dream.from_config(_cfg(steps=3, jitter=1), model).replace(objective=counted)
  first = _dream(model, variables, x, y, spec, chunk_size=20)   # chunks of 20, 20, 8 (+12 pad)
  second = _dream(model, variables, x[::-1].copy(), y[::-1].copy(), spec, chunk_size=20)
  chex.assert_shape([first.images, second.images], x.shape)
  # Gradients are per image, so the padding of the last chunk cannot change its real rows.
  repadded = np.concatenate([x[40:], np.ones((12, *x.shape[1:]), np.float32)])
  # Placed as sharding.map_rows places a chunk, so the same programs serve it.
  mesh = sharding.make_mesh()
  rows = sharding.put_rows(mesh, (repadded, np.concatenate([y[40:], y[:12]]),
                                  np.arange(20) < 8), 20)
  variables, key = sharding.replicate(mesh, (variables, jax.random.key(0)))
  alone = dream.dream_batch(model, spec, variables, *rows, jax.random.fold_in(key, 2))
  assert np.abs(np.asarray(alone["images"])[:8] - first.images[40:]).max() < 1e-5


def test_objectives_match_numpy(trained):
  model, variables, x, y = trained
  logits, acts, _ = models.apply_with_activations(model, variables, jnp.asarray(x[:4]))
  a = np.asarray(acts["conv1"])
  np.testing.assert_allclose(dream.LayerMean("conv1")(logits, acts, y[:4]),
                             a.mean(axis=(1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(dream.LayerL2("conv1")(logits, acts, y[:4]),
                             (a ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(dream.Channel("conv1", 2)(logits, acts, y[:4]),
                             a[..., 2].mean(axis=(1, 2)), rtol=1e-5)
  np.testing.assert_allclose(dream.Neuron("conv1", 1)(logits, acts, y[:4]),
                             a[:, a.shape[1] // 2, a.shape[2] // 2, 1], rtol=1e-5)
  np.testing.assert_allclose(dream.ClassLogit(-1)(logits, acts, jnp.asarray(y[:4])),
                             np.asarray(logits)[np.arange(4), y[:4]], rtol=1e-6)
  both = dream.WeightedSum(((2.0, dream.LayerMean("conv1")), (0.5, dream.ClassLogit(1))))
  np.testing.assert_allclose(both(logits, acts, y[:4]),
                             2 * a.mean(axis=(1, 2, 3)) + 0.5 * np.asarray(logits)[:, 1],
                             rtol=1e-5)


@pytest.mark.parametrize("field,value,message", [
    ("steps", -1, r"dream.steps=-1 .*>= 0"),
    ("layers", ("conv9",), r"'conv9'.*conv0, conv1, dense0, logits"),
    ("octave_scale", 1.0, r"dream.octave_scale=1.0 .*> 1"),
    ("normalize", "l1", r"dream.normalize='l1'.*mean_abs, std"),
    ("objective", "bogus", r"dream.objective='bogus'.*mean, l2, channel, neuron, logit"),
    ("bn_weight", 1.0, r"dream.bn_weight=1.0 needs a classifier with BatchNorm"),
    ("eps", -0.1, r"dream.eps=-0.1"),
])
def test_bad_setting_refused_before_compute(trained, monkeypatch, field, value, message):
  model, variables, x, y = trained

  def no_compute(*args, **kwargs):
    raise AssertionError("dreamed despite a bad setting")

  monkeypatch.setattr(dream.dataset, "dream_batch", no_compute)
  with pytest.raises(ConfigError, match=message):
    _dream(model, variables, x, y, _cfg(**{field: value}))


def test_presets_validate_and_sweep_grows(trained, trained_bn):
  for name in ("subtle", "strong", "logit"):
    dream.validate(dream_configs.get_preset(name), trained[0])
  dream.validate(dream_configs.get_preset("bn"), trained_bn[0])
  sweep = dream_configs.sweep_presets()
  assert len(sweep) >= 4
  strengths = [s for s, _ in sweep]
  assert strengths == sorted(strengths)
  for s, c in sweep:
    assert dream_configs.strength(c) == pytest.approx(s)
    dream.validate(c, trained[0])
  assert dream_configs.strength(dream_configs.get_preset("subtle")) < strengths[1]
  with pytest.raises(ValueError, match="subtle, strong, logit, bn"):
    dream_configs.get_preset("wild")


def test_zoom_frames_and_files(trained, tmp_path):
  model, variables, x, y = trained
  frames = dream.dream_zoom(model, variables, x[0], int(y[0]), _cfg(steps=2, jitter=1),
                            jax.random.key(0), frames=3, zoom_scale=1.2)
  chex.assert_shape(frames, (3, *x.shape[1:]))
  assert frames.min() >= 0 and frames.max() <= 1
  figures.save_strip(str(tmp_path / "z.png"), frames)
  figures.save_gif(str(tmp_path / "z.gif"), frames)
  assert os.path.getsize(tmp_path / "z.png") > 0 and os.path.getsize(tmp_path / "z.gif") > 0
  zoomed = np.asarray(dream.zoom_in(jnp.asarray(x[:1]), 1.2))
  chex.assert_shape(zoomed, x[:1].shape)


def test_with_steps_keeps_the_strength():
  for name in dream_configs.PRESETS:
    c = dream_configs.get_preset(name)
    before = dream_configs.strength(c)
    out = dream_configs.with_steps(c, 7)
    assert out.steps == 7 and abs(dream_configs.strength(out) - before) < 1e-12
  with pytest.raises(ValueError, match="steps=0"):
    dream_configs.with_steps(dream_configs.get_preset("strong"), 0)
