import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from dreamjax import data as data_lib
from dreamjax.configs import classifier as classifier_config
from dreamjax.runs import classifier


def _run(script, *flags):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", script), *flags],
                        capture_output=True, text=True, cwd=REPO, timeout=600)


def test_attack_tiny_run_end_to_end(tmp_path, synthetic_dir):
  out = _run("attack.py", "--config", "dreamjax/configs/attack.py:tiny",
             f"--workdir={tmp_path}", f"--config.dataset=idx:{synthetic_dir}",
             "--config.num_labeled=50", "--config.val_size=20", "--config.num_seeds=2")
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.load(open(tmp_path / "results.json"))
  assert len(res["robust_accuracy_per_seed"]) == 2
  assert all(r <= c for r, c in zip(res["robust_accuracy_per_seed"],
                                     res["clean_accuracy_per_seed"]))
  adv = data_lib.augfile.load(str(tmp_path / "adversarial.npz"), num_classes=10,
                              image_shape=(28, 28, 1))
  assert len(adv) == 50 and adv.metadata["method"] == "adversarial/pgd"
  assert np.all(adv.source_index >= 0) and res["offline"]["mean_linf"] <= 0.1 + 1e-6
  assert -1 <= res["alignment"]["logit"]["mean"] <= 1
  assert "robust accuracy" in out.stdout and "C3 cosine" in out.stdout
  # The adversarial file is an augmentation arm for train_classifier.py.
  trained = _run("train_classifier.py", "--config", "dreamjax/configs/classifier.py:tiny",
                 f"--workdir={tmp_path}/clf", f"--config.dataset=idx:{synthetic_dir}",
                 "--config.num_labeled=50", "--config.val_size=20",
                 f"--config.augment_file={tmp_path}/adversarial.npz", "--config.augment=pgd",
                 "--config.attack.steps=2")
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert json.load(open(tmp_path / "clf" / "results.json"))["num_train_images"] == 100


@pytest.mark.parametrize("choice", ["classical", "noise", "fgsm"])
def test_training_with_each_augment_choice(tmp_path, synthetic_dir, choice):
  config = classifier_config.get_config("tiny")
  config.dataset, config.num_labeled, config.val_size = f"idx:{synthetic_dir}", 50, 20
  config.train.steps, config.train.checkpoint_every, config.train.eval_every = 12, 0, 0
  config.augment = choice
  res = classifier.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= res["test_accuracy"] <= 1.0 and res["config"]["augment"] == choice
  assert np.isfinite(res["history"][-1]["loss"]).all()


@pytest.mark.parametrize("script,flag,name", [
    ("attack.py", "--config.attack.eps=-1", "attack.eps=-1"),
    ("attack.py", "--config.robust.steps=0", "robust.steps=0"),
    ("train_classifier.py", "--config.attack.fraction=2.0", "attack.fraction=2.0"),
])
def test_bad_settings_are_clear_errors(tmp_path, script, flag, name):
  preset = "attack.py:tiny" if script == "attack.py" else "classifier.py:tiny"
  extra = ["--config.augment=pgd"] if script == "train_classifier.py" else []
  out = _run(script, "--config", f"dreamjax/configs/{preset}", f"--workdir={tmp_path}",
             flag, *extra)
  assert out.returncode == 2, out.stderr[-2000:]
  assert name in out.stderr and "Traceback" not in out.stderr
