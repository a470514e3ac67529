"""The study's progress line: the per-job cost model, its calibration and the line itself.

Pure functions and made-up timings: a fake clock stands in for time, so no test sleeps.
"""

import datetime
import io
import re

import pytest

from dreamjax.configs import arms as arms_lib
from dreamjax.configs import study as study_configs
from dreamjax.study import cost
from dreamjax.study import plan as plan_lib
from dreamjax.study.run import progress, runner, taskgraph

NOON = datetime.datetime(2030, 1, 7, 12, 0).timestamp()  # a Monday


class Clock:
  """Elapsed seconds that move only when a test says so."""

  def __init__(self):
    self.t = 0.0

  def __call__(self) -> float:
    return self.t


class FakeTerminal(io.StringIO):

  def isatty(self) -> bool:
    return True


def _jobs(preset="tiny", **overrides):
  cfg = study_configs.get_config(preset)
  for field, value in overrides.items():
    cfg[field] = value
  arms = arms_lib.resolve(cfg)
  return cfg, arms, plan_lib.jobs(cfg, arms)


def _progress(cfg, jobs, arms, done=None, **kwargs):
  kwargs.setdefault("log", [].append)
  kwargs.setdefault("stream", io.StringIO())
  return progress.StudyProgress(cfg, jobs, arms, done or {}, spent_before=0.0,
                                wall=lambda: NOON, **kwargs)


def _ok(key, cell_seconds, train_seconds=0.0, eval_seconds=0.0):
  return {"cell": key, "status": "ok", "timing": {"cell_seconds": cell_seconds,
                                                  "train_seconds": train_seconds,
                                                  "eval_seconds": eval_seconds}}


@pytest.mark.parametrize("preset", ["quick", "conclusions"])
def test_pool_generator_cell_costs_more_than_baseline(preset):
  cfg, arms, jobs = _jobs(preset)
  costs = progress.job_costs(cfg, jobs, arms)
  assert set(costs) == {cell.key for cell in jobs}
  assert all(c > 0 for c in costs.values())
  budget = int(cfg.primary_budget)
  for arm in ("vae_pool", "gan_pool"):
    assert progress.arm_kind(arms[arm]) == "pool_generator"
    # Where it trains, its generators outweigh the baseline's robustness evaluation;
    # elsewhere its sampling and classification accuracy score outweigh a stored copy.
    first = next(cell for cell in jobs if cell.arm == arm)
    assert costs[first.key] > costs[f"N{first.budget}/baseline"]
    assert costs[f"N{budget}/{arm}"] > costs[f"N{budget}/classical"]
  # The pool generator trains once, in the arm's first cell; its cell at M = 2 reads it.
  first = next(cell.key for cell in jobs if cell.arm == "vae_pool")
  again = costs[f"N{budget}/vae_pool/M2"]
  assert costs[first] - again > progress.generator_work(arms["vae_pool"]) > 0
  assert progress.arm_kind(arms["baseline"]) == "plain"
  assert progress.arm_kind(arms["dream_subtle"]) == "dream"
  assert progress.arm_kind(arms["ae_pretrain"]) == "pretrained"
  # An online attack trains dearer than the plain baseline.
  assert progress.transform_factor(cfg, arms["pgd_train"]) > progress.transform_factor(
      cfg, arms["baseline"])


def test_fresh_sample_arms_are_priced_by_what_they_draw_and_share_their_twins_generator():
  cfg, arms, jobs = _jobs("quick")
  costs = progress.job_costs(cfg, jobs, arms)
  n, k = int(cfg.primary_budget), int(cfg.num_seeds)
  kinds = {a: progress.arm_kind(arms[a]) for a in ("vae_small_online", "gan_pool_online",
                                             "diffusion_small_online", "diffusion_pool_online")}
  assert kinds == {"vae_small_online": "online_small_generator",
                   "gan_pool_online": "online_pool_generator",
                   "diffusion_small_online": "bank_small_generator",
                   "diffusion_pool_online": "bank_pool_generator"}
  # The decoder's samples in every step make a step dearer; a pool arm draws 4 per image.
  small, pool = (progress.transform_factor(cfg, arms[a]) for a in ("vae_small_online",
                                                                   "vae_pool_online"))
  assert 1 < small < pool and progress.transform_factor(
      cfg, arms["diffusion_small_online"]) < small
  # A bank of 20·N diffusion samples costs more than the stored arm's N.
  # (The stored arm trains the seeds' diffusion models; the fresh arm reads them back.)
  trained = k * progress.generator_work(arms["diffusion_small"])
  bank = costs[f"N{n}/diffusion_small_online"] + trained - costs[f"N{n}/diffusion_small"]
  assert bank > k * 18 * n * progress.sample_work(arms["diffusion_small"])
  # The pool generator trains once for the stored arm and its fresh form, whichever is first.
  order = [cell.arm for cell in jobs]
  assert order.index("gan_pool") < order.index("gan_pool_online")
  solo = study_configs.get_config("quick")
  solo.arms = ("baseline", "gan_pool_online")
  solo_arms = arms_lib.resolve(solo)
  alone = progress.job_costs(
      solo, runner.job_order(solo, runner.plan(solo, solo_arms), False), solo_arms)
  charged = alone[f"N{n}/gan_pool_online"] - costs[f"N{n}/gan_pool_online"]
  assert charged == pytest.approx(progress.pool_generators_trained(cfg)
                                  * progress.generator_work(arms["gan_pool"]))
  assert progress.pool_generators_trained(cfg) == 3  # G generators, seeds cycling over them


def test_a_dream_through_the_deep_dreamer_costs_more_and_its_pretraining_is_charged_once():
  cfg, arms, jobs = _jobs("quick")
  costs = progress.job_costs(cfg, jobs, arms)
  deep, small = arms["deep_dream_subtle"], arms["dream_subtle"]
  factor = progress.dreamer_factor(cfg, deep)
  assert factor == progress.DREAMER_STEP > 1 and progress.dreamer_factor(cfg, small) == 1
  wider = study_configs.get_config("quick")
  wider.pool_dreamer.model.conv_features = (32, 64, 128, 128)
  assert progress.dreamer_factor(wider, deep) > 2 * factor
  assert progress.dream_steps(cfg, deep) == factor * progress.dream_steps(cfg, small)
  assert progress.transform_factor(cfg, arms["deep_dream_online"]) > progress.transform_factor(
      cfg, arms["dream_online"])
  pretraining = progress.dreamer_work(cfg, deep)
  assert pretraining > 0
  # With a user's dreamer nothing is pretrained: only the first job that dreams
  # through it (deep_dream_subtle, registered first) was charged for it.
  cfg.pool_dreamer.checkpoint = "/a/users/dreamer.msgpack"
  assert progress.dreamer_work(cfg, deep) == 0.0
  without = progress.job_costs(cfg, jobs, arms)
  changed = {k: costs[k] - without[k] for k in costs if costs[k] != without[k]}
  assert changed == {"N1000/deep_dream_subtle": pytest.approx(pretraining)}


def test_longer_budget_training_costs_more():
  cfg, arms, jobs = _jobs("conclusions")
  costs = progress.job_costs(cfg, jobs, arms)
  # N5000 trains 2,400 steps (train_steps_by_budget), N1000 1,200: every arm costs more.
  assert costs["N5000/classical_online"] > costs["N1000/classical_online"]
  assert costs["N5000/baseline"] > costs["N1000/baseline"]


def test_dry_run_estimate_sums_its_jobs():
  cfg, arms, jobs = _jobs("quick")
  est = progress.estimate(cfg, jobs, arms, seconds_per_train_step=0.05)
  assert est.total == pytest.approx(est.oracle + sum(est.jobs.values()))
  assert sum(est.budgets.values()) == pytest.approx(sum(est.jobs.values()))
  assert set(est.budgets) == {1000, 1250, 1500, 2000}
  assert est.jobs["N1000/vae_pool"] > est.jobs["N1000/baseline"]
  text = "\n".join(est.lines(cfg))
  assert "estimated wall time on this machine" in text
  assert "N1000 ~" in text and "N1250 (exchange rate) ~" in text
  # Twice the step time, twice the estimate.
  assert progress.estimate(cfg, jobs, arms, 0.1).total == pytest.approx(2 * est.total)
  assert est.wall == est.total  # in one process, one job after another


def test_dry_run_estimate_on_workers_schedules_the_tasks():
  cfg, arms, jobs = _jobs("quick")
  est = progress.estimate(cfg, jobs, arms, seconds_per_train_step=0.05, workers=2)
  assert est.workers == 2 and est.total / 2 <= est.wall < est.total
  text = "\n".join(est.lines(cfg))
  assert "on 2 workers" in text and "of work" in text


def test_calibration_ratio_and_time_left():
  assert progress.calibration_ratio([]) is None
  assert progress.calibration_ratio([(10.0, 20.0), (30.0, 60.0)]) == pytest.approx(2.0)
  # Big jobs weigh more than small ones.
  assert progress.calibration_ratio([(1.0, 10.0), (99.0, 99.0)]) == pytest.approx(1.09)
  assert progress.time_left([10.0, 20.0], ratio=2.0) == pytest.approx(60.0)
  # The running job's part shrinks as it runs, never below zero.
  assert progress.time_left([10.0], 1.0, running=30.0, elapsed=12.0) == pytest.approx(28.0)
  assert progress.time_left([10.0], 1.0, running=30.0, elapsed=45.0) == pytest.approx(10.0)
  assert progress.average_left([], 3) is None
  assert progress.average_left([10.0, 20.0], 3, elapsed=5.0) == pytest.approx(40.0)


def test_recalibration_moves_the_eta_toward_the_observed_ratio():
  cfg, arms, jobs = _jobs()
  clock = Clock()
  p = _progress(cfg, jobs, arms, clock=clock)
  p.rate = 0.001
  before, note = p.left()
  assert note == " (uncalibrated)"
  assert before == pytest.approx(sum(p.costs.values()) * 0.001)
  first, second = jobs[0].key, jobs[1].key
  predicted = p.costs[first] * 0.001
  p.start(first)
  clock.t += 3 * predicted  # the first job takes three times its prediction
  p.end(first, {"status": "ok"})
  assert p.ratio() == pytest.approx(3.0)
  after, note = p.left()
  assert note == ""
  rest = sum(c for k, c in p.costs.items() if k != first) * 0.001
  assert after == pytest.approx(3 * rest)
  # A second job that takes what the model first said pulls the ratio back toward 1.
  p.start(second)
  clock.t += p.costs[second] * 0.001
  p.end(second, {"status": "ok"})
  want = (3 * predicted + p.costs[second] * 0.001) / (predicted + p.costs[second] * 0.001)
  assert p.ratio() == pytest.approx(want) and 1.0 < want < 3.0
  # A failed job is done but calibrates nothing.
  third = jobs[2].key
  p.start(third)
  clock.t += 1000.0
  p.end(third, {"status": "failed", "error": "x"})
  assert p.ratio() == pytest.approx(want) and third in p.finished


def test_on_workers_the_time_left_is_the_work_shared_but_never_less_than_the_longest_job():
  cfg, arms, jobs = _jobs()
  p = _progress(cfg, jobs, arms, clock=Clock(), parallel=2)
  p.rate = 0.001
  seconds = {k: c * 0.001 for k, c in p.costs.items()}
  assert p.left()[0] == pytest.approx(max(sum(seconds.values()) / 2, max(seconds.values())))
  longest = max(seconds, key=seconds.get)
  for key in seconds:  # every other job done as predicted: the longest is left alone
    if key != longest:
      p.end(key, {"cell": key, "status": "ok", "timing": {"cell_seconds": seconds[key]}})
  assert p.left()[0] == pytest.approx(seconds[longest])  # not half of it
  assert _progress(cfg, jobs, arms, clock=Clock()).parallel == 1


def test_on_workers_shared_models_are_tasks_of_their_own_and_the_time_left_is_scheduled():
  """As the engine runs them: a pool arm's cell is priced without the generators it
  reads (a task of their own, or restored when kept), so its worker's seconds calibrate
  the model, and the time left is the tasks left scheduled on the workers."""
  cfg, arms, jobs = _jobs("quick")
  graph = taskgraph.graph(cfg, jobs, arms, {})
  p = _progress(cfg, jobs, arms, clock=Clock(), parallel=2, graph=graph, built={"vae_pool"})
  p.rate = 0.001
  assert p.costs == progress.job_costs(cfg, jobs, arms, charge_shared=False)
  assert p.costs["N1000/gan_pool"] < progress.job_costs(cfg, jobs, arms)["N1000/gan_pool"]
  steps = taskgraph.task_costs(cfg, graph, arms)
  assert "artefact/vae_pool" not in p.shared  # kept in the workdir: restored
  assert p.shared["artefact/vae_pool_g1"] == steps["artefact/vae_pool_g1"] > 0
  assert p.shared["artefact/gan_pool"] == steps["artefact/gan_pool"]

  def scheduled():
    seconds = {k: c * 0.001 for k, c in p.costs.items() if k not in p.finished}
    seconds.update({k: c * 0.001 for k, c in p.shared.items()})
    return taskgraph.schedule([t for t in graph if t.key in seconds], seconds, 2)

  plan = scheduled()
  assert p.left()[0] == pytest.approx(plan["makespan_s"])
  assert plan["makespan_s"] >= plan["critical_path_s"] > max(p.costs.values()) * 0.001
  p.end_shared("artefact/gan_pool")  # its result arrived: it costs nothing more
  assert "artefact/gan_pool" not in p.shared
  assert p.left()[0] == pytest.approx(scheduled()["makespan_s"])
  key = "N1000/gan_pool"  # a worker's cell that took what it was priced at, generators aside
  p.end(key, {"cell": key, "status": "ok", "timing": {"cell_seconds": p.costs[key] * 0.001}})
  assert p.ratio() == pytest.approx(1.0)
  assert p.left()[0] == pytest.approx(scheduled()["makespan_s"])


def test_without_a_price_the_first_finished_job_sets_it():
  cfg, arms, jobs = _jobs()
  clock = Clock()
  p = _progress(cfg, jobs, arms, clock=clock)
  p.use_oracle(None)  # an oracle record without its training time
  assert p.left() == (None, "")
  p.start(jobs[0].key)
  clock.t += 10.0
  p.end(jobs[0].key, {"status": "ok"})
  left, note = p.left()
  rest = sum(c for k, c in p.costs.items() if k != jobs[0].key)
  assert note == "" and left == pytest.approx(10.0 / p.costs[jobs[0].key] * rest)


def test_oracle_record_prices_the_first_estimate():
  cfg, arms, jobs = _jobs()
  p = _progress(cfg, jobs, arms)
  p.use_oracle({"cell": "oracle", "timing": {"train_seconds": 8.0}})
  o = cfg.oracle.train
  # The oracle's network is wider than the classifier's, and its steps augment part of
  # every batch: a plain step of the classifier costs less.
  assert cfg.oracle.augment == "classical"
  network = cost.oracle_network(cfg)  # the tiny preset's oracle network, priced by its work
  assert network == pytest.approx(cost.ORACLE_STEP * cost.conv_work(cfg.oracle.model)
                                  / cost.conv_work(study_configs.common.model_config("small")))
  assert p.rate == pytest.approx(
      8.0 / (o.steps * o.batch_size * network * (1 + progress.ONLINE_PIXEL_OPS)))
  cfg.oracle.augment = "none"
  p = _progress(cfg, jobs, arms)
  p.use_oracle({"cell": "oracle", "timing": {"train_seconds": 8.0}})
  assert p.rate == pytest.approx(8.0 / (o.steps * o.batch_size * network))
  # The default oracle network costs more per image than the tiny one.
  default = cost.oracle_network(study_configs.get_config("quick"))
  assert default == pytest.approx(cost.ORACLE_STEP) and default > network
  left, note = p.left()
  assert note == " (uncalibrated)" and left == pytest.approx(sum(p.costs.values()) * p.rate)


def test_line_on_a_log_is_one_plain_line_per_job_start_and_end():
  cfg, arms, jobs = _jobs()
  clock, lines, stream = Clock(), [], io.StringIO()
  p = _progress(cfg, jobs, arms, clock=clock, log=lines.append, stream=stream)
  p.use_oracle({"timing": {"train_seconds": 0.5}})  # the tiny oracle: finished today
  key, total = jobs[0].key, len(jobs)
  clock.t = 30.0  # the oracle took half a minute
  p.start(key)
  (start,) = lines
  assert re.fullmatch(rf"\[1/{total}\] {re.escape(key)}, 0/{total} cells done, 30 s spent,"
                      r" ~\S+ (s|min|h \d\d min) left \(uncalibrated\), finish ~\d\d:\d\d",
                      start), start
  assert re.search(rf"\] {re.escape(key)}(,|$)", start)  # what the kill-and-resume test reads
  p.log("training step 10")
  clock.t += 90.0
  p.end(key, {"status": "ok"})
  assert lines[1] == "training step 10"
  assert re.fullmatch(rf"\[1/{total}\] {re.escape(key)} done in 1\.5 min \(predicted \S+ \S+\);"
                      rf" 1/{total} cells done, 2\.0 min spent, ~\S+ (s|min|h \d\d min) left,"
                      r" finish ~\d\d:\d\d",
                      lines[2]), lines[2]
  assert not re.search(rf"\] {re.escape(key)}(,|$)", lines[2])
  p.start(jobs[1].key)
  assert lines[3].startswith(f"[2/{total}] {jobs[1].key}, 1/{total} cells done")
  p.end(jobs[1].key, {"status": "failed", "error": "boom"})
  assert f"{jobs[1].key} failed after 0 s;" in lines[4]
  p.close()
  assert stream.getvalue() == ""  # no bar on a log


def test_finish_time_names_the_day_when_not_today():
  assert progress.format_clock(NOON + 3600, NOON) == "13:00"
  assert progress.format_clock(NOON + 86400, NOON) == "Tue 08 Jan 12:00"
  text = progress.status_text(3, 10, 125.0, 2 * 86400, NOON)
  assert text == "3/10 cells done, 2.1 min spent, ~48 h 00 min left, finish ~Wed 09 Jan 12:00"
  assert progress.status_text(0, 10, 5.0, None, NOON).endswith("time left unknown")
  assert [progress.format_duration(s) for s in (42, 210, 2880, 7500)] == [
      "42 s", "3.5 min", "48 min", "2 h 05 min"]


def test_bar_on_a_terminal_redraws_in_place(monkeypatch):
  monkeypatch.setenv("COLUMNS", "160")
  cfg, arms, jobs = _jobs()
  clock, lines, term = Clock(), [], FakeTerminal()
  p = _progress(cfg, jobs, arms, clock=clock, log=lines.append, stream=term)
  p.use_oracle({"timing": {"train_seconds": 8.0}})
  key, total = jobs[0].key, len(jobs)
  p.start(key)
  drawn = term.getvalue()
  assert drawn.startswith(f"\r\x1b[K[1/{total}] {key} [{'-' * 12}] 0/{total} cells done")
  assert "\n" not in drawn and lines == []  # the bar only: no plain line
  p.log("training step 10")  # a line clears the bar, which comes back below it
  assert lines == ["training step 10"]
  assert term.getvalue()[len(drawn):].startswith(f"\r\x1b[K\r\x1b[K[1/{total}] {key} [")
  clock.t += 10.0
  p.end(key, {"status": "ok"})
  last = term.getvalue().rsplit("\r\x1b[K", 1)[1]
  assert last.startswith(f"[1/{total}] [") and f"1/{total} cells done" in last
  assert f"[1/{total}] {progress.bar(1 / total, 12)} " in last
  assert progress.bar(0.5, 4) == "[##--]" and progress.bar(1.2, 4) == "[####]"
  p.close()
  assert term.getvalue().endswith("\r\x1b[K") and "\n" not in term.getvalue()
  p.log("study finished")  # after close the bar stays away
  assert term.getvalue().endswith("\r\x1b[K") and lines[-1] == "study finished"


def test_resumed_study_calibrates_on_its_finished_records():
  cfg, arms, jobs = _jobs()
  costs = progress.job_costs(cfg, jobs, arms)
  rate = 0.001
  cells = [c.key for c in jobs if c.job != "alignment"][:3]
  done = {key: _ok(key, 2 * costs[key] * rate) for key in cells}
  done["N100/alignment"] = {"cell": "N100/alignment", "status": "ok", "timing": {}}
  p = _progress(cfg, jobs, arms, done)
  p.rate = rate
  assert p.finished == set(done) and set(p.actual) == set(cells)
  assert p.ratio() == pytest.approx(2.0)
  left, note = p.left()
  assert note == ""
  assert left == pytest.approx(2 * rate * sum(c for k, c in costs.items() if k not in done))
  assert p.status().startswith(f"{len(done)}/{len(jobs)} cells done")


def test_record_seconds_counts_a_baseline_trained_before_its_cell():
  assert progress.record_seconds(_ok("N100/classical", 50.0, 30.0, 10.0)) == 50.0
  assert progress.record_seconds(_ok("N100/baseline", 4.0, 30.0, 3.0)) == 33.0
  assert progress.record_seconds({"status": "failed", "error": "x"}) is None
  assert progress.record_seconds({"status": "ok", "timing": {"xla": {}}}) is None


def test_a_broken_cost_model_falls_back_to_averages(monkeypatch):
  def broken(*args, **kwargs):
    raise KeyError("generator_steps")
  monkeypatch.setattr(progress, "job_costs", broken)
  cfg, arms, jobs = _jobs()
  clock, lines = Clock(), []
  p = _progress(cfg, jobs, arms, clock=clock, log=lines.append)
  p.use_oracle({"timing": {"train_seconds": 8.0}})
  p.start(jobs[0].key)
  assert lines[0].endswith("time left unknown")
  clock.t += 10.0
  p.end(jobs[0].key, {"status": "ok"})
  p.start(jobs[1].key)
  left = 10.0 * (len(jobs) - 1)
  assert f"~{progress.format_duration(left)} left (mean of finished cells)" in lines[-1]


def test_a_failing_status_keeps_the_bare_line(monkeypatch):
  cfg, arms, jobs = _jobs()
  lines = []
  p = _progress(cfg, jobs, arms, log=lines.append)
  monkeypatch.setattr(p, "status", lambda: 1 / 0)
  p.start(jobs[0].key)
  p.end(jobs[0].key, {"status": "ok"})
  assert lines == [f"[1/{len(jobs)}] {jobs[0].key}", f"[1/{len(jobs)}] {jobs[0].key} done"]


def test_bar_on_a_narrow_terminal_keeps_to_one_line(monkeypatch):
  monkeypatch.setenv("COLUMNS", "60")
  cfg, arms, jobs = _jobs()
  term = FakeTerminal()
  p = _progress(cfg, jobs, arms, stream=term)
  p.start(jobs[0].key)
  drawn = term.getvalue()[len("\r\x1b[K"):]
  assert len(drawn) == 59 and drawn.startswith(f"[1/{len(jobs)}] {jobs[0].key} 0/")  # no bar
