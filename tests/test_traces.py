"""The hot steps compile once: repeated calls with the same shapes never retrace.

Each test counts how often a function is traced (its Python body runs once per
trace) across several calls of the loop that uses it.
"""

import contextlib
import os

import chex
import jax
import numpy as np

from dreamjax.training import evaluate, models, train
from dreamjax.configs import classifier
from conftest import on_mesh, synthetic_images


def _setup(steps=6):
  cfg = classifier.get_config("tiny")
  cfg.train.steps = steps
  cfg.train.warmup_steps = 1
  cfg.train.log_every = 2
  cfg.train.eval_every = 0
  x, y = synthetic_images(120)
  return cfg, models.make_model(cfg.model, 10), x[..., None] / np.float32(255), y.astype(np.int32)


def test_fit_traces_its_step_once_whatever_the_seeds():
  cfg, model, x, y = _setup()
  traced = []

  def count_traces(state, images, labels, key):
    traced.append(images.shape)  # runs at trace time only
    return images, labels

  train.fit(model, cfg.train, x, y, seeds=[0, 1], batch_transform=count_traces)
  # CPU: one program that each seed runs in turn; accelerators: one copy per seed, vmapped.
  copies = 1 if jax.default_backend() == "cpu" else 2
  assert traced == [(cfg.train.batch_size, 28, 28, 1)] * copies


def test_predict_compiles_once_for_every_chunk():
  cfg, model, x, y = _setup()
  traced = []

  class Counted:
    def apply(self, *args, **kwargs):
      traced.append(1)
      return model.apply(*args, **kwargs)

  variables = train.stack([models.init_variables(model, jax.random.key(0), (28, 28, 1))])
  counted = Counted()
  logits = evaluate.logits(counted, variables, x, batch_size=50)  # chunks 50, 50, padded 20
  chex.assert_shape(logits, (1, 120, 10))
  evaluate.logits(counted, variables, x[:70], batch_size=50)
  assert len(traced) == 1


def test_map_seeds_equals_vmap_and_traces_once():
  cfg, model, x, y = _setup()
  tx = train.make_optimizer(cfg.train)
  keys = train.seed_keys([3, 4, 5])
  state = jax.vmap(lambda k: train.create_state(
      model, tx, models.init_variables(model, k, (28, 28, 1))))(keys)
  step = train.make_train_step(model, 16)
  axes = (0, None, None, 0, 0)
  counts = np.full((3,), len(y), np.int32)
  unrolled = jax.jit(chex.assert_max_traces(train.map_seeds(step, in_axes=axes), n=1))
  vmapped = jax.jit(jax.vmap(step, in_axes=axes))
  s_u, s_v = on_mesh(state), on_mesh(state)
  x, y, counts, keys = on_mesh((x, y, counts, keys))
  for i in range(3):
    s_u, m_u = unrolled(s_u, x, y, counts, keys)
    s_v, m_v = vmapped(s_v, x, y, counts, keys)
  chex.assert_shape(m_u["loss"], (3,))
  chex.assert_tree_all_finite(s_u.params)
  chex.assert_trees_all_close(s_u.params, s_v.params, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(m_u, m_v, rtol=1e-4, atol=1e-5)


@contextlib.contextmanager
def _traces():
  """The names of the functions JAX traces to jaxprs inside the block."""
  traced = []

  def listen(event, duration_secs, **kwargs):
    del duration_secs
    if event == "/jax/core/compile/jaxpr_trace_duration":
      traced.append(str(kwargs.get("fun_name", "?")))

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield traced
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)


def test_augmentation_built_twice_from_equal_configs_compiles_once():
  """The study builds the classical / noise transform afresh for every seed's
  offline set; equal settings must reuse one compiled program."""
  from dreamjax.methods import augment  # pylint: disable=g-import-not-at-top
  _, _, x, y = _setup()
  for make, cfg in ((augment.classical_fn, augment.classical_config()),
                    (augment.noise_fn, augment.noise_config())):
    assert make(cfg) is make(cfg.copy_and_resolve_references())
    first = augment.offline(x[:8], y[:8], jax.random.key(0), make(cfg))[0]
    with _traces() as traced:
      again = augment.offline(x[:8], y[:8], jax.random.key(0), make(cfg))[0]
    assert "fn" not in traced, traced  # the transform itself is named fn
    np.testing.assert_array_equal(first, again)
  changed = augment.classical_config()
  changed.rotate_degrees += 1
  assert augment.classical_fn(changed) is not augment.classical_fn(augment.classical_config())


def test_xla_flags_are_set_once_and_never_override_the_user(monkeypatch):
  from dreamjax import _xla
  monkeypatch.delenv("DREAMJAX_NO_XLA_FLAGS", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
  _xla.configure()
  _xla.configure()
  flags = os.environ["XLA_FLAGS"].split()
  assert flags[0] == "--xla_dump_to=/tmp/x"
  assert flags.count("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-reduce") == 1
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=all")
  _xla.configure()
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=all"
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setenv("DREAMJAX_NO_XLA_FLAGS", "1")
  _xla.configure()
  assert os.environ["XLA_FLAGS"] == ""
