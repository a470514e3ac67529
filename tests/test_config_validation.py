"""Property-based checks: every numeric setting is validated before compute.

Whatever number lands in a field, validation either accepts it or raises a
ConfigError that names the field; it never crashes with another exception.
"""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamjax.methods import adversarial
from dreamjax.training import train
from dreamjax.configs import classifier, dream as dream_configs, study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.study.run import runner

numbers = st.one_of(st.integers(-5, 5000), st.floats(-2.0, 2.0, allow_nan=False))

TRAIN_FIELDS = ["steps", "batch_size", "learning_rate", "weight_decay", "warmup_steps",
                "log_every", "eval_every", "checkpoint_every", "label_smoothing"]
STUDY_FIELDS = ["num_seeds", "copies", "primary_budget", "eval.robust_eps", "eval.robust_steps",
                "eval.robust_num_test", "eval.frechet_num_test", "attack.eps", "attack.pgd_steps",
                "attack.train_steps", "attack.train_fraction", "pseudo_label_threshold",
                "verdict_margin", "dream_chunk", "arm_settings.vae_pool.steps",
                "arm_settings.pretext_transfer.steps", "pool_dreamer.steps",
                "pool_dreamer.batch_size", "pool_dreamer.learning_rate",
                "pool_dreamer.temperature", "pool_dreamer.projection_dim"]


def _set(cfg, field, value):
  *blocks, name = field.split(".")
  for b in blocks:
    cfg = cfg[b]
  cfg[name] = type(cfg[name])(value) if isinstance(cfg[name], float) else value


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(TRAIN_FIELDS), numbers)
def test_train_fields(field, value):
  cfg = classifier.get_config("tiny").train
  try:
    _set(cfg, field, value)
  except TypeError:
    return  # ml_collections refuses the type itself: also before compute
  try:
    train.validate_train_config(cfg)
  except ConfigError as e:
    assert f"train.{field}" in str(e) or "train." in str(e)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(STUDY_FIELDS), numbers)
def test_study_fields(field, value):
  cfg = study_configs.get_config("tiny")
  try:
    _set(cfg, field, value)
  except TypeError:
    return
  try:
    runner.validate_config(cfg)
  except ConfigError as e:
    assert field.split(".")[-1] in str(e)


@settings(max_examples=100, deadline=None)
@given(eps=st.floats(-1, 1, allow_nan=False), steps=st.integers(-3, 50),
       norm=st.sampled_from(["linf", "l2", "l1", "Linf"]), restarts=st.integers(-1, 3))
def test_attack_settings(eps, steps, norm, restarts):
  try:
    adversarial.validate_attack(eps=eps, steps=steps, norm=norm, restarts=restarts)
  except ConfigError as e:
    assert any(k in str(e) for k in ("eps", "steps", "norm", "restarts"))
    return
  assert eps >= 0 and steps >= 1 and norm in ("linf", "l2") and restarts >= 1


@pytest.mark.parametrize("field,value,match", [
    ("steps", -1, "steps"), ("octave_scale", 1.0, "octave_scale"), ("layers", ("conv9",), "conv0")])
def test_dream_settings_named(field, value, match):
  from dreamjax import dream
  from dreamjax.training import models
  from dreamjax.configs import common
  model = models.make_model(common.model_config("tiny"), 10)
  cfg = dream_configs.get_preset("strong")
  cfg[field] = value
  with pytest.raises(ConfigError, match=match):
    dream.validate(cfg, model)


@pytest.mark.parametrize("override, named", [
    (("dream_subtle", "preset", "sublte"), "arm_settings.dream_subtle.preset"),
    (("dream_sweep", "strengths", (0.1, -1.0)), "arm_settings.dream_sweep.strengths"),
    (("gan_small", "steps", 0), "arm_settings.gan_small.steps"),
    (("deep_dream_strong", "preset", "deeper"), "arm_settings.deep_dream_strong.preset"),
    (("deep_dream_sweep", "layers", ()), "arm_settings.deep_dream_sweep.layers"),
])
def test_arm_settings_are_checked_by_their_arm(override, named):
  cfg = study_configs.get_config("tiny")
  arm, field, value = override
  cfg.arm_settings[arm][field] = value
  with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
    runner.validate_config(cfg)


def test_an_arm_setting_that_does_not_exist_is_refused():
  cfg = study_configs.get_config("tiny")
  cfg.arm_settings.vae_pool.stesp = 10
  with pytest.raises(ConfigError, match="vae_pool has no setting 'stesp'"):
    runner.validate_config(cfg)
  cfg = study_configs.get_config("tiny")
  cfg.arm_settings.vae_pools = {"steps": 3}
  with pytest.raises(ConfigError, match="arm_settings.vae_pools: no such arm"):
    runner.validate_config(cfg)


@pytest.mark.parametrize("block", ["model", "oracle.model", "pool_dreamer.model"])
def test_a_bad_network_is_refused_under_the_block_it_is(block):
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "deep_dream_strong")  # so the pool dreamer's block is read
  net = cfg
  for name in block.split("."):
    net = net[name]
  named = re.escape(block)
  net.pool = (True,)  # one entry for several conv layers
  with pytest.raises(ConfigError, match=rf"^{named}\.pool="):
    runner.validate_config(cfg)
  net.pool = (True,) * len(net.conv_features)
  net.dtype = "float33"
  with pytest.raises(ConfigError, match=rf"^{named}\.dtype='float33'"):
    runner.validate_config(cfg)
