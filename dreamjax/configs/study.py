"""Config of the study (``experiments/study.py``): the protocol of STUDY.md.

Presets (``--config dreamjax/configs/study.py:PRESET``):
  quick  default of ./launch.sh: N = 1000, 3 seeds, small BN-CNN, ≤ 15 min on 2 CPU cores
  full   N ∈ {100, 1000, 5000}, 5 seeds, larger CNN and budgets (hours on a CPU)
  tiny   every arm end to end in about a minute (tests)
"""

import ml_collections

from dreamjax.configs import common

from dreamjax.study import arms as arms_registry

ALL_ARMS = arms_registry.names()  # every registered arm, in report order


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  data = common.data_config()
  c.dataset = data.dataset        # 'fashion_mnist' | 'idx:/folder' | 'tfds:NAME'
  c.data_dir = data.data_dir
  c.val_size = 1000               # validation images from train: curves only, no selection
  c.budgets = (1000,)             # label budgets N (equal per class)
  c.primary_budget = 1000         # the budget whose cells decide the claim verdicts
  c.num_seeds = 3                 # seeds 0..num_seeds-1: subset draw + init per seed
  c.copies = 1                    # M generated images per real labeled image
  c.arms = arms_registry.names()  # which arms run (all registered, by default)
  c.verdict_margin = 0.01         # smallest accuracy change called a real gain/loss

  # The classifier every arm trains: same model, optimiser and steps in every arm.
  c.model = common.model_config("small")
  c.model.conv_features = (16, 32)
  c.model.dense_features = (64,)
  c.model.use_bn = True           # BatchNorm is needed by the dream_bn prior
  c.train = common.train_config()
  c.train.steps = 300             # same budget for every arm (converged: see REPORT curves)
  c.train.batch_size = 64
  c.train.warmup_steps = 50
  c.train.log_every = 50
  c.train.eval_every = 50         # validation curve points
  c.train.checkpoint_every = 100   # multiple of log_every (resume reproduces the history)

  # Reference ("oracle") classifier on every training label: a measuring
  # instrument for label preservation and Fréchet features, never a teacher.
  c.oracle = ml_collections.ConfigDict()
  c.oracle.model = common.model_config("small")
  c.oracle.train = common.train_config()
  c.oracle.train.steps = 800
  c.oracle.train.batch_size = 128
  c.oracle.train.eval_every = 400
  c.oracle.train.checkpoint_every = 400
  c.oracle.feature_layer = "dense0"  # Fréchet distance feature space

  # Evaluation of every cell.
  c.eval = ml_collections.ConfigDict()
  c.eval.robust_eps = 0.1         # L∞ PGD radius on [0, 1] pixels (STUDY.md)
  c.eval.robust_steps = 20        # ≥ 20 PGD steps, random start
  c.eval.robust_restarts = 1
  c.eval.robust_num_test = 200    # test images attacked per cell (quick: a subset)
  c.eval.frechet_num_test = 2000  # real test images the generated sets are compared with
  c.eval.alignment_num = 128      # test images for the C3 gradient alignment

  # Arms' generation settings.
  c.dream_presets = ml_collections.ConfigDict(
      {"dream_subtle": "subtle", "dream_strong": "strong", "dream_logit": "logit",
       "dream_bn": "bn"})
  c.dream_sweep_strengths = (0.05, 0.2, 0.8, 3.2)  # octaves×steps×step_size, subtle → extreme
  c.dream_steps = 10              # ascent steps per octave of every dream arm and sweep point,
                                  # step_size rescaled so each keeps its strength; 0 = the
                                  # presets' own (20 for strong/logit/bn and the sweep)
  c.dream_chunk = 250             # images per jitted dream call
  c.attack = ml_collections.ConfigDict()
  c.attack.eps = 0.1              # offline fgsm/pgd sets and pgd_train, L∞
  c.attack.pgd_steps = 10         # offline pgd set
  c.attack.train_steps = 3        # PGD steps inside pgd_train's train step
  c.attack.train_fraction = 0.5   # fraction of each batch replaced by adversarial images
  c.generator_preset = "default"  # dreamjax/configs/generator.py preset for VAE/GAN/AE/pretext
  c.generator_overrides = ml_collections.ConfigDict()  # any generator field, e.g. {"steps": 100}
  c.small_generator_steps = 200   # vae_small/gan_small: steps on the N labeled images
  c.pretrain_steps = 500          # ae_pretrain/pretext_transfer: steps on the pool
  c.pool_generator_steps = 800    # vae_pool/gan_pool: steps on the pool (trained once, on
                                  # seed 0's pool, and shared by every seed)
  c.pseudo_label_threshold = 0.9  # unconditional pool generators: keep confident samples

  if preset == "quick":
    pass
  elif preset == "full":
    c.budgets = (100, 1000, 5000)
    c.num_seeds = 5
    c.model = common.model_config("small")
    c.model.use_bn = True
    c.train.steps = 3000
    c.train.batch_size = 128
    c.train.warmup_steps = 200
    c.train.log_every = 50
    c.train.eval_every = 250
    c.train.checkpoint_every = 500
    c.oracle.train.steps = 6000
    c.oracle.train.eval_every = 1000
    c.oracle.train.checkpoint_every = 1000
    c.eval.robust_num_test = 10000
    c.eval.frechet_num_test = 10000
    c.eval.alignment_num = 1000
    c.eval.robust_restarts = 2
    c.attack.train_steps = 7
    c.small_generator_steps = 1200
    c.pool_generator_steps = 2400
    c.pretrain_steps = 1200
    c.dream_sweep_strengths = (0.02, 0.05, 0.15, 0.5, 1.5, 4.0)
    c.dream_steps = 0
  elif preset == "tiny":
    c.budgets = (100,)
    c.primary_budget = 100
    c.num_seeds = 2
    c.val_size = 200
    c.model = common.model_config("tiny")
    c.model.use_bn = True
    common.make_tiny(c.train, eval_every=10)
    c.oracle.model = common.model_config("tiny")
    c.oracle.train.steps = 40
    c.oracle.train.batch_size = 64
    c.oracle.train.warmup_steps = 5
    c.oracle.train.log_every = 20
    c.oracle.train.eval_every = 20
    c.oracle.train.checkpoint_every = 20
    c.eval.robust_steps = 20
    c.eval.robust_num_test = 64
    c.eval.frechet_num_test = 200
    c.eval.alignment_num = 32
    c.dream_chunk = 50
    c.attack.pgd_steps = 3
    c.attack.train_steps = 2
    c.generator_preset = "tiny"
    c.small_generator_steps = 30
    c.pool_generator_steps = 30
    c.pretrain_steps = 30
    c.dream_sweep_strengths = (0.05, 0.2, 0.8, 3.2)
    c.pool_subset = 2000
    c.pseudo_label_threshold = 0.0  # tiny models are never confident: keep every sample
  else:
    raise ValueError(f"unknown study preset {preset!r}; choose quick, full or tiny")
  if "pool_subset" not in c:
    c.pool_subset = 0             # >0: generators/pretraining see only this many pool images
  return c
