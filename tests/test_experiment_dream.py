import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from dreamjax.runs import common as run_common
from dreamjax.data import augfile
from conftest import REPO


def _run(*flags):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", "dream.py"), *flags],
                        capture_output=True, text=True, cwd=REPO, timeout=600)


def test_tiny_run_end_to_end(tmp_path, real_data_dir):
  out = _run("--config", "dreamjax/configs/dream.py:tiny", f"--workdir={tmp_path}",
             f"--config.data_dir={real_data_dir}", "--config.max_images=70",
             "--config.grid_presets=('strong',)")
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.load(open(tmp_path / "results.json"))
  assert res["count"] == 70 and res["seconds"] > 0 and res["image_steps_per_s"] > 0
  assert 0 < res["mean_linf"] <= 1 and res["mean_l2"] > 0 and res["mean_objective_gain"] > 0
  assert res["config"]["dream"]["steps"] == 3
  aug = augfile.load(str(tmp_path / "augmented.npz"), num_classes=10, image_shape=(28, 28, 1))
  assert len(aug) == 70 and aug.metadata["method"] == "deep_dream"
  assert aug.metadata["dream"]["step_size"] == 0.005 and aug.metadata["split"] == "labeled"
  assert np.all(aug.source_index >= 0)
  # Labels are the sources' labels, in the labeled split's order.
  assert np.array_equal(np.bincount(aug.labels, minlength=10) > 0, np.ones(10, bool))
  for name in ("grid.png", "zoom.png"):
    assert os.path.getsize(tmp_path / name) > 1000
  assert "dreamed 70 images" in out.stdout


def test_bad_dream_setting_is_a_clear_error(tmp_path, real_data_dir):
  out = _run("--config", "dreamjax/configs/dream.py:tiny", f"--workdir={tmp_path}",
             f"--config.data_dir={real_data_dir}", "--config.dream.layers=('conv7',)")
  assert out.returncode == 2, out.stderr[-2000:]
  assert "'conv7'" in out.stderr and "conv0, conv1, dense0, logits" in out.stderr
  assert "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "classifier")  # refused before training


def test_bad_split_is_a_clear_error(tmp_path):
  out = _run("--config", "dreamjax/configs/dream.py:tiny", f"--workdir={tmp_path}",
             "--config.split=pool")
  assert out.returncode == 2 and "split='pool'" in out.stderr and "labeled, val, test" in out.stderr


def test_dreams_with_a_train_classifier_checkpoint(tmp_path, real_data_dir):
  from dreamjax.configs import classifier as classifier_configs
  from dreamjax.runs import classifier as classifier_run
  from dreamjax.runs import dream as dream_run
  clf = classifier_configs.get_config("tiny")
  clf.data_dir, clf.num_seeds = real_data_dir, 2
  trained = classifier_run.train_and_evaluate(clf, str(tmp_path / "clf"))
  model, variables = run_common.load_classifier(str(tmp_path / "clf"), 10, (28, 28, 1))
  assert model.conv_features == tuple(clf.model.conv_features)
  chex.assert_tree_all_finite(variables)
  assert jax.tree.leaves(variables["params"])[0].ndim < 5  # one seed, not the stack
  from dreamjax.configs import dream as dream_configs
  cfg = dream_configs.get_config("tiny")
  cfg.data_dir, cfg.classifier_dir = real_data_dir, str(tmp_path / "clf")
  cfg.max_images, cfg.zoom_frames, cfg.grid_images, cfg.split = 20, 0, 0, "test"
  res = dream_run.dream_split(cfg, str(tmp_path / "dream"))
  # The checkpoint's first seed is the classifier the dreams were measured with.
  assert res["classifier_accuracy_on_sources"] == pytest.approx(
      trained["test_accuracy_per_seed"][0], abs=0.25)
  aug = augfile.load(str(tmp_path / "dream" / "augmented.npz"))
  assert len(aug) == 20 and np.all(aug.source_index == -1)
  assert not os.path.exists(tmp_path / "dream" / "classifier")
