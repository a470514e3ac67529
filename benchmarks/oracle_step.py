"""What an oracle training step costs against the study classifier's, per image.

The cost model (``dreamjax/study/cost.py``) prices every job in image-steps of
the study classifier; the oracle's network is wider, so one of its images costs
``cost.ORACLE_STEP`` of them. This times, in a process of one XLA:CPU thread (as
a study's worker runs), seconds per image of ``train.fit`` steps of:

* the study classifier at batch 64 for 5 seeds (a cell), and at batch 128 for one;
* the oracle at its batch on every training label, without and with its online
  augmentation.

    python benchmarks/oracle_step.py [--preset first] [--steps 300] [--json_out F]
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dreamjax import _xla  # noqa: E402

_xla.fix_cpu_threads(1)  # before JAX starts: a worker's thread count


from dreamjax import data as data_lib  # noqa: E402
from dreamjax.configs import study as study_configs  # noqa: E402
from dreamjax.study import cost  # noqa: E402
from dreamjax.study.run import context as context_lib  # noqa: E402
from dreamjax.training import models, train  # noqa: E402


def per_image(model, tcfg, images, labels, seeds, steps, transform=None) -> float:
  """Seconds per image of ``steps`` training steps of every seed, after a compiling run."""
  t = tcfg.copy_and_resolve_references()
  t.warmup_steps, t.log_every, t.eval_every, t.checkpoint_every = 5, 10**6, 0, 0
  stacked = train.pad_to_common([(images, labels)] * len(seeds))
  kwargs = dict(counts=stacked[2], seeds=seeds, batch_transform=transform,
                progress=lambda m: None)
  t.steps = 20
  train.fit(model, t, stacked[0], stacked[1], **kwargs)  # compile
  t.steps = steps
  t0 = time.perf_counter()
  train.fit(model, t, stacked[0], stacked[1], **kwargs)
  return (time.perf_counter() - t0) / (steps * int(t.batch_size) * len(seeds))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="first")
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--json_out", default=None)
  args = p.parse_args()
  cfg = study_configs.get_config(args.preset)
  raw = context_lib.load_data(cfg)
  s = data_lib.make_splits(raw, num_labeled=-1, val_size=cfg.val_size, seed=0)
  cell = data_lib.make_splits(raw, num_labeled=int(cfg.budgets[0]), val_size=cfg.val_size,
                              seed=0)
  classifier = models.make_model(cfg.model, raw.num_classes)
  oracle = models.make_model(cfg.oracle.model, raw.num_classes)
  k = int(cfg.num_seeds)
  out = {"preset": args.preset, "steps": args.steps, "xla_cpu_threads": 1, "us_per_image": {}}
  rows = (
      (f"classifier, batch {cfg.train.batch_size}, {k} seeds", classifier, cfg.train,
       cell.labeled_images, cell.labeled_labels, list(range(k)), None),
      ("classifier, batch 128, 1 seed", classifier, _batch(cfg.train, 128),
       cell.labeled_images, cell.labeled_labels, [0], None),
      (f"oracle, batch {cfg.oracle.train.batch_size}, no augmentation", oracle,
       cfg.oracle.train, s.labeled_images, s.labeled_labels, [0], None),
      (f"oracle, batch {cfg.oracle.train.batch_size}, its augmentation", oracle,
       cfg.oracle.train, s.labeled_images, s.labeled_labels, [0],
       context_lib.oracle_transform(cfg.oracle)),
  )
  for name, model, tcfg, x, y, seeds, transform in rows:
    us = per_image(model, tcfg, x, y, seeds, args.steps, transform) * 1e6
    out["us_per_image"][name] = us
    print(f"{name:<45} {us:8.0f} µs per image", file=sys.stderr, flush=True)
  first, plain = list(out["us_per_image"].values())[0], list(out["us_per_image"].values())[2]
  out["oracle_over_classifier"] = plain / first
  out["cost_model_oracle_factor"] = cost.oracle_factor(cfg)
  print(f"oracle step / classifier step: {plain / first:.2f} (the cost model's"
        f" oracle_factor, augmentation included: {cost.oracle_factor(cfg):.2f})",
        file=sys.stderr)
  print(json.dumps(out))
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(out, f, indent=1)


def _batch(tcfg, batch: int):
  t = tcfg.copy_and_resolve_references()
  t.batch_size = batch
  return t


if __name__ == "__main__":
  main()
