import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dreamjax.methods import pretrain
from dreamjax.configs import generator as generator_config
from dreamjax.data import augfile
from dreamjax.errors import ConfigError
from dreamjax.runs import generator
from conftest import REPO


def _run(*flags):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", "train_generator.py"),
                         "--config", "dreamjax/configs/generator.py:tiny", *flags],
                        capture_output=True, text=True, cwd=REPO, timeout=600)


def test_unconditional_vae_on_pool_end_to_end(tmp_path, real_data_dir):
  out = _run(f"--workdir={tmp_path}", f"--config.data_dir={real_data_dir}", "--model=vae",
             "--source=pool")
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.load(open(tmp_path / "results.json"))
  assert all(np.isfinite(v) for v in res["final_losses"].values())
  fd = res["frechet"]
  assert 0 <= fd["real_train_vs_test"] < fd["samples_vs_test"]
  aug = augfile.load(str(tmp_path / "augmented.npz"), num_classes=10, image_shape=(28, 28, 1))
  assert aug.metadata["pseudo_label_threshold"] == 0.2
  assert aug.metadata["kept_fraction"] == pytest.approx(len(aug) / 100)  # 100 labeled × M=1
  for name in ("samples.png", "losses.png", "checkpoint"):
    assert os.path.exists(tmp_path / name)
  assert "Fréchet" in out.stdout


def test_conditional_gan_and_pretrained_trunk_in_process(tmp_path, real_data_dir):
  cfg = generator_config.get_config("tiny")
  cfg.data_dir = real_data_dir
  cfg.update(model="gan", source="labeled", conditional=True, steps=5, fid_num=0)
  res = generator.train_and_evaluate(cfg, str(tmp_path / "gan"))
  aug = augfile.load(str(tmp_path / "gan" / "augmented.npz"), num_classes=10)
  assert aug.metadata["label_source"] == "conditioning label"
  assert np.bincount(aug.labels).tolist() == [10] * 10  # the labeled set's balance
  assert "frechet" not in res
  cfg.update(model="ae", source="pool", conditional=False, steps=5)
  generator.train_and_evaluate(cfg, str(tmp_path / "ae"))
  from dreamjax.training import models
  model = models.make_model(cfg.classifier, 10)
  init = pretrain.init_fn_from_checkpoint(str(tmp_path / "ae"), model, (28, 28, 1))
  assert set(init(__import__("jax").random.key(0))["params"]) >= {"Conv_0", "Dense_0", "Head"}


@pytest.mark.parametrize("field,value,message", [
    ("model", "flow", "model='flow' is unknown"),
    ("source", "web", "source='web' is unknown"),
    ("conditional", True, "conditional=True needs labels"),
    ("pseudo_label_threshold", 1.5, "pseudo_label_threshold=1.5"),
])
def test_bad_settings_refused_before_compute(tmp_path, field, value, message):
  cfg = generator_config.get_config("tiny")
  cfg[field] = value
  cfg.data_dir = str(tmp_path / "no-data-needed")  # refused before any data is read
  with pytest.raises(ConfigError, match=message):
    generator.train_and_evaluate(cfg, str(tmp_path))


def test_bad_flag_is_a_clear_error(tmp_path):
  out = _run(f"--workdir={tmp_path}", "--model=flow")
  assert out.returncode == 2
  assert "model='flow'" in out.stderr and "Traceback" not in out.stderr
