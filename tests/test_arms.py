"""The arm registry as the one description of an arm, cells as values, seeds decided once."""

import ast
import json
import os

import pytest

from conftest import REPO
from dreamjax import generators
from dreamjax.training import seeds
from dreamjax.configs import arms
from dreamjax.configs import study as study_configs
from dreamjax.errors import ConfigError
from dreamjax.study import claims, records
from dreamjax.study.run import runner
from dreamjax.study.run.cells import ALIGNMENT, Cell


def test_every_arm_says_what_makes_its_images_as_a_typed_source():
  for a in arms.REGISTRY.values():
    assert a.kind in arms.KINDS and a.group in arms.GROUPS, a.name
    if a.kind in ("stored", "generator", "online", "bank", "adversarial_training"):
      assert a.source is not None, a.name
    if isinstance(a.source, arms.Generator):
      assert a.source.family in generators.TRAIN and a.source.data in ("labeled", "pool")
      # A fresh-sample arm's generator is its stored twin's, trained with the twin's steps.
      twin = arms.get(arms.generator_arm(a.name))
      assert twin.kind == "generator" and twin.source == a.source and "steps" in twin.settings
      assert (twin.name == a.name) == (a.kind == "generator"), a.name
    for role in ("generate", "transform", "init", "generate_seeds"):
      if getattr(a, role) is not None:
        assert callable(a.fn(role)), (a.name, role)


def test_settings_are_the_entry_defaults_overridden_by_name():
  cfg = study_configs.get_config("quick")
  assert arms.settings(cfg, "vae_pool").steps == arms.get("vae_pool").settings["steps"]
  cfg.arm_settings.vae_pool.steps = 5
  assert arms.settings(cfg, "vae_pool").steps == 5
  assert arms.settings(cfg, "gan_pool").steps == arms.get("gan_pool").settings["steps"]
  assert arms.settings(cfg, "dream_sweep@0.2").strengths == (0.05, 0.2, 0.8, 3.2)
  tiny = study_configs.get_config("tiny")
  assert {a: arms.settings(tiny, a).steps for a in ("vae_small", "pretext_transfer")} == {
      "vae_small": 30, "pretext_transfer": 30}


def test_an_arm_registered_after_the_config_was_made_reads_its_defaults(monkeypatch):
  cfg = study_configs.get_config("tiny")
  monkeypatch.setattr(arms, "REGISTRY", dict(arms.REGISTRY))
  arms.register(arms.Arm("late", "dream", "stored", "registered late",
                         source=arms.Classifier(), settings={"preset": "bn"}))
  assert arms.settings(cfg, "late").preset == "bn"


def test_registering_refuses_unknown_groups_kinds_and_names_with_separators(monkeypatch):
  monkeypatch.setattr(arms, "REGISTRY", dict(arms.REGISTRY))
  for bad in (arms.Arm("x", "nope", "stored", ""), arms.Arm("x", "dream", "nope", ""),
              arms.Arm("x@1", "dream", "stored", ""), arms.Arm("x/y", "dream", "stored", ""),
              arms.Arm("baseline", "reference", "reference", "")):
    with pytest.raises(ValueError):
      arms.register(bad)


def test_claims_declare_the_arms_they_read():
  assert claims.reads("C1")[:2] == ("baseline", "dream_strong")
  assert set(claims.rivals()) == {"dream_subtle", "dream_strong", "dream_logit", "dream_bn",
                                  "dream_online", "deep_dream_subtle", "deep_dream_strong",
                                  "deep_dream_online", "fgsm", "pgd", "vae_small", "gan_small",
                                  "vae_pool", "gan_pool", "diffusion_small", "diffusion_pool",
                                  "vae_small_online", "gan_small_online", "vae_pool_online",
                                  "gan_pool_online", "diffusion_small_online",
                                  "diffusion_pool_online"}
  assert claims.claims_of("dream_sweep@0.2") == ("C1",)  # C1's dose–response
  assert "C2" in claims.claims_of("noise_online") and "C5" in claims.claims_of("vae_pool")
  # C4 and C6 read every arm of a generator on the labeled set / the pool, by its source.
  for arm in ("vae_small", "diffusion_small", "gan_small_online", "diffusion_small_online"):
    assert {"C4", "C5"} <= set(claims.claims_of(arm)), arm
  for arm in ("gan_pool", "diffusion_pool", "vae_pool_online", "diffusion_pool_online"):
    assert {"C5", "C6"} <= set(claims.claims_of(arm)) and "C4" not in claims.claims_of(arm)
  robust = {a for a in arms.names() if claims.measures_robustness(a)}
  assert robust == {"baseline", "classical_online", "noise", "noise_online", "dream_subtle",
                    "dream_online", "pgd_train", "noise_matched_online", "deep_dream_online"}


def test_the_c3_alignment_job_runs_when_an_arm_c3_reads_runs():
  cfg = study_configs.get_config("tiny")
  assert runner.has_alignment(arms.resolve(cfg))
  cfg.arms = ("baseline", "classical_online")
  assert not runner.has_alignment(arms.resolve(cfg))
  cfg.arms = ("baseline", "pgd")
  assert runner.has_alignment(arms.resolve(cfg))


def test_cells_are_values_with_one_string_form():
  assert Cell.of(1000, "classical", 4, 1).key == "N1000/classical/M4"
  assert Cell.of(1000, "classical", 1, 1).key == "N1000/classical"
  assert Cell.of(1000, "dream_sweep@0.2", 1, 1).folder == "N1000/dream_sweep_at_0.2"
  assert Cell.of(1000, "classical", 4, 1).folder == "N1000/classical_M4"
  tiny = study_configs.get_config("tiny")
  tiny_arms = arms.resolve(tiny)
  more_labels = [c for c in runner.plan(tiny, tiny_arms) if not c.main and c.arm == "baseline"]
  assert [(c.key, c.budget, c.exchange) for c in more_labels] == [("N200/baseline", 200,
                                                                     "labels")]
  align = Cell.alignment(100)
  assert (align.key, align.job, align.main) == ("N100/alignment", ALIGNMENT, True)
  jobs = runner.job_order(tiny, runner.plan(tiny, tiny_arms), True)
  assert [c.key for c in jobs].index("N100/alignment") > [c.key for c in jobs].index(
      "N100/pretext_transfer")


def test_configs_import_no_study_module():
  folder = os.path.join(REPO, "dreamjax", "configs")
  for name in os.listdir(folder):
    if not name.endswith(".py"):
      continue
    tree = ast.parse(open(os.path.join(folder, name)).read())
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom):
        assert not (node.module or "").startswith("dreamjax.study"), (name, node.module)
      elif isinstance(node, ast.Import):
        assert not any(a.name.startswith("dreamjax.study") for a in node.names), name


def test_no_arm_behaviour_is_read_from_its_name():
  """The study reads an arm's family, method or preset from its entry, never its name."""
  for rel in ("study/run/generate.py", "study/run/artefacts.py", "study/run/runner.py",
              "study/run/cells.py"):
    text = open(os.path.join(REPO, "dreamjax", rel)).read()
    for pattern in ('split("_")', 'endswith("_small")', 'endswith("_pool")',
                    'endswith("/alignment")', 'method=arm,'):
      assert pattern not in text, (rel, pattern)


def test_a_config_recorded_before_arm_settings_reads_as_todays():
  """Published workdirs were made with study-wide tables keyed by arm name."""
  with open(os.path.join(REPO, "docs", "results", "conclusions_1200", "study_config.json")) as f:
    recorded = json.load(f)["config"]
  assert "dream_presets" in recorded and "arm_settings" not in recorded
  today = study_configs.get_config("conclusions")
  # What protocol version 2 added: its version; class-balanced pool generators (they
  # kept the first samples above the threshold); several pool generators per arm (it
  # had one); arms registered since ran nowhere in it: a config that adds them extends it.
  today.protocol_version = 1
  today.pool_generators = 1
  today.train_steps_by_budget = {"N5000": 2400}  # it trained N = 1000 before the chooser did
  today.arm_settings.vae_pool.balanced = today.arm_settings.gan_pool.balanced = False
  # The instrument of the first studies: an oracle of 800 steps without augmentation or
  # shift measurements, and every Fréchet distance on a whole set.
  today.oracle.train.steps = 800
  today.oracle.train.eval_every = today.oracle.train.checkpoint_every = 400
  today.oracle.augment, today.oracle.shift_pixels = "none", ()
  today.eval.frechet_num_images = 0
  today = json.loads(today.to_json())
  assert set(recorded["arms"]) < set(today["arms"])
  today["arms"] = [a for a in today["arms"] if a in recorded["arms"]]
  assert records.upgrade_config(recorded) == today


def test_bad_arm_settings_fail_before_compute():
  cfg = study_configs.get_config("tiny")
  cfg.arm_settings.dream_online.preset = "louder"
  with pytest.raises(ConfigError, match="arm_settings.dream_online.preset=louder"):
    runner.validate_config(cfg)


def test_how_seeds_run_is_decided_in_one_place():
  assert seeds.how("classifier_step", "cpu") == "in_turn"
  assert seeds.how("generator_step", "cpu") == "unrolled"
  assert {seeds.how(w, "gpu") for w in seeds.WORKLOADS} == {"vmap"}
  with pytest.raises(ValueError):
    seeds.how("dreaming")


def test_resolve_gives_each_cell_arm_its_settings_variant_and_configs_once():
  cfg = study_configs.get_config("tiny")
  cfg.arms = ("baseline", "dream_sweep", "vae_pool_online", "noise_matched_online")
  cfg.arm_settings.vae_pool.steps = 7
  resolved = arms.resolve(cfg)
  sweep = resolved["dream_sweep@0.2"]
  assert (sweep.base, sweep.variant, sweep.of) == ("dream_sweep", 0.2, "dream_sweep")
  assert [c.arm for c in runner.plan(cfg, resolved) if c.budget == 100 and c.main] == [
      "baseline", *(f"dream_sweep@{s:g}" for s in arms.get("dream_sweep").settings["strengths"]),
      "vae_pool_online", "noise_matched_online"]
  # What a cell arm's functions read without running it: its stored twin, its matched dream.
  fresh = resolved["vae_pool_online"]
  assert (fresh.generator_arm, resolved["vae_pool"].of, resolved["dream_online"].of) == (
      "vae_pool", "", "")
  assert fresh.generator.steps == 7 and fresh.generator.model == "vae"
  assert fresh.settings.candidates == arms.get("vae_pool_online").settings["candidates"]
  assert tuple(sweep.dream.layers) == ("conv1",)
  assert resolved["dream_online"].dream.steps == cfg.dream_steps
  cfg.arm_settings.vae_pool.steps = 0
  with pytest.raises(ConfigError, match="arm_settings.vae_pool.steps"):
    arms.resolve(cfg)


def test_a_training_runs_fingerprint_holds_its_arms_settings_exchange_cells_too():
  from dreamjax.study.run import context  # pylint: disable=g-import-not-at-top

  def fingerprints(preset):
    cfg = study_configs.get_config("tiny")
    cfg.arm_settings.dream_strong.preset = preset
    ctx = context.Context(config=cfg, workdir="", mesh=None, budget=100, seeds=(0, 1),
                          splits=(), model=None, oracle=None)
    arm = ctx.arm("dream_strong")
    main, more = Cell.of(100, "dream_strong", 1, 1), Cell.of(100, "dream_strong", 2, 1)
    return (cfg, ctx, arm, ctx.fingerprint(main.run, arm), ctx.fingerprint(more.run, arm),
            ctx.fingerprint(f"{main.run}/cas", arm))

  cfg, ctx, arm, main, more, cas = fingerprints("strong")
  # A main cell's is what earlier versions recorded, so its checkpoints resume.
  assert main == records.cell_fingerprint(cfg) + "dream_strong" + '{"preset": "strong"}'
  assert cas == records.cell_fingerprint(cfg) + "dream_strong/cas" + '{"preset": "strong"}'
  assert more == records.cell_fingerprint(cfg) + "dream_strong_M2" + '{"preset": "strong"}'
  other = fingerprints("subtle")
  assert other[3] != main and other[4] != more
  # An exchange cell's run was recorded without its settings: such a checkpoint resumes.
  assert ctx.earlier_fingerprints("dream_strong_M2", arm) == (
      records.cell_fingerprint(cfg) + "dream_strong_M2",)
  assert ctx.earlier_fingerprints("dream_strong", arm) == ()
  assert ctx.earlier_fingerprints("dream_strong/cas", arm) == ()
