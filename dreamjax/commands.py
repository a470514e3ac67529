"""The five commands: their flags, and the one importable function each calls.

``dreamjax NAME [FLAGS]`` (the console command of a pip install),
``./launch.sh NAME [FLAGS]`` and ``python experiments/NAME.py [FLAGS]`` all run
the same command. Each function here defines the command's absl flags when it
is called (so importing this module defines none) and returns its ``main``;
the work itself is one function of :mod:`dreamjax.runs` or
:mod:`dreamjax.study.run.runner`, which tests call directly. Each function imports
its command's modules when it is called, not at the top: `dreamjax NAME --help`
answers without loading JAX, and no command loads the modules of another.
"""

import os
import sys
from typing import Callable

from absl import flags
from absl import logging

from dreamjax import cli
from dreamjax.errors import ConfigError, ReproductionError



_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def _config(name: str, help_text: str):
  return cli.define_config(os.path.join(_CONFIGS, f"{name}.py"), help_text)


def study() -> Callable[[list[str]], None]:
  """Every claim of the seed answer, with CIs and verdicts (presets first, quick, conclusions, n100, tiny)."""
  from dreamjax.study.report import report  # pylint: disable=g-import-not-at-top
  from dreamjax.study.run import runner  # pylint: disable=g-import-not-at-top
  config = _config("study", "Study config (path[:preset]); presets first, quick, conclusions, n100, tiny.")
  workdir = flags.DEFINE_string("workdir", "runs/study", "Results, checkpoints, report.")
  dry_run = flags.DEFINE_bool("dry_run", False, "Validate config and data, print the plan, stop.")
  retry = flags.DEFINE_bool("retry_failed", False, "Run failed cells again instead of keeping them.")
  report_only = flags.DEFINE_bool("report_only", False, "Rewrite the report from results.jsonl.")
  publish = flags.DEFINE_string("publish", None, "With --report_only: copy the report, its"
                                " records and figures (no checkpoints) to this folder.")
  recheck = flags.DEFINE_string("recheck", None, "Recompute this finished cell (e.g."
                                " N1000/dream_subtle) from nothing and compare it with its record.")
  workers = flags.DEFINE_integer(
      "workers", None, "Worker processes on this machine that run the study's jobs as Ray"
      " tasks, one XLA:CPU thread each, so that the numbers do not depend on how many (0:"
      " every job in this process, in turn). Default: as the workdir's cells were computed;"
      " for a fresh workdir, one worker per CPU.")
  engine_address = flags.DEFINE_string(
      "engine_address", None, "Run the jobs on the running Ray cluster at this address"
      " (its head's host:port, or 'auto' on one of its nodes) instead of local workers;"
      " default: the RAY_ADDRESS environment variable. Every node must mount the workdir"
      " at the same path (docs/cluster.md).")
  workers_per_gpu = flags.DEFINE_integer(
      "workers_per_gpu", 2, "Where the engine's nodes have GPUs: workers that share each"
      " GPU, each given that share of its memory (XLA_PYTHON_CLIENT_MEM_FRACTION).")
  choose_length = flags.DEFINE_bool("choose_length", False, "Choose each budget's training"
                                    " length on the validation split (no test label is read)"
                                    " and write it to WORKDIR/length_choice.json; a rerun"
                                    " on the same workdir resumes.")
  choose_oracle = flags.DEFINE_bool("choose_oracle_length", False, "Choose the oracle's"
                                    " training length on a validation split (no test label"
                                    " is read) and write it to"
                                    " WORKDIR/oracle_length_choice.json; a rerun on the"
                                    " same workdir resumes.")
  choose_generator = flags.DEFINE_bool(
      "choose_generator_steps", False, "Choose the training length of the diffusion"
      " generators (diffusion_small, diffusion_pool) by their samples' label share and KID"
      " against the validation split (no test image or label is read) and write it to"
      " WORKDIR/generator_steps_choice.json; a rerun on the same workdir resumes.")

  def main(argv):
    del argv
    if publish.value and not report_only.value:
      raise ConfigError("--publish copies a finished report: pass it with --report_only.")
    if choose_length.value:
      from dreamjax.study.run import choose  # pylint: disable=g-import-not-at-top
      print(choose.choose_lengths(config.value, workdir.value, log=logging.info))
      return
    if choose_oracle.value:
      from dreamjax.study.run import choose  # pylint: disable=g-import-not-at-top
      print(choose.choose_oracle(config.value, workdir.value, log=logging.info))
      return
    if choose_generator.value:
      from dreamjax.study.run import choose  # pylint: disable=g-import-not-at-top
      print(choose.choose_generator_steps(config.value, workdir.value, log=logging.info))
      return
    if recheck.value:
      from dreamjax.study.run import recheck as recheck_lib  # pylint: disable=g-import-not-at-top
      out = recheck_lib.recheck_cell(config.value, workdir.value, recheck.value, log=logging.info)
      if out["identical"]:
        print(f"{recheck.value}: recomputed in {out['seconds'] / 60:.1f} min, identical to its"
              f" record ({', '.join(out['compared'])}; wall-clock fields aside)")
        return
      lines = "\n".join(f"  {p}: {a} recorded, {b} recomputed" for p, a, b in out["differences"])
      raise ReproductionError(f"{recheck.value} recomputed differs from its record:\n{lines}")
    if report_only.value:
      runner.check_workdir(config.value, workdir.value)  # the report must describe this study
      print(f"report: {report.write_report(config.value, workdir.value)['report']}")
      if publish.value:
        copied = report.publish(workdir.value, publish.value)
        print(f"published {len(copied)} files to {publish.value}")
      return
    from dreamjax.plumbing import sharding  # pylint: disable=g-import-not-at-top
    from dreamjax.study.run import engine  # pylint: disable=g-import-not-at-top
    address = engine_address.value or engine.address_from_env()
    n = runner.auto_workers(workdir.value) if workers.value is None else workers.value
    if sharding.process_count() > 1:  # a --distributed job: its processes run every job
      if workers.value or engine_address.value:
        raise ConfigError("a --distributed job runs the study's jobs in its own processes;"
                          " --workers and --engine_address run them on Ray workers instead:"
                          " pass one or the other.")
      n, address = 0, None
    if n < 0:
      raise ConfigError(f"--workers={n} is invalid: must be >= 0 (0: every job in this"
                        " process).")
    out = runner.run_study(config.value, workdir.value, dry_run=dry_run.value,
                           retry_failed=retry.value, log=logging.info, workers=n,
                           address=address, engine_options={"workers_per_gpu":
                                                            workers_per_gpu.value})
    if "report" in out:
      print(f"report: {out['report']}")

  return main


def _command(config_name: str, help_text: str, workdir: str, work) -> Callable:
  """A command of a config and a workdir whose ``work(config, workdir)`` returns its summary."""
  config = _config(config_name, help_text)
  where = flags.DEFINE_string("workdir", workdir, "Where results and checkpoints go.")

  def main(argv):
    del argv
    print(work(config.value, where.value))

  return main


def train_classifier() -> Callable[[list[str]], None]:
  """The classifier on the label budget (optionally + an augmented file); test accuracy."""
  from dreamjax.runs import classifier  # pylint: disable=g-import-not-at-top
  return _command("classifier", "Config file (path[:preset]); presets default, full, tiny.",
                  "runs/classifier", lambda c, w: "test accuracy:"
                  f" {classifier.train_and_evaluate(c, w)['test_accuracy']:.4f}")


def dream() -> Callable[[list[str]], None]:
  """Deep Dream a split with a classifier: augmented-set file, figures, results.json."""
  from dreamjax.runs import dream as dream_run  # pylint: disable=g-import-not-at-top

  def work(config, workdir):
    r = dream_run.dream_split(config, workdir)
    return (f"dreamed {r['count']} images in {r['seconds']:.1f}s"
            f" ({r['image_steps_per_s']:,.0f} image·steps/s); mean L2 {r['mean_l2']:.3f},"
            f" mean L∞ {r['mean_linf']:.3f}, objective gain {r['mean_objective_gain']:.4g}")

  return _command("dream", "Config file (path[:preset]); presets subtle, strong, logit, bn,"
                  " tiny.", "runs/dream", work)


def attack() -> Callable[[list[str]], None]:
  """Robust accuracy, an offline adversarial set and the C3 alignment of a classifier."""
  from dreamjax.runs import attack as attack_run  # pylint: disable=g-import-not-at-top

  def work(config, workdir):
    out = attack_run.run(config, workdir)
    lines = [f"clean accuracy: {out['clean_accuracy']:.4f}",
             f"robust accuracy (PGD eps={config.robust.eps}): {out['robust_accuracy']:.4f}"]
    if "alignment" in out:
      a = out["alignment"]
      lines.append(f"C3 cosine: logit dream vs attack {a['logit']['mean']:.3f},"
                   f" layer dream vs attack {a['layer']['mean']:.3f}")
    return "\n".join(lines)

  return _command("attack", "Config file (path[:preset]); presets default, tiny.",
                  "runs/attack", work)


def train_generator() -> Callable[[list[str]], None]:
  """A VAE, GAN or diffusion model (or a pretrained trunk): samples, losses, augmented set,
  results.json."""
  from dreamjax.runs import generator  # pylint: disable=g-import-not-at-top
  config = _config("generator", "Config file (path[:preset]); presets default, tiny.")
  workdir = flags.DEFINE_string("workdir", "runs/generator", "Where results and checkpoints go.")
  model = flags.DEFINE_string("model", None,
                              "Shortcut for --config.model (vae|gan|diffusion|ae|pretext).")
  source = flags.DEFINE_string("source", None, "Shortcut for --config.source (labeled|pool).")

  def main(argv):
    del argv
    cfg = config.value
    if model.value is not None:
      cfg.model = model.value
    if source.value is not None:
      cfg.source = source.value
    result = generator.train_and_evaluate(cfg, workdir.value)
    fd = result.get("frechet")
    print(f"{cfg.model} on {cfg.source}: losses {result['final_losses']}"
          + (f"; Fréchet samples/test {fd['samples_vs_test']:.2f},"
             f" real/test {fd['real_train_vs_test']:.2f}" if fd else ""))

  return main


def compare() -> Callable[[list[str]], None]:
  """Two runs of a study side by side: each cell's paired change and each claim's verdict."""
  a = flags.DEFINE_string("a", None, "The reference study folder (a workdir or a published copy).")
  b = flags.DEFINE_string("b", None, "The study compared with it: same data and seeds, one change.")
  out = flags.DEFINE_string("out", None, "Folder for COMPARISON.md, comparison.json and"
                            " comparison.png (default: --b).")
  name_a = flags.DEFINE_string("name_a", "A", "What --a is called in the tables.")
  name_b = flags.DEFINE_string("name_b", "B", "What --b is called in the tables.")

  def main(argv):
    del argv
    from dreamjax.study.report import compare as compare_lib  # pylint: disable=g-import-not-at-top
    if not a.value or not b.value:
      raise ConfigError("pass both --a and --b: the study folders to compare.")
    logging.info("writes to: %s", os.path.abspath(out.value or b.value))
    paths = compare_lib.write(a.value, b.value, out.value or b.value, name_a.value, name_b.value)
    print(f"comparison: {paths['markdown']}")

  return main


COMMANDS: dict[str, Callable[[], Callable[[list[str]], None]]] = {
    "study": study, "train_classifier": train_classifier, "dream": dream, "attack": attack,
    "train_generator": train_generator, "compare": compare}


def run_command(name: str) -> None:
  """Defines command ``name``'s flags and runs it with :func:`dreamjax.cli.run`."""
  cli.run(COMMANDS[name]())


def main() -> None:
  """The ``dreamjax`` console command: ``dreamjax NAME [FLAGS]``."""
  names = list(COMMANDS)
  if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "help"):
    print("usage: dreamjax COMMAND [FLAGS]   (dreamjax COMMAND --helpshort lists its flags)\n")
    for name in names:
      print(f"  {name:17s} {COMMANDS[name].__doc__.strip().splitlines()[0]}")
    sys.exit(0 if len(sys.argv) >= 2 else 2)
  name = sys.argv[1]
  if name not in COMMANDS:
    print(f"dreamjax error: unknown command {name!r}; choose one of {', '.join(names)}.",
          file=sys.stderr)
    sys.exit(2)
  sys.argv = [f"dreamjax {name}", *sys.argv[2:]]
  console = sys.modules["__main__"]  # pip's wrapper script, without a docstring
  if not console.__doc__:  # what --help and --helpshort print above the flags
    console.__doc__ = f"dreamjax {name} [FLAGS]: {COMMANDS[name].__doc__.strip()}\n"
  run_command(name)
