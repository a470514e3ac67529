import chex
import jax
import numpy as np
import pytest

from dreamjax import generators
from dreamjax.training import models
from dreamjax.configs import generator as generator_config
from dreamjax.errors import ConfigError, DivergenceError
from dreamjax.generators import common, gan, vae
from conftest import synthetic_images, on_mesh


def _data(n=200, size=28):
  x, y = synthetic_images(n, size=size)
  return (x[..., None] / np.float32(255)), y.astype(np.int32)


def _cfg(**kw):
  cfg = generator_config.get_config("tiny")
  cfg.update(kw)
  return cfg


def test_vae_loss_finite_and_decreasing():
  x, _ = _data()
  params, history = generators.train_vae(_cfg(steps=40), x, None, jax.random.key(0))
  chex.assert_tree_all_finite(params)
  assert history[-1]["loss"] < 0.9 * history[0]["loss"]
  assert {"step", "loss", "reconstruction", "kl"} <= set(history[0])


def test_gan_losses_finite_and_generator_moves_toward_data():
  x, _ = _data()
  cfg = _cfg(steps=60, gan_learning_rate=1e-3)
  params0 = gan.init_params(cfg, (28, 28, 1), 0, jax.random.split(jax.random.key(0))[0])
  before = generators.sample_gan(cfg, params0, jax.random.key(1), num=64)
  params, history = generators.train_gan(cfg, x, None, jax.random.key(0))
  after = generators.sample_gan(cfg, params, jax.random.key(1), num=64)
  assert all(np.isfinite(r[k]) for r in history for k in ("d_loss", "g_loss"))
  # The mean image moves toward the data's: G learns from D's gradient.
  err = lambda s: np.mean((s.mean(0) - x.mean(0)) ** 2)
  assert err(after) < 0.7 * err(before)


@pytest.mark.parametrize("kind", ["vae", "gan"])
def test_conditional_samples_carry_labels_and_shapes(kind):
  x, y = _data(100, size=32)
  x = np.repeat(x, 3, axis=-1)  # 32×32×3: any size and channel count works
  cfg = _cfg(steps=2, conditional=True)
  params, _ = generators.TRAIN[kind](cfg, x, y, jax.random.key(0))
  labels = np.array([3, 1, 4, 1, 5])
  out = generators.SAMPLE[kind](cfg, params, jax.random.key(2), labels=labels)
  chex.assert_shape(out, (5, 32, 32, 3))
  assert out.min() >= 0 and out.max() <= 1
  # Different labels with the same key change the samples: the label is used.
  other = generators.SAMPLE[kind](cfg, params, jax.random.key(2), labels=labels[::-1])
  assert not np.allclose(out[0], other[0])
  chex.assert_shape(generators.SAMPLE[kind](cfg, params, jax.random.key(2), num=7),
                    (7, 32, 32, 3))


def test_checkpoint_roundtrip_gives_identical_samples(tmp_path):
  x, y = _data(60)
  for kind, labels in (("vae", None), ("gan", y)):
    cfg = _cfg(steps=2, conditional=labels is not None)
    params, _ = generators.TRAIN[kind](cfg, x, labels, jax.random.key(0))
    generators.save(str(tmp_path / kind), kind, cfg, params)
    kind2, cfg2, params2, _ = generators.load(str(tmp_path / kind))
    assert kind2 == kind
    a = generators.SAMPLE[kind](cfg, params, jax.random.key(5), num=12)
    b = generators.SAMPLE[kind2](cfg2, params2, jax.random.key(5), num=12)
    np.testing.assert_array_equal(a, b)


def test_train_steps_compile_once():
  x, y = _data(60)
  cfg = _cfg(conditional=True, num_classes=10)
  module = vae.make_module(cfg, (28, 28, 1), 10)
  tx = vae.make_optimizer(cfg)
  v = vae.init_params(cfg, (28, 28, 1), 10, jax.random.key(0))["vae"]
  state = on_mesh({"variables": v, "opt_state": tx.init(v)})
  x, y = on_mesh((x, y))
  step = jax.jit(chex.assert_max_traces(vae.make_train_step(module, tx, 8, 1.0), n=1))
  for i in range(3):
    state, metrics = step(state, x, y, jax.random.key(i))
  chex.assert_shape(metrics["loss"], ())
  g, d = gan.make_modules(cfg, (28, 28, 1), 10)
  p = gan.init_params(cfg, (28, 28, 1), 10, jax.random.key(0))
  tx = gan.make_optimizer(cfg)
  state = on_mesh({"generator": p["generator"], "discriminator": p["discriminator"],
                   "opt_g": tx.init(p["generator"]), "opt_d": tx.init(p["discriminator"])})
  step = jax.jit(chex.assert_max_traces(gan.make_train_step(g, d, tx, 8, 4, 0.9), n=1))
  for i in range(3):
    state, metrics = step(state, x, y, jax.random.key(i))
  chex.assert_tree_all_finite(state["generator"])


def test_pseudo_label_threshold_respected():
  x, _ = _data(50)
  model = models.CNN(num_classes=3, conv_features=(4,), pool=(True,), dense_features=(8,))
  variables = models.init_variables(model, jax.random.key(0), (28, 28, 1))
  # Scale the head so confidences spread over (1/3, 1).
  variables = jax.tree_util.tree_map_with_path(
      lambda p, v: v * 30 if "Head" in str(p) else v, variables)
  probs = np.asarray(jax.nn.softmax(model.apply(variables, x), -1))
  for threshold in (0.0, 0.6, 0.9, 1.0):
    kept, labels, frac = generators.pseudo_label(model, variables, x, threshold=threshold)
    expected = probs.max(-1) >= threshold
    assert len(kept) == expected.sum() == len(labels)
    assert frac == pytest.approx(expected.mean())
    np.testing.assert_array_equal(labels, probs.argmax(-1)[expected])
  with pytest.raises(ConfigError, match="pseudo_label_threshold"):
    generators.pseudo_label(model, variables, x, threshold=1.5)


def test_bad_settings_refused_before_compute():
  x, y = _data(20)
  with pytest.raises(ConfigError, match="conditional=True needs labels"):
    generators.train_vae(_cfg(conditional=True), x, None, jax.random.key(0))
  with pytest.raises(ConfigError, match="conditional=False"):
    generators.train_gan(_cfg(), x, y, jax.random.key(0))
  with pytest.raises(ConfigError, match="beta1"):
    generators.train_gan(_cfg(beta1=1.0), x, None, jax.random.key(0))
  with pytest.raises(ConfigError, match="steps=0"):
    generators.train_vae(_cfg(steps=0), x, None, jax.random.key(0))


def test_nan_loss_names_the_step():
  x, _ = _data(20)
  x[:] = np.nan
  with pytest.raises(DivergenceError, match="at step 0"):
    generators.train_vae(_cfg(steps=3, log_every=3), x, None, jax.random.key(0))


def test_sample_labels_rules():
  np.testing.assert_array_equal(common.sample_labels(3, None, 5), [0, 1, 2, 0, 1])
  with pytest.raises(ConfigError, match="unconditional"):
    common.sample_labels(0, [1, 2], None)
  with pytest.raises(ConfigError):
    common.sample_labels(3, [0, 3], None)


def test_depth_to_space_places_each_phase():
  x = np.arange(2 * 3 * 3 * 8, dtype=np.float32).reshape(2, 3, 3, 8)
  y = np.asarray(common.depth_to_space_2x(x))
  chex.assert_shape(y, (2, 6, 6, 2))
  for a in range(2):
    for b in range(2):
      phase = 2 * a + b
      np.testing.assert_array_equal(y[:, a::2, b::2, :], x[..., phase * 2:(phase + 1) * 2])


def test_subpixel_decoder_any_size_and_icnr_start():
  # 30×30×3 needs a 8×8 grid cropped back; at init the four phases of each
  # sub-pixel conv are equal, so the first stage is nearest-neighbour smooth.
  dec = common.Decoder((30, 30, 3), (4, 8), upsample="subpixel")
  h = jax.random.normal(jax.random.key(0), (2, 5))
  variables = dec.init(jax.random.key(1), h)
  chex.assert_shape(dec.apply(variables, h), (2, 30, 30, 3))
  kernel = variables["params"]["Conv_0"]["kernel"]
  phases = np.split(np.asarray(kernel), 4, axis=-1)
  for p in phases[1:]:
    np.testing.assert_array_equal(p, phases[0])
  with pytest.raises(ConfigError, match="upsample"):
    common.Decoder((28, 28, 1), (4, 8), upsample="bilinear").init(jax.random.key(0), h)
  x, _ = _data(20)
  with pytest.raises(ConfigError, match="upsample"):
    generators.train_vae(_cfg(upsample="bilinear"), x, None, jax.random.key(0))


def test_diff_augment_translation_is_a_zero_filled_shift():
  x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
  y = np.asarray(gan.diff_augment(x, jax.random.key(0), ("translation",)))
  for img, out in zip(x, y):
    found = False
    for dy in range(-1, 2):
      for dx in range(-1, 2):
        shifted = np.zeros_like(img)
        shifted[max(dy, 0):8 + min(dy, 0), max(dx, 0):8 + min(dx, 0)] = \
            img[max(-dy, 0):8 + min(-dy, 0), max(-dx, 0):8 + min(-dx, 0)]
        found |= np.allclose(out, shifted)
    assert found
  cut = np.asarray(gan.diff_augment(np.ones((4, 8, 8, 1), np.float32), jax.random.key(1),
                                    ("cutout",)))
  assert np.all((cut == 0).sum((1, 2, 3)) > 0) and np.all((cut == 0).sum((1, 2, 3)) <= 16)


@pytest.mark.parametrize("options", [
    {"gan_loss": "hinge"}, {"diffaug": "translation,cutout,brightness,contrast"},
    {"ema_decay": 0.9}, {"r1_gamma": 1.0}, {"upsample": "subpixel"}])
def test_gan_options_train_finite(options):
  x, y = _data(40)
  cfg = _cfg(steps=4, log_every=2, conditional=True, **options)
  params, history = generators.train_gan(cfg, x, y, jax.random.key(0))
  chex.assert_tree_all_finite(params)
  assert all(np.isfinite(r[k]) for r in history for k in ("d_loss", "g_loss"))
  chex.assert_shape(generators.sample_gan(cfg, params, jax.random.key(1), num=3), (3, 28, 28, 1))


def test_gan_ema_samples_with_the_average():
  x, _ = _data(40)
  cfg = _cfg(steps=3, log_every=3, ema_decay=0.5)
  state, step, finish = gan.prepare_training(cfg, x, None, jax.random.key(0))
  g0 = jax.tree.map(np.asarray, state["generator"])
  state, _ = common.run_steps(step, state, x, None, jax.random.key(1), steps=3, log_every=3,
                              desc="t", progress=lambda m: None)
  params = finish(state)
  chex.assert_trees_all_close(params["generator"], state["ema"])
  # The average lags the raw weights: between the start and the end.
  assert not np.allclose(jax.tree.leaves(params["generator"])[0], jax.tree.leaves(g0)[0])


def test_bad_gan_options_refused_before_compute():
  x, _ = _data(20)
  for bad, match in (({"gan_loss": "wgan"}, "gan_loss"), ({"diffaug": "rotate"}, "diffaug"),
                     ({"ema_decay": 1.0}, "ema_decay"), ({"r1_gamma": -1.0}, "r1_gamma")):
    with pytest.raises(ConfigError, match=match):
      generators.train_gan(_cfg(**bad), x, None, jax.random.key(0))


def test_vae_kl_warmup_and_temperature():
  x, y = _data(40)
  cfg = _cfg(steps=6, log_every=3, kl_warmup_steps=4, conditional=True, upsample="subpixel")
  params, history = generators.train_vae(cfg, x, y, jax.random.key(0))
  assert all(np.isfinite(r["loss"]) for r in history)
  # Temperature 0 decodes z = 0: one image per label, whatever the key.
  cfg.sample_temperature = 0.0
  a = generators.sample_vae(cfg, params, jax.random.key(1), labels=[2, 2, 5])
  b = generators.sample_vae(cfg, params, jax.random.key(2), labels=[2])
  np.testing.assert_allclose(a[0], a[1], atol=1e-6)
  np.testing.assert_allclose(a[0], b[0], atol=1e-6)
  assert not np.allclose(a[0], a[2])


class _Stop(Exception):
  pass


def _stopping_at(step: int, lines: list):
  """A progress callback that records its lines and raises at step ``step``'s line, as a
  kill would (the save of that step never happens)."""
  def progress(line):
    lines.append(line)
    if f"step {step}/" in line:
      raise _Stop(line)
  return progress


def test_a_stopped_training_goes_on_from_its_checkpoint_to_the_same_bits(tmp_path, monkeypatch):
  monkeypatch.setattr(common, "CHECKPOINT_SECONDS", 0.0)  # keep it at every logged step
  x, y = _data(32, size=16)
  cfg = _cfg(model="vae", steps=12, log_every=3, conditional=True)
  whole, whole_history = generators.train_vae(cfg, x, y, jax.random.key(5))
  where = str(tmp_path / "training")
  lines = []
  with pytest.raises(_Stop):
    generators.train_vae(cfg, x, y, jax.random.key(5), checkpoint_dir=where,
                               progress=_stopping_at(9, lines))
  assert common.seconds_trained(where) > 0
  lines.clear()
  params, history = generators.train_vae(cfg, x, y, jax.random.key(5),
                                               checkpoint_dir=where, progress=lines.append)
  assert "resumed from step 6" in lines[0], lines
  assert [line.split()[2] for line in lines[1:]] == ["9/12", "12/12"]
  chex.assert_trees_all_equal(params, whole)
  assert history == whole_history
  # Another key (or config, or data) never goes on from it.
  with pytest.raises(ConfigError, match="another config"):
    generators.train_vae(cfg, x, y, jax.random.key(6), checkpoint_dir=where)


def test_seeds_trained_together_go_on_from_their_checkpoint_to_the_same_bits(tmp_path,
                                                                             monkeypatch):
  monkeypatch.setattr(common, "CHECKPOINT_SECONDS", 0.0)
  x0, y0 = _data(32, size=16)
  images, labels = np.stack([x0, x0[::-1]]), np.stack([y0, y0[::-1]])
  cfg = _cfg(model="vae", steps=6, log_every=2, conditional=True)
  keys = [jax.random.key(3), jax.random.key(4)]
  whole = common.train_seeds(vae.prepare_training, "vae", cfg, images, labels, keys)
  where = str(tmp_path / "training")
  with pytest.raises(_Stop):
    common.train_seeds(vae.prepare_training, "vae", cfg, images, labels, keys,
                       checkpoint_dir=where, progress=_stopping_at(6, []))
  lines = []
  again = common.train_seeds(vae.prepare_training, "vae", cfg, images, labels,
                             keys, checkpoint_dir=where, progress=lines.append)
  assert "resumed from step 4" in lines[0], lines
  for (params, history), (want, want_history) in zip(again, whole):
    chex.assert_trees_all_equal(params, want)
    assert history == want_history
