"""Data parallelism on 4 simulated CPU devices.

The suite runs with one device, and JAX fixes its device count when it starts,
so :func:`test_on_four_simulated_devices` reruns this file in a fresh pytest
process with ``--xla_force_host_platform_device_count=4``; there the
``four_devices`` tests run, here they skip.

The per-image loops (evaluation, robust accuracy, adversarial datasets,
gradient alignment, dreaming) are checked twice over: their results equal the
same call on a one-device mesh (``mesh=_one_device()``), and
:class:`_Inspected` shows that inside their jitted programs the model's input
rows really are split over the four devices. The VAE, GAN and autoencoder
trainers, generator sampling, Fréchet features and pseudo-labelling are
checked the same way.
"""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamjax import dream, generators
from dreamjax.methods import adversarial, alignment, augment, frechet, pretrain
from dreamjax.plumbing import sharding
from dreamjax.training import evaluate, models, train
from dreamjax.configs import common
from dreamjax.configs import dream as dream_configs
from dreamjax.configs import generator as generator_config
from dreamjax.errors import ConfigError
from dreamjax.generators import gan, vae
from conftest import synthetic_images

four_devices = pytest.mark.skipif(jax.device_count() != 4, reason="needs 4 (simulated) devices")


def _tiny():
  model = models.make_model(common.model_config("tiny"), 10)
  variables = models.init_variables(model, jax.random.key(0), (28, 28, 1))
  x, y = synthetic_images(64)
  return model, variables, (x[..., None] / np.float32(255)), y.astype(np.int32)


def _dream(model, variables, x):
  """A reference Deep Dream ascent on conv1's mean squared activation."""
  for _ in range(3):
    g = jax.grad(lambda x: jnp.sum(jnp.mean(jnp.square(
        models.apply_with_activations(model, variables, x)[1]["conv1"]), (1, 2, 3))))(x)
    x = jnp.clip(x + 0.05 * g / (jnp.mean(jnp.abs(g), (1, 2, 3), keepdims=True) + 1e-8), 0, 1)
  return x


def test_on_four_simulated_devices():
  if os.environ.get("DREAMJAX_SHARDING_CHILD"):
    pytest.skip("already the 4-device run")
  env = dict(os.environ, DREAMJAX_SHARDING_CHILD="1",
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                        + " --xla_force_host_platform_device_count=4").strip())
  res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        os.path.abspath(__file__)], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       timeout=600)
  tail = res.stdout[-3000:] + res.stderr[-2000:]
  assert res.returncode == 0, tail
  assert "19 passed" in res.stdout, tail  # the four_devices tests ran rather than skipped


def test_indivisible_batch_is_a_config_error():
  mesh = sharding.make_mesh()
  model, _, x, y = _tiny()
  if mesh.size == 1:
    sharding.check_divisible(mesh, 7)  # every batch divides over one device
    return
  with pytest.raises(ConfigError, match="batch_size=7 must be a multiple"):
    sharding.check_divisible(mesh, 7)


def _jit_step(step, mesh):
  rep = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=rep, out_shardings=rep)


@four_devices
def test_sharded_train_step_matches_one_device():
  model, variables, x, y = _tiny()
  mesh, one_mesh = sharding.make_mesh(), _one_device()
  assert mesh.size == 4
  tcfg = common.train_config()
  tcfg.steps, tcfg.warmup_steps, tcfg.learning_rate = 12, 1, 1e-2
  tx = train.make_optimizer(tcfg)
  one_step = _jit_step(train.make_train_step(model, 16, one_mesh), one_mesh)
  traced = []

  def count_traces(state, images, labels, key):
    traced.append(1)  # runs at trace time only
    return images, labels

  many_step = _jit_step(train.make_train_step(model, 16, mesh, batch_transform=count_traces),
                        mesh)
  one = sharding.replicate(one_mesh, train.create_state(model, tx, variables))
  many = sharding.replicate(mesh, train.create_state(model, tx, variables))
  x1, y1 = sharding.replicate(one_mesh, (x, y))
  xs, ys = sharding.replicate(mesh, (x, y))
  one_losses, many_losses = [], []
  for step in range(12):
    key = jax.random.fold_in(jax.random.key(1), step)
    one, m1 = one_step(one, x1, y1, len(y), key)
    many, m4 = many_step(many, xs, ys, len(y), key)
    one_losses.append(float(m1["loss"]))
    many_losses.append(float(m4["loss"]))
  np.testing.assert_allclose(many_losses, one_losses, rtol=1e-4)
  assert np.mean(many_losses[-3:]) < many_losses[0]
  assert len(traced) == 1
  chex.assert_trees_all_close(many.params, one.params, rtol=1e-3, atol=1e-5)
  leaf = jax.tree.leaves(many.params)[0]
  assert leaf.sharding.is_fully_replicated


@four_devices
def test_map_rows_dream_equals_one_device():
  model, variables, x, _ = _tiny()
  dream_fn = jax.jit(lambda v, x: _dream(model, v, x))
  seen = []

  def spied(v, x):
    seen.append(len(x.sharding.device_set))
    return dream_fn(v, x)

  out = sharding.map_rows(spied, variables, x[:32], mesh=sharding.make_mesh(), chunk=32)
  assert seen == [4]
  chex.assert_shape(out, (32, 28, 28, 1))
  one = sharding.map_rows(dream_fn, variables, x[:32], mesh=_one_device(), chunk=32)
  chex.assert_trees_all_close(out, one, rtol=1e-5, atol=1e-5)


@four_devices
def test_sharded_pgd_equals_one_device():
  model, variables, x, y = _tiny()
  mesh = sharding.make_mesh()
  kw = dict(eps=0.1, steps=5, key=jax.random.key(3))
  adv1, ok1 = adversarial.pgd(model, variables, x[:32], y[:32], **kw)
  adv4, ok4 = adversarial.pgd(model, sharding.replicate(mesh, variables),
                              sharding.shard_batch(mesh, x[:32]),
                              sharding.shard_batch(mesh, y[:32]), **kw)
  assert len(adv4.sharding.device_set) == 4
  chex.assert_trees_all_close(adv4, adv1, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(ok4), np.asarray(ok1))


def test_map_rows_compiles_once_and_trims_padding():
  model, variables, x, _ = _tiny()
  dream_fn = jax.jit(chex.assert_max_traces(lambda v, x: _dream(model, v, x), n=1))
  # 20 images in chunks of 8: two full chunks and a padded one, one program.
  out = sharding.map_rows(dream_fn, variables, x[:20], mesh=sharding.make_mesh(), chunk=8,
                          key=None)
  chex.assert_shape(out, (20, 28, 28, 1))
  chex.assert_tree_all_finite(out)
  keyed = sharding.map_rows(lambda v, x, k: jax.random.uniform(k, (x.shape[0],)), variables,
                            x[:20], mesh=sharding.make_mesh(), chunk=8, key=jax.random.key(0))
  np.testing.assert_array_equal(keyed[:8], jax.random.uniform(
      jax.random.fold_in(jax.random.key(0), 0), (8,)))


def _fit_config(**overrides):
  tcfg = common.train_config()
  tcfg.steps, tcfg.batch_size, tcfg.warmup_steps, tcfg.learning_rate = 12, 16, 1, 1e-2
  tcfg.log_every, tcfg.eval_every, tcfg.checkpoint_every = 1, 0, 0
  tcfg.update(overrides)
  return tcfg


@four_devices
def test_fit_uses_every_device_and_matches_one_device():
  model, _, x, y = _tiny()
  tcfg = _fit_config()
  many = train.fit(model, tcfg, x, y, seeds=[0, 1], val=(x[:20], y[:20]))
  one = train.fit(model, tcfg, x, y, seeds=[0, 1], val=(x[:20], y[:20]),
                  mesh=_one_device())
  assert len(many.history) == len(one.history) == 12
  np.testing.assert_allclose([r["loss"] for r in many.history],
                             [r["loss"] for r in one.history], rtol=1e-4)
  leaf = jax.tree.leaves(many.state.params)[0]
  assert len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated
  assert len(jax.tree.leaves(one.state.params)[0].sharding.device_set) == 1
  chex.assert_trees_all_close(many.state.params, one.state.params, rtol=1e-3, atol=1e-5)
  # Evaluation runs on the replicated state.
  np.testing.assert_allclose(many.history[-1]["val_accuracy"], one.history[-1]["val_accuracy"],
                             atol=0.051)


@four_devices
def test_fit_indivisible_batch_is_a_config_error():
  model, _, x, y = _tiny()
  with pytest.raises(ConfigError, match=r"train\.batch_size=18 must be a multiple of the"
                     r" device count \(4\).*set it to 16 or 20"):
    train.fit(model, _fit_config(batch_size=18), x, y, seeds=[0])


@four_devices
def test_fit_resumes_on_four_devices(tmp_path):
  model, _, x, y = _tiny()
  tcfg = _fit_config(log_every=3, checkpoint_every=6)
  full = train.fit(model, tcfg, x, y, seeds=[0, 1])
  ckpt = str(tmp_path / "ckpt")

  class Stop(Exception):
    pass

  def stop_after_checkpoint(msg):  # the step 6 checkpoint is saved; stop at step 9
    if "step 9/12" in msg:
      raise Stop

  with pytest.raises(Stop):
    train.fit(model, tcfg, x, y, seeds=[0, 1], checkpoint_dir=ckpt,
              progress=stop_after_checkpoint)
  resumed = train.fit(model, tcfg, x, y, seeds=[0, 1], checkpoint_dir=ckpt)
  assert resumed.steps_run == 6
  assert [r["step"] for r in resumed.history] == [3, 6, 9, 12]
  np.testing.assert_allclose([r["loss"] for r in resumed.history],
                             [r["loss"] for r in full.history], rtol=1e-5)
  assert jax.tree.leaves(resumed.state.params)[0].sharding.is_fully_replicated
  chex.assert_trees_all_close(resumed.state.params, full.state.params, rtol=1e-5, atol=1e-6)


class _Inspected:
  """``model`` whose ``apply`` records how XLA shards the images it is given.

  ``jax.debug.inspect_array_sharding`` reports, when a jitted program
  compiles, the sharding XLA chose for the images inside it: split by rows
  means each device runs the model on its own rows only. Every other
  attribute is the model's. A fresh instance hashes apart from every other
  model, so the cached attack and dream programs are traced anew for it.
  """

  def __init__(self, model):
    self.model, self.seen = model, []

  def __getattr__(self, name):  # num_classes, conv_features, use_bn, ...
    if name == "model":
      raise AttributeError(name)
    return getattr(self.model, name)

  def apply(self, variables, x, *args, **kwargs):
    shape = x.shape
    jax.debug.inspect_array_sharding(x, callback=lambda s: self.seen.append((shape, s)))
    return self.model.apply(variables, x, *args, **kwargs)

  def assert_rows_split(self, rows: int):
    """Every traced ``apply`` saw ``rows`` images, a quarter on each of 4 devices."""
    assert self.seen, "the model was never traced"
    for shape, s in self.seen:
      assert shape[0] == rows, shape
      assert len(s.device_set) == 4 and s.shard_shape(shape)[0] == rows // 4, (shape, s)


def _one_device():
  """The one-device reference: a mesh over the first device alone."""
  return sharding.make_mesh(jax.devices()[:1])


@pytest.fixture(scope="module")
def trained_tiny():
  """Two seeds of the tiny CNN after 12 steps (accuracy ~0.6, so attacks flip some)."""
  model, _, x, y = _tiny()
  res = train.fit(model, _fit_config(), x, y, seeds=[0, 1], mesh=_one_device())
  return model, res.state.variables, x, y


@four_devices
def test_evaluation_splits_rows_and_matches_one_device(trained_tiny):
  model, variables_K, x, y = trained_tiny
  spy = _Inspected(model)
  # 40 images in chunks of 30 and 10; both padded to 32 rows on 4 devices, 30 on one.
  many = evaluate.logits(spy, variables_K, x[:40], batch_size=30)
  one = evaluate.logits(model, variables_K, x[:40], batch_size=30, mesh=_one_device())
  spy.assert_rows_split(32)
  chex.assert_shape(many, (2, 40, 10))
  chex.assert_trees_all_close(many, one, rtol=1e-5, atol=1e-5)
  spy = _Inspected(model)
  acc4 = evaluate.accuracy(spy, variables_K, x[:40], y[:40])
  acc1 = evaluate.accuracy(model, variables_K, x[:40], y[:40], mesh=_one_device())
  spy.assert_rows_split(40)
  np.testing.assert_allclose(acc4, acc1, rtol=1e-5, atol=1e-5)
  assert 0.2 < acc1.min()


@four_devices
def test_robust_accuracy_splits_rows_and_matches_one_device(trained_tiny):
  model, variables_K, x, y = trained_tiny
  # Chunks of 30 and 10 images, padded to 32 rows on 4 devices and to 30 on one: the
  # random start is drawn for the whole padded chunk and must agree on the real rows.
  kw = dict(eps=0.05, steps=3, batch_size=30)
  spy = _Inspected(model)
  many = adversarial.robust_accuracy(spy, variables_K, x[:40], y[:40], jax.random.key(4), **kw)
  one = adversarial.robust_accuracy(model, variables_K, x[:40], y[:40],
                                    jax.random.key(4), mesh=_one_device(), **kw)
  spy.assert_rows_split(32)
  np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-5)
  clean = evaluate.accuracy(model, variables_K, x[:40], y[:40])
  assert np.all(0 < one) and np.all(one < clean)  # the attack flipped some, not all


@four_devices
def test_adversarial_dataset_splits_rows_and_matches_one_device(trained_tiny):
  model, variables_K, x, y = trained_tiny
  v = train.unstack(variables_K, 0)
  kw = dict(eps=0.1, steps=3, chunk_size=30, restarts=2)
  spy = _Inspected(model)
  adv4, info4 = adversarial.adversarial_dataset(spy, v, x[:40], y[:40], jax.random.key(5), **kw)
  adv1, info1 = adversarial.adversarial_dataset(model, v, x[:40], y[:40],
                                                jax.random.key(5), mesh=_one_device(), **kw)
  spy.assert_rows_split(32)
  chex.assert_trees_all_close(adv4, adv1, rtol=1e-5, atol=1e-5)
  assert info4["success_rate"] == info1["success_rate"] > 0
  np.testing.assert_allclose(info4["mean_l2"], info1["mean_l2"], rtol=1e-5)


@four_devices
def test_gradient_alignment_splits_rows_and_matches_one_device(trained_tiny):
  model, variables_K, x, y = trained_tiny
  v = train.unstack(variables_K, 0)
  kw = dict(layer="conv1", steps=2, batch_size=30)
  spy = _Inspected(model)
  many = alignment.gradient_alignment(spy, v, x[:40], y[:40], **kw)
  one = alignment.gradient_alignment(model, v, x[:40], y[:40], mesh=_one_device(), **kw)
  spy.assert_rows_split(32)
  assert set(many["per_image"]) == set(one["per_image"])
  chex.assert_trees_all_close(many["per_image"], one["per_image"], rtol=1e-5, atol=1e-5)


@four_devices
def test_dream_dataset_splits_rows_and_matches_one_device():
  mcfg = common.model_config("tiny")
  mcfg.use_bn = True  # the BatchNorm prior couples a chunk's rows: one cross-device reduction
  model = models.make_model(mcfg, 10)
  variables = models.init_variables(model, jax.random.key(0), (28, 28, 1))
  _, _, x, y = _tiny()
  cfg = dream_configs.dream_config()
  cfg.steps, cfg.step_size, cfg.octaves, cfg.jitter, cfg.bn_weight = 3, 0.05, 2, 1, 0.1
  kw = dict(chunk_size=30, progress=lambda _: None)
  spy = _Inspected(model)
  many = dream.dream_dataset(spy, variables, x[:40], y[:40], cfg, jax.random.key(6), **kw)
  one = dream.dream_dataset(model, variables, x[:40], y[:40], cfg,
                            jax.random.key(6), mesh=_one_device(), **kw)
  spy.assert_rows_split(32)
  for field in ("images", "l2", "linf", "objective_before", "objective_gain"):
    chex.assert_trees_all_close(getattr(many, field), getattr(one, field), rtol=1e-5,
                                atol=1e-5)
  assert one.linf.min() > 0 and one.objective_gain.mean() > 0


def _spy_on(monkeypatch, owner, factory: str) -> list:
  """Makes ``owner.factory`` (a model-building function) wrap what it builds in
  :class:`_Inspected`; returns the list of those spies."""
  made, build = [], getattr(owner, factory)

  def spying(*args, **kwargs):
    built = build(*args, **kwargs)
    spies = tuple(_Inspected(m) for m in built) if isinstance(built, tuple) else _Inspected(built)
    made.extend(spies if isinstance(spies, tuple) else [spies])
    return spies

  monkeypatch.setattr(owner, factory, spying)
  return made


def _assert_rows_split(spies, rows: int):
  traced = [s for s in spies if s.seen]
  assert traced, "no model was traced"
  for s in traced:
    s.assert_rows_split(rows)


def _generator_config(**overrides):
  cfg = generator_config.get_config("tiny")  # batch_size 16, widths (4, 8), latent_dim 4
  cfg.update(dict(steps=4, log_every=2, sample_batch=18), **overrides)
  return cfg


def _assert_same_training(many, one):
  (p4, h4), (p1, h1) = many, one
  assert [r["step"] for r in h4] == [r["step"] for r in h1] == [2, 4]
  for name in set(h1[0]) - {"step"}:
    np.testing.assert_allclose([r[name] for r in h4], [r[name] for r in h1], rtol=1e-4,
                               err_msg=name)
  chex.assert_trees_all_close(p4, p1, rtol=1e-4, atol=1e-6)
  replicated = [leaf for leaf in jax.tree.leaves(p4) if isinstance(leaf, jax.Array)]
  assert replicated and all(len(leaf.sharding.device_set) == 4
                            and leaf.sharding.is_fully_replicated for leaf in replicated)


@four_devices
def test_vae_trains_and_samples_split_over_rows_like_one_device(monkeypatch):
  _, _, x, _ = _tiny()
  cfg = _generator_config()
  spies = _spy_on(monkeypatch, vae, "make_module")
  many = vae.train_vae(cfg, x, None, jax.random.key(0))
  _assert_rows_split(spies, 16)
  monkeypatch.undo()
  one = vae.train_vae(cfg, x, None, jax.random.key(0), mesh=_one_device())
  _assert_same_training(many, one)
  # 30 samples in chunks of 18 and 12, padded to 20 rows on 4 devices and 18 on one:
  # each row's latent draw must not depend on the padding or the sharding.
  params = one[0]
  spies = _spy_on(monkeypatch, vae, "make_module")
  s4 = vae.sample_vae(cfg, params, jax.random.key(1), num=30)
  _assert_rows_split(spies, 20)
  s1 = vae.sample_vae(cfg, params, jax.random.key(1), num=30, mesh=_one_device())
  chex.assert_shape(s4, (30, 28, 28, 1))
  chex.assert_trees_all_close(s4, s1, rtol=1e-5, atol=1e-6)


@four_devices
def test_gan_trains_and_samples_split_over_rows_like_one_device(monkeypatch):
  _, _, x, y = _tiny()
  cfg = _generator_config(conditional=True, num_classes=10)
  spies = _spy_on(monkeypatch, gan, "make_modules")  # the generator and the discriminator
  many = gan.train_gan(cfg, x, y, jax.random.key(0))
  _assert_rows_split(spies, 16)
  monkeypatch.undo()
  one = gan.train_gan(cfg, x, y, jax.random.key(0), mesh=_one_device())
  _assert_same_training(many, one)
  labels = np.arange(30) % 10
  spies = _spy_on(monkeypatch, gan, "make_modules")
  s4 = gan.sample_gan(cfg, one[0], jax.random.key(1), labels=labels)
  _assert_rows_split(spies, 20)
  s1 = gan.sample_gan(cfg, one[0], jax.random.key(1), labels=labels, mesh=_one_device())
  chex.assert_shape(s4, (30, 28, 28, 1))
  chex.assert_trees_all_close(s4, s1, rtol=1e-5, atol=1e-6)


@four_devices
def test_autoencoder_trains_split_over_rows_like_one_device(monkeypatch):
  _, _, x, _ = _tiny()
  cfg = _generator_config()
  model_cfg = cfg.classifier.copy_and_resolve_references()
  model_cfg.use_bn = True  # batch statistics over all 16 rows: one cross-device reduction
  args = (cfg, x, jax.random.key(0), model_cfg, 10, (28, 28, 1))
  spies = _spy_on(monkeypatch, models, "make_model")
  many = pretrain.train_autoencoder(*args, return_history=True)
  _assert_rows_split(spies, 16)
  monkeypatch.undo()
  one = pretrain.train_autoencoder(*args, return_history=True, mesh=_one_device())
  assert set(many[0]) == {"params", "batch_stats"}
  _assert_same_training(many, one)


@four_devices
def test_frechet_features_and_pseudo_labels_split_rows_and_match_one_device(trained_tiny):
  model, variables_K, x, _ = trained_tiny
  v = train.unstack(variables_K, 0)
  # 40 images in chunks of 30 and 10: padded to 32 rows on 4 devices, 30 on one.
  spy = _Inspected(model)
  f4 = frechet.features(spy, v, x[:40], batch_size=30)
  spy.assert_rows_split(32)
  f1 = frechet.features(model, v, x[:40], batch_size=30, mesh=_one_device())
  chex.assert_shape(f4, (40, 16))
  chex.assert_trees_all_close(f4, f1, rtol=1e-5, atol=1e-5)
  spy = _Inspected(model)
  kept4, labels4, frac4 = generators.pseudo_label(spy, v, x[:40], threshold=0.3, batch_size=30)
  spy.assert_rows_split(32)
  kept1, labels1, frac1 = generators.pseudo_label(model, v, x[:40],
                                                  threshold=0.3, batch_size=30,
                                                  mesh=_one_device())
  assert frac4 == frac1 and 0 < frac1 < 1
  np.testing.assert_array_equal(labels4, labels1)
  np.testing.assert_array_equal(kept4, kept1)


@four_devices
def test_generator_and_pretraining_indivisible_batch_is_a_config_error():
  _, _, x, y = _tiny()
  cfg = _generator_config(batch_size=18)
  match = (r"^batch_size=18 must be a multiple of the device count \(4\).*set it to 16 or 20")
  for run in (lambda: vae.train_vae(cfg, x, None, jax.random.key(0)),
              lambda: gan.train_gan(cfg, x, None, jax.random.key(0)),
              lambda: pretrain.train_autoencoder(cfg, x, jax.random.key(0), cfg.classifier, 10,
                                                 (28, 28, 1)),
              lambda: pretrain.train_rotation(cfg, x, jax.random.key(0), cfg.classifier,
                                              (28, 28, 1))):
    with pytest.raises(ConfigError, match=match):
      run()
  # One device takes any batch size.
  _, history = vae.train_vae(_generator_config(batch_size=18, steps=1), x, None,
                             jax.random.key(0), mesh=_one_device())
  assert np.isfinite(history[-1]["loss"])


@four_devices
def test_offline_augmentation_splits_rows_and_matches_one_device(monkeypatch):
  _, _, x, y = _tiny()
  shapes = []
  classical = augment.classical_fn(augment.classical_config())

  def fn(key, images):
    shape = images.shape
    jax.debug.inspect_array_sharding(images, callback=lambda s: shapes.append((shape, s)))
    return classical(key, images)

  # 30 images in chunks of 18 and 12: padded to 20 rows on 4 devices, 18 on one.
  x4, y4, p4 = augment.offline(x[:30], y[:30], jax.random.key(3), fn, copies=2, chunk_size=18)
  assert shapes and all(shape[0] == 20 and s.shard_shape(shape)[0] == 5 and len(s.device_set) == 4
                        for shape, s in shapes)
  x1, y1, p1 = augment.offline(x[:30], y[:30], jax.random.key(3), classical, copies=2,
                               chunk_size=18, mesh=_one_device())
  chex.assert_shape(x4, (60, 28, 28, 1))
  chex.assert_trees_all_close(x4, x1, atol=1e-5)  # bilinear rotation: float rounding
  np.testing.assert_array_equal(y4, y1)
  np.testing.assert_array_equal(p4, p1)
  assert not np.allclose(x4[:30], x4[30:])  # the two copies differ
