"""The FixMatch arm: its unlabeled term in the train step, its cell in a tiny study."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import on_mesh, synthetic_images
from dreamjax.methods import augment, semi
from dreamjax.training import models, seeds, train
from dreamjax.configs import classifier
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.plumbing.fileio import read_jsonl
from dreamjax.study.run import runner

WEAK = augment.shift_fn(2)
STRONG = augment.strong_fn(augment.strong_config())


def _data(n=120):
  x, y = synthetic_images(n, seed=6)
  return (x[..., None] / np.float32(255)), y.astype(np.int32)


def test_the_semi_supervised_step_is_traced_once_and_trains_on_the_unlabeled_batch():
  chex.clear_trace_counter()
  cfg = classifier.get_config("tiny")
  model = models.make_model(cfg.model, 10)
  x, y = _data()
  state = train.create_state(model, optax.adam(1e-3),
                             models.init_variables(model, jax.random.key(0), (28, 28, 1)))
  loss = chex.assert_max_traces(semi.fixmatch_loss(WEAK, STRONG, 0.0, 1.0), n=1)
  step = jax.jit(train.make_train_step(model, 8, batch_transform=augment.online_transform(WEAK),
                                       unlabeled_loss=loss, unlabeled_batch_size=16))
  state, x, y, u = on_mesh((state, jnp.asarray(x[:40]), jnp.asarray(y[:40]),
                            jnp.asarray(x[40:])))
  for i in range(3):
    state, metrics = step(state, x, y, 40, u, 80, jax.random.key(i))
  chex.assert_tree_all_finite(metrics)
  assert float(metrics["mask_rate"]) == 1.0 and float(metrics["unlabeled_loss"]) > 0
  assert float(metrics["loss"]) == pytest.approx(
      float(metrics["labeled_loss"]) + float(metrics["unlabeled_loss"]), rel=1e-6)


def _fit(unlabeled, seed_list=(0,)):
  cfg = classifier.get_config("tiny")
  cfg.train.steps, cfg.train.warmup_steps, cfg.train.log_every = 6, 1, 3
  cfg.train.eval_every = cfg.train.checkpoint_every = 0
  x, y = _data()
  return train.fit(models.make_model(cfg.model, 10), cfg.train, x[:40], y[:40],
                   seeds=list(seed_list), batch_transform=augment.online_transform(WEAK, 1.0),
                   unlabeled=unlabeled, progress=lambda m: None)


def test_an_empty_mask_trains_as_the_labeled_batch_alone():
  """At threshold 1.0 no pseudo-label is confident enough: the unlabeled term is zero,
  and training is plain training on the same labeled batches (the unlabeled batch
  draws from a key of its own). Not bit for bit: the step is another XLA program,
  whose fusions may round the same gradient differently in the last place."""
  pool = _data()[0][40:]
  plain = _fit(None)
  empty = _fit(train.Unlabeled(pool, 16, semi.fixmatch_loss(WEAK, STRONG, 1.0, 1.0)))
  assert all(np.all(np.asarray(r["mask_rate"]) == 0) for r in empty.history)
  assert all(np.all(np.asarray(r["unlabeled_loss"]) == 0) for r in empty.history)
  chex.assert_trees_all_close(empty.state.params, plain.state.params, atol=1e-6, rtol=1e-5)
  np.testing.assert_allclose([r["loss"] for r in empty.history],
                             [r["loss"] for r in plain.history], rtol=1e-5)
  used = _fit(train.Unlabeled(pool, 16, semi.fixmatch_loss(WEAK, STRONG, 0.0, 1.0)))
  leaf = lambda res: np.asarray(jax.tree.leaves(res.state.params)[0])
  assert np.max(np.abs(leaf(used) - leaf(plain))) > 1e-4  # the term does train when it fires


def test_seeds_with_pools_of_their_own_train_alike_in_turn_and_in_one_program(monkeypatch):
  """Accelerators run the seeds as one vmapped program, the CPU one after the other; the
  unlabeled images (one padded pool per seed) reach each seed alike either way."""
  pool = _data()[0][40:]
  per_seed = np.stack([pool, np.concatenate([pool[:50], np.zeros_like(pool[50:])])])
  unlabeled = train.Unlabeled(per_seed, 16, semi.fixmatch_loss(WEAK, STRONG, 0.0, 1.0),
                              counts=[len(pool), 50])
  in_turn = _fit(unlabeled, (0, 1))
  monkeypatch.setitem(seeds.PROGRAMS["cpu"], "classifier_step", "vmap")
  together = _fit(unlabeled, (0, 1))
  chex.assert_trees_all_close(together.state.params, in_turn.state.params, atol=1e-5, rtol=1e-4)
  alone = _fit(train.Unlabeled(pool[:50], 16, unlabeled.loss), (1,))  # seed 1's pool alone
  chex.assert_trees_all_close(train.unstack(together.state.params, 1), train.unstack(
      alone.state.params, 0), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("field,value", [("mu", 0), ("threshold", 1.5),
                                         ("lambda_u", -1.0)])
def test_bad_fixmatch_settings_are_refused(field, value):
  cfg = study_configs.get_config("tiny")
  cfg.arm_settings.fixmatch[field] = value
  with pytest.raises(ConfigError, match=f"arm_settings.fixmatch.{field}={value}"):
    runner.validate_config(cfg)


def test_fixmatch_runs_in_a_tiny_study(tmp_path, real_data_dir):
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "fixmatch")
  runner.run_study(cfg, str(tmp_path), log=lambda m: None)
  cells = {r["cell"]: r for r in read_jsonl(str(tmp_path / "results.jsonl"))}
  cell, base = cells["N100/fixmatch"], cells["N100/baseline"]
  assert cell["status"] == "ok" and len(cell["test_accuracy"]) == 2
  steps, batch = int(cfg.train.steps), int(cfg.train.batch_size)
  unlabeled = steps * 3 * batch  # mu = 3 pool images per labeled one, every step
  assert cell["cost"]["unlabeled_image_steps"] == unlabeled
  assert cell["cost"]["train_image_steps"] == base["cost"]["train_image_steps"] + unlabeled
  assert cell["unlabeled_info"]["mu"] == 3 and cell["unlabeled_info"]["threshold"] == 0.0
  assert cell["history"][-1]["step"] == base["history"][-1]["step"] == steps
  assert all(np.mean(r["mask_rate"]) > 0 for r in cell["history"])  # tiny: threshold 0
