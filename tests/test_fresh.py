"""Fresh generator samples in every batch: new images every step from one traced step, a
bank read through before any sample repeats, in-step pseudo-labels, and the fresh-sample
arms of a tiny study."""

import os
import pathlib

import jax
import numpy as np
import pytest

from dreamjax import data, generators
from dreamjax.plumbing import sharding
from dreamjax.training import models, train
from dreamjax.configs import study as study_configs
from dreamjax.plumbing.fileio import read_jsonl
from dreamjax.generators import fresh as fresh_lib
from dreamjax.study.run import artefacts, context, fresh, generate

NEW_ARMS = ("vae_small_online", "gan_small_online", "vae_pool_online", "gan_pool_online",
            "diffusion_small_online", "diffusion_pool_online")


def _context(workdir, real_data_dir, seeds=(0, 1)):
  cfg = study_configs.get_config("tiny")
  raw = data.load_dataset("fashion_mnist", real_data_dir)
  splits = tuple(data.make_splits(raw, num_labeled=100, val_size=cfg.val_size, seed=s)
                 for s in seeds)
  return context.Context(config=cfg, workdir=str(workdir), mesh=sharding.default(None),
                         budget=100, seeds=seeds, splits=splits,
                         model=models.make_model(cfg.model, 10), oracle=None,
                         log=lambda m: None)


def _fit(ctx, transform, steps):
  """Trains the budget's classifier on the labeled sets with ``transform``; returns the
  first ``online_fraction`` rows of every batch after it, as ``(step, rows, labels)`` in
  the order the steps ran, and how many times the step was traced."""
  n = fresh._rows(ctx)  # pylint: disable=protected-access
  traces, seen = [], []

  def record(step, rows, labels):
    seen.append((int(step), np.asarray(rows), np.asarray(labels)))

  def fn(state, images, labels, key, data):
    traces.append(None)  # runs while the step is traced, never when it runs
    images, labels = transform.fn(state, images, labels, key, data)
    jax.debug.callback(record, state.step, images[:n], labels[:n])
    return images, labels

  tcfg = ctx.train_cfg.copy_and_resolve_references()
  tcfg.steps, tcfg.warmup_steps, tcfg.eval_every, tcfg.checkpoint_every = steps, 1, 0, 0
  tcfg.log_every = steps
  images, labels, counts = ctx.training_sets({})
  train.fit(ctx.model, tcfg, images, labels, counts=counts, seeds=ctx.seeds,
            batch_transform=train.SeedTransform(fn, transform.data, transform.info),
            progress=lambda m: None)
  return seen, len(traces)


def _rows_of(images) -> set[bytes]:
  return {np.asarray(x, np.float32).tobytes() for x in images}


def test_fresh_samples_are_new_in_every_step_of_one_traced_step(tmp_path, real_data_dir):
  ctx = _context(tmp_path, real_data_dir)
  transform = fresh.small_online(ctx, "vae_small_online")
  seen, traces = _fit(ctx, transform, steps=3)
  assert traces == 1  # every step of every seed runs one compiled program
  assert [s for s, _, _ in seen] == [0, 0, 1, 1, 2, 2]  # the seeds in turn, every step
  real = set().union(*(_rows_of(s.labeled_images) for s in ctx.splits))
  n = fresh._rows(ctx)  # pylint: disable=protected-access
  for step, rows, _ in seen:
    assert len(_rows_of(rows)) == n and not _rows_of(rows) & real, step  # generated, new
  for (_, a, _), (_, b, _) in zip(seen, seen[2:]):  # a seed's next step draws again
    assert not _rows_of(a) & _rows_of(b)
  # Seed 0's generator is not seed 1's: the step reads each seed's own weights.
  assert not _rows_of(seen[0][1]) & _rows_of(seen[1][1])


def test_seeds_with_generators_of_their_own_train_alike_in_turn_and_in_one_program(
    tmp_path, real_data_dir, monkeypatch):
  """Accelerators run the seeds as one vmapped program, the CPU one after the other; each
  seed reads its own generator's weights either way."""
  from dreamjax.training import seeds  # pylint: disable=g-import-not-at-top
  ctx = _context(tmp_path, real_data_dir)
  transform = fresh.small_online(ctx, "gan_small_online")
  tcfg = ctx.train_cfg.copy_and_resolve_references()
  tcfg.steps, tcfg.warmup_steps, tcfg.log_every, tcfg.eval_every = 4, 1, 4, 0
  tcfg.checkpoint_every = 0
  images, labels, counts = ctx.training_sets({})
  fit = lambda t, seed_list, x, y, c: train.fit(ctx.model, tcfg, x, y, counts=c,
                                                 seeds=seed_list, batch_transform=t,
                                                 progress=lambda m: None)
  in_turn = fit(transform, ctx.seeds, images, labels, counts)
  monkeypatch.setitem(seeds.PROGRAMS["cpu"], "classifier_step", "vmap")
  together = fit(transform, ctx.seeds, images, labels, counts)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
               together.state.params, in_turn.state.params)
  # Seed 1 alone, with its own generator only, trains as it does beside seed 0.
  one = train.SeedTransform(transform.fn, train.stack([train.unstack(transform.data, 1)]))
  alone = fit(one, (1,), images[1:], labels[1:], counts[1:])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
               train.unstack(together.state.params, 1), train.unstack(alone.state.params, 0))


def test_a_fresh_arm_and_its_stored_twin_train_one_generator_whichever_comes_first(
    tmp_path, real_data_dir, monkeypatch):
  keys = [artefacts.arm_key(seed, "gan_small") for seed in (0, 1)]
  # Workdir a: the fresh arm first, then its twin; workdir b: the other way round.
  a = _context(tmp_path / "a", real_data_dir)
  gcfg, params, seconds, _ = fresh._small_generators(a, "gan_small_online")  # pylint: disable=protected-access
  assert (tmp_path / "a" / "N100" / "gan_small" / "generator_seed1.msgpack").exists()
  b = _context(tmp_path / "b", real_data_dir)
  stored_b = generate.small_generators(b, "gan_small", [0, 1], list(b.splits), keys)
  trained = []
  real_train = generate.train_small
  monkeypatch.setattr(generate, "train_small", lambda *x: trained.append(x) or real_train(*x))
  stored_a = generate.small_generators(a, "gan_small", [0, 1], list(a.splits), keys)
  _, params_b, seconds_b, _ = fresh._small_generators(b, "gan_small_online")  # pylint: disable=protected-access
  assert not trained  # each second comer read the first one's generators
  jax.tree.map(np.testing.assert_array_equal, params_b, params)  # trained alike, to the bit
  for seed, s, key in zip((0, 1), a.splits, keys):
    np.testing.assert_array_equal(stored_a[seed].images, stored_b[seed].images)
    twin = generators.sample_gan(gcfg, params[seed], jax.random.split(key)[1],
                                 labels=s.labeled_labels)
    np.testing.assert_array_equal(twin, stored_a[seed].images)
    assert stored_a[seed].seconds >= seconds[seed]  # its cost counts the training it read
  assert all(seconds_b[seed] <= stored_b[seed].seconds for seed in (0, 1))
  # A generator kept in the fresh arm's own folder (workdirs before the twins shared one)
  # is read there.
  (tmp_path / "a" / "N100" / "gan_small_online").mkdir()
  for seed in (0, 1):
    os.rename(tmp_path / "a" / "N100" / "gan_small" / f"generator_seed{seed}.msgpack",
              tmp_path / "a" / "N100" / "gan_small_online" / f"generator_seed{seed}.msgpack")
  _, again, _, _ = fresh._small_generators(a, "gan_small_online")  # pylint: disable=protected-access
  assert not trained
  jax.tree.map(np.testing.assert_array_equal, again, params)


def test_a_bank_is_read_through_before_any_sample_repeats(tmp_path, real_data_dir):
  ctx = _context(tmp_path, real_data_dir)
  sizes = {0: 70, 1: 45}  # not multiples of the 16 rows a step takes, and unequal
  banks = {}
  for seed, size in sizes.items():  # each image tells its seed and its row by its value
    value = 0.5 * seed + (np.arange(size) + 1) / 1000
    banks[seed] = (np.broadcast_to(value[:, None, None, None], (size, 28, 28, 1))
                   .astype(np.float32), (np.arange(size) % 10).astype(np.int32))
  transform = fresh._bank_transform(ctx, "diffusion_small_online", banks,  # pylint: disable=protected-access
                                    {seed: {} for seed in sizes})
  assert transform.info["bank_size"] == [70, 45]
  seen, traces = _fit(ctx, transform, steps=12)
  assert traces == 1
  drawn = {0: [], 1: []}
  for _, rows, labels in seen:
    values = rows[:, 0, 0, 0]
    seed = int(values[0] > 0.5)
    row = np.rint((values - 0.5 * seed) * 1000).astype(int) - 1
    np.testing.assert_array_equal(labels, row % 10)  # each sample keeps its label
    drawn[seed] += row.tolist()
  for seed, size in sizes.items():
    order = drawn[seed]
    assert len(order) == 12 * 16 > 2 * size
    assert sorted(order[:size]) == list(range(size))  # every sample once before any repeat
    assert order[size:] == order[:len(order) - size]  # then the same order again


def test_in_step_pseudo_labels_give_each_slot_a_distinct_confident_sample_of_its_class():
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.full(5, 0.3), size=60).astype(np.float32)
  targets = rng.integers(0, 5, 24).astype(np.int32)
  threshold = 0.6
  index, found = (np.asarray(a) for a in fresh_lib.match_classes(probs, targets, threshold))
  confident = probs.max(-1) >= threshold
  label = probs.argmax(-1)
  assert len(set(index[found])) == found.sum()  # no sample fills two slots
  assert np.all(label[index[found]] == targets[found])
  assert np.all(confident[index[found]])
  for c in range(5):
    slots, pool = targets == c, np.flatnonzero(confident & (label == c))
    assert found[slots].sum() == min(slots.sum(), len(pool))  # filled where it can be
    best = pool[np.argsort(-probs[pool].max(-1), kind="stable")][:found[slots].sum()]
    assert sorted(index[slots & found]) == sorted(best)  # the most confident first
  assert 0 < found.sum() < len(found)


def test_the_fresh_arms_run_in_a_tiny_study(tiny_study):
  """The fresh-sample arms' cells of the every-arm tiny study (tests/conftest.py)."""
  cfg = study_configs.get_config("tiny")
  assert set(NEW_ARMS) <= set(cfg.arms)  # every arm, by default
  workdir = pathlib.Path(tiny_study)
  cells = {r["cell"]: r for r in read_jsonl(str(workdir / "results.jsonl"))}
  steps, batch = int(cfg.train.steps), int(cfg.train.batch_size)
  n = batch // 2  # online_fraction 0.5
  for arm in NEW_ARMS:
    cell = cells[f"N100/{arm}"]
    assert cell["status"] == "ok", cell.get("error")
    assert cell["source"] == "generated" and cell["label_preservation"] is not None
    assert len(cell["cas"]) == 2 and cell["generator_history"]
    info, cost = cell["transform_info"], cell["cost"]
    assert info["rows_per_batch"] == n
    assert cost["gen_image_steps"] == 30 * 16  # the tiny preset's generator steps × batch
    assert cost["train_image_steps"] == steps * batch
    assert cell["timing"]["gen_seconds"] > 0
  assert cells["N100/vae_small_online"]["cost"]["sampled_images"] == steps * n
  pool = cells["N100/gan_pool_online"]
  assert pool["cost"]["sampled_images"] == pool["cost"]["labeler_forward_images"] == steps * 4 * n
  assert all(0 < f <= 1 for f in pool["transform_info"]["filled_fraction"])
  small_bank = cells["N100/diffusion_small_online"]
  assert small_bank["transform_info"]["bank_size"] == [20 * 100] * 2
  assert small_bank["cost"]["sampled_images"] == 20 * 100
  pool_bank = cells["N100/diffusion_pool_online"]
  assert all(0 < b <= 20 * 100 for b in pool_bank["transform_info"]["bank_size"])
  assert pool_bank["cost"]["sampled_images"] >= 20 * 100
  # The pool arms sample their stored twins' generators, trained once and kept as theirs.
  for twin in ("vae_pool", "gan_pool", "diffusion_pool"):
    assert (workdir / "artefacts" / f"{twin}.msgpack").exists()
  assert (workdir / "N100" / "diffusion_small_online" / "bank_seed1.npz").exists()
  # A fresh arm whose stored twin is not in its study: tests/test_study_rgb.py.


def test_the_length_chooser_refuses_a_fresh_sample_arm():
  """Its generator is trained and kept by a study's cell; the chooser has no workdir."""
  from dreamjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import choose  # pylint: disable=g-import-not-at-top
  cfg = study_configs.get_config("tiny")
  with pytest.raises(ConfigError, match="'vae_small_online' needs more than the labeled set"):
    choose.choose_length(cfg, None, 100, lengths=(10, 20), arms=("baseline", "vae_small_online"))
