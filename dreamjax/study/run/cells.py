"""One cell of the study: an arm at one label budget, every seed at once.

A cell generates (or loads) each seed's extra images, trains the classifier,
and measures it: clean and PGD robust test accuracy, and the generated set's
label preservation and Fréchet distance under the oracle. Its record is one
line of ``results.jsonl``.
"""

import dataclasses
import json
import time
from typing import Any

import jax
import numpy as np

from dreamjax.methods import alignment, frechet
from dreamjax.training import evaluate
from dreamjax import data as data_lib
from dreamjax.configs import arms as arms_lib
from dreamjax.study import claims
from dreamjax.study import plan as plan_lib
from dreamjax.study.run.artefacts import arm_key
from dreamjax import stats
from dreamjax.training.seeds import pad_to_common
from dreamjax.study.run.context import Context
from dreamjax.study.run.generate import Generated


# Jobs of the study as values (dreamjax.study.plan), handed on under their old names.
TRAIN, ALIGNMENT, MORE_COPIES, MORE_LABELS = (plan_lib.TRAIN, plan_lib.ALIGNMENT,
                                              plan_lib.MORE_COPIES, plan_lib.MORE_LABELS)
Cell, folder_of = plan_lib.Cell, plan_lib.folder_of


def generated_sets(ctx: Context, cell: Cell) -> dict[int, Generated]:
  """Each seed's generated set, from disk if an earlier run made it."""
  arm = ctx.arm(cell.arm)
  out, missing = {}, []
  for seed, s in zip(ctx.seeds, ctx.splits):
    g = _load(ctx, cell, _generated_path(ctx, cell, seed), seed)
    if g is None:
      missing.append((seed, s))
    else:
      out[seed] = g
  keys = {seed: arm_key(seed, cell.arm) for seed, _ in missing}
  if arm.entry.generate_seeds and len(missing) > 1:  # every missing seed in one go
    made = arm.fn("generate_seeds")(ctx, cell.arm, [m[0] for m in missing], [m[1] for m in missing],
                              [keys[m[0]] for m in missing])
    for seed, _ in missing:
      out[seed] = _save(ctx, cell, arm, seed, made[seed])
  for seed, s in missing:  # seed by seed, each saved as soon as it is made
    if seed not in out:
      g = (_per_copy(ctx, cell, arm, seed, s, keys[seed]) if arm.per_copy
           else arm.fn("generate")(ctx, cell.arm, seed, s, keys[seed]))
      out[seed] = _save(ctx, cell, arm, seed, g)
  return {seed: out[seed] for seed in ctx.seeds}


def _save(ctx: Context, cell: Cell, arm, seed: int, g: Generated) -> Generated:
  data_lib.augfile.save(_generated_path(ctx, cell, seed), g.images, g.labels, g.source_index,
                        {"method": cell.arm, "seed": seed, "seconds": g.seconds, "info": g.info,
                         "budget": cell.budget, "copies": ctx.copies, "per_copy": arm.per_copy})
  return g


def _generated_path(ctx: Context, cell: Cell, seed: int) -> str:
  return ctx.path(cell.folder, f"generated_seed{seed}.npz")


def _load(ctx: Context, cell: Cell, path: str, seed: int) -> Generated | None:
  g = data_lib.augfile.load_kept(path, num_classes=ctx.num_classes, image_shape=ctx.image_shape,
                                 log=ctx.log, again=f"{cell.key}: regenerating seed {seed}")
  if g is None:
    return None
  return Generated(g.images, g.labels, g.source_index, float(g.metadata.get("seconds", 0.0)),
                   g.metadata.get("info", {}))


COPY_DOMAIN = 0x636F7079  # separates the copies' keys from every key derived inside an arm


def copy_key(key: jax.Array, m: int) -> jax.Array:
  """Copy ``m``'s key: the arm's own key for the first copy (so M = 1 is one plain
  call of the arm), a fold of it for the others."""
  return key if m == 0 else jax.random.fold_in(jax.random.fold_in(key, COPY_DOMAIN), m)


def _per_copy(ctx: Context, cell: Cell, arm, seed: int, s, key) -> Generated:
  """M copies made one by one, reusing the copies another cell of the arm already made.

  Copy ``m`` of every labeled image is ``arm.generate`` with one copy and
  :func:`copy_key` ``(key, m)``, whatever M the cell has: the M-copy set is the
  first M copies of any larger set of the same arm, budget and seed. Rows are
  copy-major, as an arm's own M-copy set is.
  """
  n, want = len(s.labeled_labels), ctx.copies
  images, labels, index, infos, reused = [], [], [], [], 0
  for donor in _donors(ctx, cell):
    d = _load(ctx, donor, _generated_path(ctx, donor, seed), seed)
    per_copy_infos = (d.info or {}).get("per_copy") if d is not None else None
    if d is None or not per_copy_infos or len(d.labels) != n * len(per_copy_infos):
      continue
    reused = min(want, len(per_copy_infos))
    images, labels, index = [d.images[:reused * n]], [d.labels[:reused * n]], [
        d.source_index[:reused * n]]
    infos = list(per_copy_infos[:reused])
    ctx.log(f"{cell.key}: seed {seed} reuses {reused} of {want} copies from {donor.key}")
    break
  one = dataclasses.replace(ctx, copies=1)
  seconds = 0.0
  for m in range(reused, want):
    g = arm.fn("generate")(one, cell.arm, seed, s, copy_key(key, m))
    images.append(g.images)
    labels.append(g.labels)
    index.append(g.source_index)
    infos.append(g.info)
    seconds += g.seconds
  info = {k: (int(np.sum([i[k] for i in infos])) if k == "image_steps"
              else _mean_info(infos, k))
          for k in infos[0] if isinstance(infos[0].get(k), (int, float))}
  info.update(per_copy=infos, reused_copies=reused)
  return Generated(np.concatenate(images), np.concatenate(labels), np.concatenate(index),
                   seconds, info)


def _donors(ctx: Context, cell: Cell) -> list[Cell]:
  """The arm's cells at the same budget with another M, most copies first."""
  cfg = ctx.config
  main = int(cfg.copies)
  others = sorted({main, *(int(m) for m in cfg.exchange.copies)} - {cell.copies}, reverse=True)
  return [Cell.of(cell.budget, cell.arm, m, main) for m in others]


def measures_robustness(config, cell: Cell) -> bool:
  """Robust accuracy is measured for the arms a claim reads it of, or for all."""
  return cell.main and (bool(config.eval.robust_all_arms) or cell.arm == "baseline"
                        or claims.measures_robustness(cell.arm))


def run_cell(ctx: Context, cell: Cell, train_labels: np.ndarray | None = None) -> dict[str, Any]:
  """Trains and measures one cell; returns its results.jsonl record.

  ``train_labels``: every label of the official training split, pool images'
  included. They measure the pseudo-labels of an arm whose images are real pool
  images (:func:`pseudo_label_accuracy`) after its set is made; the arm's
  functions receive only ``ctx``, which holds no pool label.
  """
  cfg = ctx.config
  arm = ctx.arm(cell.arm)
  t_cell = time.perf_counter()
  generated = generated_sets(ctx, cell) if arm.entry.generate else {}
  gen_seconds = float(sum(g.seconds for g in generated.values()))
  transform = arm.fn("transform")(ctx, cell.arm) if arm.entry.transform else None
  transform_info = dict(getattr(transform, "info", None) or {})  # what it measured of itself
  transform_history = transform_info.pop("history", None)  # a fresh-sample arm's generator's
  # Wall-clock, so it goes under timing: a resumed study's other fields match.
  transform_seconds = float(transform_info.pop("gen_seconds", 0.0))
  # What a fresh-sample arm puts in batches, drawn apart for the quality measures; a
  # stored-image arm's measured set is its generated set.
  measured = generated or getattr(transform, "samples", None) or {}
  unlabeled = arm.fn("unlabeled")(ctx, cell.arm) if arm.entry.unlabeled else None
  init_fn, pre_seconds, pre_steps = (arm.fn("init")(ctx, cell.arm) if arm.entry.init
                                     else (None, 0.0, 0))
  if cell.arm == "baseline" and ctx.baseline is not None:
    res = ctx.baseline
  else:
    res = ctx.fit(cell.run, *ctx.training_sets(generated), arm=arm, transform=transform,
                  init_fn=init_fn, unlabeled=unlabeled)
  acc = ctx.accuracy(res.state.variables)
  record = {"cell": cell.key, "arm": cell.arm, "base_arm": arm.base, "budget": cell.budget,
            "copies": cell.copies, "main": cell.main, "status": "ok", "seeds": list(ctx.seeds),
            "test_accuracy": acc.tolist(), "history": res.history}
  t_eval = time.perf_counter()
  if measures_robustness(cfg, cell):
    record["robust_accuracy"] = ctx.robust_accuracy(res.state.variables)
  if transform_info:
    record["transform_info"] = transform_info
  if unlabeled is not None:
    record["unlabeled_info"] = dict(unlabeled.info)
  if arm.variant is not None:
    record["strength"] = arm.variant
  record.update(_quality(ctx, measured))
  if cell.main and arm.group == "generator" and measured:
    record["cas"] = _classification_accuracy_score(ctx, cell, arm, measured)
  per_generator = _per_generator(record, measured, ctx.seeds)
  if per_generator:
    record["pool_generators"] = per_generator
  record["num_generated"] = int(sum(len(g.labels) for g in generated.values())
                                // max(len(generated), 1))
  first = generated[ctx.seeds[0]].info if generated else {}
  record["generation"] = {k: _mean_info([g.info for g in generated.values()], k)
                          for k in first if isinstance(first.get(k), (int, float))}
  if first.get("kept_per_class") is not None:  # one list per seed: how balanced each set is
    record["generation"]["kept_per_class"] = [g.info.get("kept_per_class")
                                              for g in generated.values()]
  if generated and isinstance(arm.source, arms_lib.Pool) and train_labels is not None:
    record["pseudo_label_accuracy"] = pseudo_label_accuracy(generated, train_labels)
  if first.get("history") or transform_history:
    # seed 0's (or the shared) generator
    record["generator_history"] = first.get("history") or transform_history
  gen_seconds += transform_seconds
  record["timing"] = {"gen_seconds": gen_seconds + pre_seconds, "train_seconds": res.seconds,
                      "eval_seconds": time.perf_counter() - t_eval,
                      "cell_seconds": time.perf_counter() - t_cell}
  if per_generator:  # wall-clock, so under timing: a resumed study's other fields match
    record["timing"]["pool_generator_seconds"] = _generator_seconds(measured, ctx.seeds)
  record["gen_seconds"] = record["timing"]["gen_seconds"]
  record["train_seconds"] = res.seconds
  # Cost as counted work, the same on every machine and every rerun (the
  # seconds above are not): images through a gradient step, per seed.
  gen_steps = np.mean([g.info.get("image_steps", 0) for g in generated.values()] or [0])
  steps = int(ctx.train_cfg.steps)
  record["cost"] = {"gen_image_steps": int(gen_steps) + int(pre_steps)
                    + int(transform_info.get("gen_image_steps", 0)),
                    "train_image_steps": steps * int(cfg.train.batch_size)}
  # A fresh-sample arm's generator passes (a bank's before training, the decoders' in every
  # step) and its labeler's forward passes in the step, per seed: counted apart, as no
  # gradient flows through them.
  sampled = (int(transform_info.get("sampled_images", 0))
             + steps * int(transform_info.get("sampled_per_step", 0)))
  if sampled:
    record["cost"]["sampled_images"] = sampled
  if transform_info.get("labeler_per_step"):
    record["cost"]["labeler_forward_images"] = steps * int(transform_info["labeler_per_step"])
  if unlabeled is not None:
    # Each unlabeled image drawn goes through the gradient step (its strong copy) and
    # a forward pass (its weak copy, counted apart: no gradient flows through it).
    u_steps = int(ctx.train_cfg.steps) * int(unlabeled.batch_size)
    record["cost"]["unlabeled_image_steps"] = u_steps
    record["cost"]["unlabeled_forward_images"] = u_steps
    record["cost"]["train_image_steps"] += u_steps
  return record


def _per_generator(record: dict[str, Any], generated: dict[int, Generated],
                   seeds) -> dict[str, Any] | None:
  """Which pool generator each seed read (its set's ``info["pool_generator"]``) and each
  generator's quality: the mean of the seeds it served. None for an arm whose sets
  name no pool generator.

  A generator's quality is measured on the sets made from it, each pseudo-labeled by
  its own seed's baseline, so it mixes the generator with those labelers, as the
  cell's mean does.
  """
  tags = [generated[s].info.get("pool_generator") for s in seeds] if generated else []
  if not tags or not all(isinstance(t, dict) for t in tags):
    return None
  index = [int(t["index"]) for t in tags]
  generators = []
  for g in sorted(set(index)):
    at = [i for i, x in enumerate(index) if x == g]
    row: dict[str, Any] = {"index": g, "seeds": [int(seeds[i]) for i in at]}
    for field, values in (("label_preservation", record.get("label_preservation_per_seed")),
                          ("frechet", record.get("frechet_per_seed")),
                          ("kid", record.get("kid_per_seed")), ("cas", record.get("cas"))):
      whole = values is not None and len(values) == len(seeds)
      # A seed whose measured set was empty (a fresh pool arm that found no confident
      # sample) has no value: the generator's mean is over the seeds that have one.
      have = [values[i] for i in at if values[i] is not None] if whole else []
      row[field] = float(np.mean(have)) if have else None
    generators.append(row)
  return {"of": int(tags[0]["of"]), "per_seed": index, "generators": generators}


def _generator_seconds(generated: dict[int, Generated], seeds) -> dict[str, float]:
  """Training seconds of each pool generator the seeds read, by its index (as a string,
  a JSON key); 0 where a set does not say."""
  out: dict[str, float] = {}
  for s in seeds:
    info = generated[s].info
    out.setdefault(str(info["pool_generator"]["index"]),
                   float(info.get("generator_train_seconds") or 0.0))
  return out


def pseudo_label_accuracy(generated: dict[int, Generated], train_labels: np.ndarray
                          ) -> list[float | None]:
  """Per seed: the share of a set's real training images (``source_index >= 0``) whose
  label is their withheld true label; None for a seed with none.

  A measurement only, made after the set exists. Generated samples have no true
  label; the oracle's agreement with their pseudo-labels is their label
  preservation.
  """
  out = []
  for g in generated.values():
    real = np.asarray(g.source_index) >= 0
    truth = np.asarray(train_labels)[np.asarray(g.source_index)[real]]
    out.append(float(np.mean(np.asarray(g.labels)[real] == truth)) if real.any() else None)
  return out


def _classification_accuracy_score(ctx: Context, cell: Cell, arm, generated) -> list[float]:
  """CAS (Ravuri & Vinyals 2019): a classifier trained only on the generated
  images, tested on the real test set; one value per seed."""
  sets = [(generated[seed].images, generated[seed].labels) for seed in ctx.seeds]
  res = ctx.fit(f"{cell.run}/cas", *pad_to_common(sets), arm=arm)
  return ctx.accuracy(res.state.variables).tolist()


def _quality(ctx: Context, generated: dict[int, Generated]) -> dict[str, Any]:
  """Label preservation, Fréchet distance and KID under the oracle.

  For arms without generated images, the real labeled images give the
  reference values. Every set's Fréchet distance is measured on
  ``eval.frechet_num_images`` of its images (:func:`dreamjax.methods.frechet.matched_frechet`),
  so the real labeled set and generated sets of any size read alike; a seed's set
  with fewer images has none. KID, unbiased at any size, reads the whole set.
  """
  o = ctx.oracle
  e = ctx.config.eval
  n = int(e.get("frechet_num_images", 0))
  lp, fd, kid = [], [], []
  for seed, s in zip(ctx.seeds, ctx.splits):
    if generated:
      x, y = generated[seed].images, generated[seed].labels
    else:
      x, y = s.labeled_images, s.labeled_labels
    if len(y) >= 2:
      lp.append(evaluate.accuracy_one(o.model, o.variables, x, y, mesh=ctx.mesh))
      feats = frechet.features(o.model, o.variables, x, layer=ctx.config.oracle.feature_layer,
                               mesh=ctx.mesh)
      fd.append(frechet.matched_frechet(feats, o.test_features, n,
                                        int(e.get("frechet_draws", 1))))
      kid.append(frechet.kernel_inception_distance(feats, o.test_features))
  known = [f for f in fd if f is not None]
  out = {"label_preservation": float(np.mean(lp)) if lp else None,
         "label_preservation_per_seed": lp,
         "frechet": float(np.mean(known)) if known else None, "frechet_per_seed": fd,
         # KID's expectation does not depend on the set's size, where Fréchet's does.
         "kid": float(np.mean(kid)) if kid else None, "kid_per_seed": kid,
         "source": "generated" if generated else "real labeled set"}
  if n:  # records of the first studies, which measured every image of a set, have none
    out["frechet_num_images"] = n
  return out


def alignment_cell(ctx: Context) -> dict[str, Any]:
  """Claim C3: the dream and attack directions of each seed's baseline."""
  n = ctx.config.eval.alignment_num
  per_seed = {"logit": [], "layer": [], "random": []}
  raw = []
  names = ctx.model.conv_features
  layer = f"conv{min(1, len(names) - 1)}"
  for seed in ctx.seeds:
    model, variables = ctx.baseline_model(seed)
    out = alignment.gradient_alignment(model, variables, ctx.test.test_images[:n],
                                       ctx.test.test_labels[:n], layer=layer, mesh=ctx.mesh)
    per_seed["logit"].append(float(out["logit"]["mean"]))
    per_seed["layer"].append(float(out["layer"]["mean"]))
    per_seed["random"].append(float(out["random"]["mean"]))
    raw.append(_summaries(out))
  return {"cell": f"N{ctx.budget}/alignment", "arm": "alignment", "budget": ctx.budget,
          "status": "ok", "layer": layer,
          "logit": stats.t_interval(per_seed["logit"]).to_dict(),
          "layer_objective": stats.t_interval(per_seed["layer"]).to_dict(),
          "random": stats.t_interval(per_seed["random"]).to_dict(),
          "per_seed": per_seed, "details": jsonable(raw)}


def _summaries(tree):
  """A nested result without its per-image arrays (those stay out of results.jsonl)."""
  if isinstance(tree, dict):
    return {k: _summaries(v) for k, v in tree.items()
            if k != "per_image" and not isinstance(v, (np.ndarray, list, jax.Array))}
  return tree


def _mean_info(infos, key):
  vals = [i[key] for i in infos if isinstance(i.get(key), (int, float))]
  return float(np.mean(vals)) if vals else None


def jsonable(x):
  return json.loads(json.dumps(x, default=lambda v: getattr(v, "tolist", lambda: str(v))()))
