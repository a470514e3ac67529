"""A user's own data: the tiny study, every arm, on an RGB 32×32 dataset that TFDS
prepared as array_record files, read as `--config.dataset=tfds:NAME` reads it.

The dataset is generated (no download): each class is a coloured bar at its own
height, so the tiny classifiers learn it. The study runs as a user runs it, in
its own process that never saw the builder class.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import REPO
from dreamjax.configs import arms as arms_lib
from dreamjax.configs import study as study_configs
from dreamjax.plumbing.fileio import read_jsonl

NAME = "dreamjax_tiny_colour"
SHAPE = (32, 32, 3)


def colour_bars(n: int, seed: int, num_classes: int = 10):
  """uint8 ``[n, 32, 32, 3]`` images and their labels: class c is a bar at its own
  height in channel c mod 3, over dim noise in every channel."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % num_classes
  rng.shuffle(labels)
  images = rng.integers(0, 60, (n, *SHAPE), dtype=np.uint8)
  size = SHAPE[0]
  for i, c in enumerate(labels):
    row = 2 + (c * (size - 6)) // (num_classes - 1)
    images[i, row:row + 3, 3:size - 3, c % 3] = 230
  return images, labels


class DreamjaxTinyColour(tfds.core.GeneratorBasedBuilder):
  """Ten classes of 32×32 RGB images, prepared as TFDS prepares any dataset."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=SHAPE, encoding_format="png"),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {"train": self._generate_examples(600, seed=1),
            "test": self._generate_examples(200, seed=2)}

  def _generate_examples(self, n, seed):
    import PIL.Image  # pylint: disable=g-import-not-at-top  (only where TFDS encodes PNGs)
    images, labels = colour_bars(n, seed)
    for i in range(n):
      yield i, {"image": PIL.Image.fromarray(images[i]), "label": int(labels[i])}


# One arm of every kind, source, transform and generator family (the test below keeps
# this so as the registry grows): the arms this leaves out run the same code with
# other settings, on Fashion-MNIST in the every-arm tiny study (tests/conftest.py).
# gan_small_online and vae_pool_online run without their stored twins.
RGB_ARMS = ("baseline", "classical", "classical_online", "noise_matched_online",
            "dream_strong", "dream_bn", "dream_online", "dream_sweep", "deep_dream_strong",
            "deep_dream_online", "pgd", "pgd_train", "vae_small", "gan_pool",
            "diffusion_small", "diffusion_pool", "gan_small_online", "vae_pool_online",
            "diffusion_small_online", "diffusion_pool_online", "self_training", "fixmatch",
            "ae_pretrain", "pretext_transfer")


def code_paths(names) -> set[tuple[str, ...]]:
  """What the arms ``names`` exercise: their kinds, and each source with its type and
  the model, transform or generator family it reads."""
  from dreamjax.study import cost  # pylint: disable=g-import-not-at-top
  cfg = study_configs.get_config("tiny")
  paths = set()
  for name, arm in arms_lib.resolve(cfg).items():
    if arms_lib.base_name(name) not in names:
      continue
    src = arm.source
    detail = (src.family if isinstance(src, arms_lib.Generator)
              else src.model.which if isinstance(src, arms_lib.Attack)
              else getattr(src, "which", getattr(src, "name", getattr(src, "objective", ""))))
    paths |= {("kind", cost.arm_kind(arm)), (type(src).__name__, str(detail))}
  return paths


def test_the_rgb_arms_cover_every_kind_source_and_family_of_the_registry():
  assert code_paths(RGB_ARMS) == code_paths(arms_lib.names())


@pytest.fixture(scope="module")
def rgb_study(tmp_path_factory):
  """A finished tiny study of one arm of every kind on the RGB dataset (RGB_ARMS).

  A sweep runs at one strength of its four and the exchange rate for one arm,
  since further points repeat code that one point already ran.
  """
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  DreamjaxTinyColour(data_dir=data_dir, file_format="array_record").download_and_prepare()
  workdir = str(tmp_path_factory.mktemp("rgb_study"))
  cmd = [sys.executable, os.path.join(REPO, "experiments", "study.py"),
         "--config", "dreamjax/configs/study.py:tiny", f"--workdir={workdir}",
         f"--config.dataset=tfds:{NAME}", f"--config.data_dir={data_dir}",
         "--config.arms=(" + ",".join(f"'{a}'" for a in RGB_ARMS) + ",)",
         "--config.arm_settings.dream_sweep.strengths=(0.8,)",
         "--config.exchange.arms=('classical',)"]
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1500)
  assert out.returncode == 0, out.stderr[-4000:]
  return workdir


def test_every_kind_of_arm_runs_on_rgb_32x32_data(rgb_study):
  cells = {r["cell"]: r for r in read_jsonl(os.path.join(rgb_study, "results.jsonl"))}
  failed = {k: r.get("error") for k, r in cells.items() if r["status"] != "ok"}
  assert not failed
  assert {arms_lib.base_name(r["arm"]) for r in cells.values()} >= set(RGB_ARMS)
  assert {"oracle", "N100/alignment", "N100/classical/M2", "N200/baseline"} <= set(cells)
  for key, r in cells.items():
    if r["arm"] not in ("oracle", "alignment"):
      assert r["label_preservation"] is not None and r["frechet"] is not None, key
  made = json.load(open(os.path.join(rgb_study, "study_config.json")))
  assert made["data"]["name"] == f"tfds:{NAME}"


def test_stored_sets_keep_the_datasets_shape(rgb_study):
  """Dreams (the seed's and the deep dreamer's), attacks, small and pool generators
  and pseudo-labeled pool images are all RGB 32×32."""
  for arm in ("classical", "dream_strong", "deep_dream_strong", "pgd", "vae_small",
              "gan_pool", "diffusion_small", "diffusion_pool", "self_training"):
    with np.load(os.path.join(rgb_study, "N100", arm, "generated_seed0.npz")) as z:
      assert z["images"].shape[1:] == SHAPE, arm
      assert np.ptp(z["images"][..., 0] - z["images"][..., 2]) > 0, arm  # colour, not grey


def test_a_fresh_arm_without_its_stored_twin_keeps_the_generators_it_trains(rgb_study):
  """Where the twin would: a small arm's per seed, a pool arm's at the workdir's top."""
  assert "gan_small" not in RGB_ARMS and "vae_pool" not in RGB_ARMS
  assert os.path.exists(os.path.join(rgb_study, "N100", "gan_small", "generator_seed0.msgpack"))
  assert os.path.exists(os.path.join(rgb_study, "artefacts", "vae_pool.msgpack"))


def test_the_report_and_its_figures_are_written(rgb_study):
  for f in ("summary.csv", "REPORT.md", "claims.json", "figures/forest.png",
            "figures/exchange.png", "figures/robustness.png", "figures/generators.png",
            "figures/sweep.png", "figures/frechet.png", "figures/curves.png",
            "figures/samples.png", "figures/dreamers.png"):
    assert os.path.getsize(os.path.join(rgb_study, f)) > 0, f
  report = open(os.path.join(rgb_study, "REPORT.md")).read()
  assert f"tfds:{NAME}" in report
  for claim in ("C1", "C2", "C3", "C4", "C5", "C6", "C7"):
    assert f"**{claim}**" in report
  # Fashion-MNIST's benchmark range is no anchor for another dataset's oracle.
  assert "Fashion-MNIST" not in report and f"no published accuracy range for tfds:{NAME}" in report
