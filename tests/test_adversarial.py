import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import synthetic_images, on_mesh
from dreamjax.methods import adversarial, alignment
from dreamjax.training import evaluate, models, train
from dreamjax.configs import common
from dreamjax.errors import ConfigError


@pytest.fixture(scope="module")
def trained():
  """A tiny CNN trained to ~100% on the synthetic bars, and 100 held-out images."""
  x, y = synthetic_images(400, seed=3)
  x = (x.astype(np.float32) / 255.0)[..., None]
  model = models.make_model(common.model_config("tiny"), 10)
  tcfg = common.train_config()
  tcfg.steps, tcfg.batch_size, tcfg.warmup_steps = 80, 32, 10
  tcfg.log_every, tcfg.eval_every, tcfg.checkpoint_every = 80, 0, 0
  res = train.fit(model, tcfg, x[:300], y[:300].astype(np.int32), seeds=[0])
  variables_K = res.state.variables
  xt, yt = x[300:], y[300:].astype(np.int32)
  clean = evaluate.accuracy(model, variables_K, xt, yt)
  return model, variables_K, train.unstack(variables_K, 0), xt, yt, float(clean[0])


def _loss(model, variables, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(
      model.apply(variables, x, train=False), jnp.asarray(y)).mean()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_pgd_stays_in_ball_and_pixel_range(trained, norm, eps):
  model, _, v, x, y, _ = trained
  adv, success = adversarial.pgd(model, v, x, y, jax.random.key(0), eps=eps, steps=5,
                                 norm=norm, restarts=2)
  chex.assert_shape(adv, x.shape)
  chex.assert_shape(success, (len(x),))
  chex.assert_tree_all_finite(adv)
  delta = np.asarray(adv - x).reshape(len(x), -1)
  size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
  assert size.max() <= eps + 1e-5
  assert size.mean() > 0.5 * eps  # it did move
  assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def test_pgd_raises_the_loss_at_least_as_much_as_fgsm(trained):
  model, _, v, x, y, _ = trained
  clean = _loss(model, v, x, y)
  fgsm_adv, _ = adversarial.fgsm(model, v, x, y, eps=0.1)
  pgd_adv, _ = adversarial.pgd(model, v, x, y, jax.random.key(1), eps=0.1, steps=10)
  assert np.abs(np.asarray(fgsm_adv - x)).max() <= 0.1 + 1e-6
  l_fgsm, l_pgd = _loss(model, v, fgsm_adv, y), _loss(model, v, pgd_adv, y)
  assert l_fgsm > clean
  assert l_pgd >= l_fgsm


def test_pgd_drops_accuracy_far_below_clean(trained):
  model, variables_K, _, x, y, clean = trained
  assert clean > 0.9
  robust = adversarial.robust_accuracy(model, variables_K, x, y, jax.random.key(2), eps=0.1,
                                       steps=10, batch_size=64)  # 64: a padded last chunk
  chex.assert_shape(robust, (1,))
  assert robust[0] < 0.6 * clean


def test_robust_accuracy_attacks_k_models_at_once(trained):
  model, variables_K, _, x, y, clean = trained
  two = jax.tree.map(lambda a: jnp.concatenate([a, a]), variables_K)
  robust = adversarial.robust_accuracy(model, two, x[:40], y[:40], jax.random.key(3),
                                       eps=0.1, steps=5, restarts=2)
  chex.assert_shape(robust, (2,))
  assert np.all(robust <= 1.0) and np.all(robust >= 0.0)
  # The same model under two random starts: close, and never above clean accuracy.
  assert abs(robust[0] - robust[1]) <= 0.15
  eps0 = adversarial.robust_accuracy(model, two, x[:40], y[:40], jax.random.key(3), eps=0.0,
                                     steps=1)
  clean40 = evaluate.accuracy(model, two, x[:40], y[:40])
  np.testing.assert_allclose(eps0, clean40)


def test_targeted_pgd_reaches_the_target(trained):
  model, _, v, x, y, _ = trained
  targets = (y + 3) % 10
  adv, success = adversarial.pgd(model, v, x, targets, jax.random.key(4), eps=0.3, steps=20,
                                 targeted=True)
  pred = np.asarray(jnp.argmax(model.apply(v, adv, train=False), -1))
  np.testing.assert_array_equal(np.asarray(success), pred == targets)
  assert success.mean() > 0.5


def test_pgd_compiles_once(trained):
  model, _, v, x, y, _ = trained
  ops = adversarial._ops(model, "linf", False, "jit")  # pylint: disable=protected-access
  sizes = []
  for seed in range(3):  # new keys, eps, step sizes and whole chunks of steps: no new compilation
    adversarial.pgd(model, v, x[:16], y[:16], jax.random.key(seed), eps=0.05 * (seed + 1),
                    steps=adversarial.WALK_CHUNK * (seed + 1))
    sizes.append((ops.walk._cache_size(), ops.start._cache_size(),  # pylint: disable=protected-access
                  ops.outcome._cache_size()))  # pylint: disable=protected-access
  assert sizes[0] == sizes[1] == sizes[2]
  # 5, 10 and 15 steps share one walk program; a remainder adds one more, once.
  for _ in range(2):
    adversarial.pgd(model, v, x[:16], y[:16], jax.random.key(0), eps=0.1,
                    steps=adversarial.WALK_CHUNK + 1)
    sizes.append(ops.walk._cache_size())  # pylint: disable=protected-access
  assert sizes[0][0] <= sizes[3] <= sizes[0][0] + 1 and sizes[4] == sizes[3]


@pytest.mark.parametrize("method", ["pgd", "fgsm"])
def test_adversarial_training_transform_does_not_retrace(trained, method):
  model, _, v, x, y, _ = trained
  chex.clear_trace_counter()  # the counter is keyed by code: shared by both parameters
  transform = adversarial.adversarial_batch_transform(model, method=method, eps=0.1, steps=2,
                                                      fraction=0.5)
  tx = optax.adam(1e-3)
  state = train.create_state(model, tx, v)
  step = jax.jit(train.make_train_step(model, 8, batch_transform=chex.assert_max_traces(
      transform, n=1)))
  state, images, labels = on_mesh((state, jnp.asarray(x), jnp.asarray(y)))
  for i in range(3):
    state, metrics = step(state, images, labels, len(y), jax.random.key(i))
    chex.assert_tree_all_finite(metrics)
  if method == "pgd":
    return  # the replacement below is the same code for both; one compile suffices
  # Half of a batch is replaced: the first 4 move, within eps; the rest do not.
  out, out_y = jax.jit(transform)(state, images[:8], labels[:8], jax.random.key(9))
  moved = np.abs(np.asarray(out - images[:8])).reshape(8, -1).max(1)
  assert np.all(moved[:4] > 0) and np.all(moved[4:] == 0) and moved.max() <= 0.1 + 1e-6
  np.testing.assert_array_equal(out_y, labels[:8])


def test_adversarial_dataset(trained):
  model, _, v, x, y, _ = trained
  adv, info = adversarial.adversarial_dataset(model, v, x[:50], y[:50], jax.random.key(5),
                                              eps=0.1, steps=3, chunk_size=32)
  assert adv.dtype == np.float32 and adv.shape == x[:50].shape
  assert info["mean_linf"] <= 0.1 + 1e-6 and 0 < info["mean_l2"]
  assert 0 <= info["success_rate"] <= 1 and info["seconds"] > 0
  again, _ = adversarial.adversarial_dataset(model, v, x[:50], y[:50], jax.random.key(5),
                                             eps=0.1, steps=3, chunk_size=32)
  np.testing.assert_array_equal(adv, again)  # deterministic per key
  fg, fg_info = adversarial.adversarial_dataset(model, v, x[:50], y[:50], jax.random.key(5),
                                                method="fgsm", eps=0.1, steps=1)
  assert fg_info["steps"] == 1 and np.abs(fg - x[:50]).max() <= 0.1 + 1e-6


def test_gradient_alignment(trained):
  model, _, v, x, y, _ = trained
  out = alignment.gradient_alignment(model, v, x[:60], y[:60], layer="conv1", steps=3,
                                       batch_size=40)
  for kind in ("untargeted", "targeted"):
    for dream in ("logit", "layer"):
      for attack in ("gradient", "fgsm", "pgd"):
        s = out[kind][dream][attack]
        assert -1 <= s["mean"] <= 1 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
        chex.assert_shape(out["per_image"][f"{kind}/{dream}/{attack}"], (60,))
  # With the documented signs, the own-class logit dream points along the attack
  # (well above chance), and the headline numbers are the untargeted gradients.
  assert out["logit"]["mean"] > 10 * out["chance_std"]
  assert out["logit"] == out["untargeted"]["logit"]["gradient"]
  assert out["layer"] == out["untargeted"]["layer"]["gradient"]
  with pytest.raises(ConfigError, match="layer='conv9'"):
    alignment.gradient_alignment(model, v, x, y, layer="conv9")


@pytest.mark.parametrize("kwargs,name", [
    (dict(eps=-0.1, steps=5), "attack.eps=-0.1"),
    (dict(eps=0.1, steps=0), "attack.steps=0"),
    (dict(eps=0.1, steps=5, norm="l3"), "attack.norm='l3'"),
    (dict(eps=0.1, steps=5, restarts=0), "attack.restarts=0"),
])
def test_bad_settings_are_refused_before_compute(kwargs, name):
  # None for model, variables and images: any compute would fail differently.
  with pytest.raises(ConfigError, match=name.replace("(", r"\(")):
    adversarial.pgd(None, None, None, None, None, **kwargs)


@pytest.mark.parametrize("kwargs,name", [
    (dict(method="pgd", eps=0.1, steps=3, fraction=1.5), "attack.fraction=1.5"),
    (dict(method="pgd", eps=0.1, steps=3, fraction=-0.1), "attack.fraction=-0.1"),
    (dict(method="cw", eps=0.1, steps=3, fraction=0.5), "attack.method='cw'"),
    (dict(method="fgsm", eps=-1.0, steps=3, fraction=0.5), "attack.eps=-1.0"),
])
def test_bad_training_settings_are_refused(kwargs, name):
  with pytest.raises(ConfigError, match=name):
    adversarial.adversarial_batch_transform(None, **kwargs)
