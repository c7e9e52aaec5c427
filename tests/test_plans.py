"""Plans of runs: job planning, the deadline, the learning-rate choice (on dev loss, never test) and the study report."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import pytest

from experiments.plans import Clock, Job, collect, eval_name, load_plan, plan_jobs, run_jobs
from experiments.reports.study import markdown, params

PLAN = {
    "mixture": ["a=corpus/a:1"],
    "pretrain": {"block_size": 32, "compile": True, "no_bf16": False},
    "sizes": [{"name": "s", "n_layer": 1, "n_head": 1, "n_embd": 8, "lr": 1e-3, "seconds": 5},
              {"name": "cont", "init_from": "ckpt/base", "lr": 1e-4, "seconds": 5}],
    "evals": [{"task": "e2e", "method": "prefix", "lrs": [1e-3, 3e-3], "seeds": [0, 1], "args": {"epochs": 2}},
              {"task": "sst2", "method": "finetune", "lrs": [1e-4], "seeds": [0]}],
}


def test_plan_pretrains_first_and_runs_every_first_seed_before_any_other(tmp_path):
    jobs = plan_jobs(PLAN, tmp_path, py="python")
    names = [j.name for j in jobs]
    assert len(set(names)) == len(names)
    assert names[:4] == ["pretrain-s", "card-s", "pretrain-cont", "card-cont"]
    evals = jobs[4:]
    assert len(evals) == 2 * (2 * 2 + 1 * 1)  # sizes x (e2e lrs x seeds + sst2)
    later = [j.later for j in evals]
    assert later == sorted(later)  # first seeds, then the rest
    assert all(j.needs == [f"pretrain-{j.name.split('-')[0]}"] for j in evals)
    assert {j.group for j in evals if j.name.startswith("s-e2e")} == {"s-e2e-prefix"}  # one arm: one cost
    scratch, cont = jobs[0].cmd, jobs[2].cmd
    assert "--compile" in scratch and "--no-bf16" not in scratch  # booleans are switches
    assert scratch[scratch.index("--n-embd") + 1] == "8" and "--init-from" not in scratch
    assert cont[cont.index("--init-from") + 1] == "ckpt/base" and "--n-layer" not in cont
    e2e = next(j for j in evals if j.name == "s-e2e-prefix-lr0.003-seed1")
    assert {"--lr=0.003", "--seed=1", "--epochs=2", "--task=e2e", f"--model={tmp_path}/models/s"} <= set(e2e.cmd)


def test_checkpoints_need_no_job_and_adapted_models_wait_for_their_adaptation(tmp_path):
    plan = {"sizes": [{"name": "none", "checkpoint": "ckpt/base"},
                      {"name": "shared", "adapt": {"from": "ckpt/base", "tasks": ["e2e", "sst2"], "tokens": 1000}}],
            "evals": [{"task": "e2e", "method": "prefix", "lrs": [1e-3], "seeds": [0], "only": ["shared"]},
                      {"task": "sst2", "method": "prefix", "lrs": [1e-3], "seeds": [0]}]}
    jobs = {j.name: j for j in plan_jobs(plan, tmp_path, py="python")}
    assert list(jobs) == ["adapt-shared", "shared-e2e-prefix-lr0.001-seed0", "none-sst2-prefix-lr0.001-seed0",
                          "shared-sst2-prefix-lr0.001-seed0"]  # "only" keeps the e2e runs to the shared model
    adapt = jobs["adapt-shared"].cmd
    assert adapt[adapt.index("--tasks") + 1] == "e2e,sst2" and adapt[adapt.index("--model") + 1] == "ckpt/base"
    assert jobs["none-sst2-prefix-lr0.001-seed0"].needs == []
    assert "--model=ckpt/base" in jobs["none-sst2-prefix-lr0.001-seed0"].cmd
    assert jobs["shared-e2e-prefix-lr0.001-seed0"].needs == ["adapt-shared"]
    assert f"--model={tmp_path}/models/shared" in jobs["shared-e2e-prefix-lr0.001-seed0"].cmd


def script(tmp_path, name, body):
    f = tmp_path / f"{name}.py"
    f.write_text(body)
    return [sys.executable, str(f)]


def test_deadline_stops_late_jobs_and_skips_what_cannot_finish(tmp_path):
    done, saved = tmp_path / "quick.done", tmp_path / "slow.saved"
    quick = Job("quick", script(tmp_path, "q", f"open({str(done)!r}, 'w').write('ok')"), done, estimate=1)
    # as training does on Ctrl-C: save, then stop
    slow = Job("slow", script(tmp_path, "s", f"import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
                                             f"    open({str(saved)!r}, 'w').write('state')\n    raise"),
               tmp_path / "never", estimate=1)
    broken = Job("broken", script(tmp_path, "b", "raise SystemExit(3)"), tmp_path / "never2", estimate=1)
    after_broken = Job("after", [sys.executable, "-c", "pass"], tmp_path / "never3", estimate=1, needs=["broken"])
    too_long = Job("long", [sys.executable, "-c", "pass"], tmp_path / "never4", estimate=3600)
    start = time.time()
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a sweep started with `&`: children inherit it
    try:
        jobs = run_jobs([quick, slow, broken, after_broken, too_long], tmp_path, max_jobs=3, end=time.time() + 6,
                        poll=0.2)
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert time.time() - start < 40  # the stopped job ended on Ctrl-C, not on the kill a minute later
    status = {j.name: j.status for j in jobs}
    assert status == {"quick": "done", "slow": "unfinished", "broken": "failed", "after": "skipped",
                      "long": "skipped"}
    assert saved.read_text() == "state"  # the stopped job could save what it had done
    recorded = {r["name"]: r["status"] for r in json.loads((tmp_path / "jobs.json").read_text())}
    assert recorded == status
    # a second run does not repeat what finished
    again = run_jobs([Job("quick", [sys.executable, "-c", "raise SystemExit(1)"], done, 1)], tmp_path, 1, None, 0.2)
    assert again[0].status == "done"


def saving_job(tmp_path, name, estimate=1.0):
    """A job that runs for a minute unless stopped by Ctrl-C, on which it saves its state (as training does)."""
    saved = tmp_path / f"{name}.saved"
    body = (f"import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
            f"    open({str(saved)!r}, 'w').write('state')\n    raise")
    return Job(name, script(tmp_path, name, body), tmp_path / f"{name}.never", estimate=estimate), saved


def test_start_late_starts_a_job_that_cannot_finish_and_the_deadline_saves_its_state(tmp_path):
    job, saved = saving_job(tmp_path, "long", estimate=3600)
    skipped = run_jobs([job], tmp_path, max_jobs=1, end=time.time() + 3, poll=0.2)
    assert skipped[0].status == "skipped" and not saved.exists()  # by default: not started
    job, saved = saving_job(tmp_path, "long", estimate=3600)
    started = run_jobs([job], tmp_path, max_jobs=1, end=time.time() + 3, poll=0.2, start_late=True)
    assert started[0].status == "unfinished" and saved.read_text() == "state"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_on_the_runner_stops_its_jobs_and_they_save_their_state(tmp_path, sig):
    first, saved = saving_job(tmp_path, "first")
    second, _ = saving_job(tmp_path, "second")  # waits for a slot: one job at a time
    def escaped(signum, frame):  # so that a runner which lets the signal through fails this test, not pytest
        raise KeyboardInterrupt
    term = signal.signal(signal.SIGTERM, escaped)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(2.0, os.kill, (os.getpid(), sig))  # the user's Ctrl-C, or a kill, on the runner
    timer.start()
    start = time.time()
    try:
        with pytest.raises(SystemExit, match="interrupted: 1 run.*first.*resumes"):
            run_jobs([first, second], tmp_path, max_jobs=1, end=None, poll=0.2)
    except KeyboardInterrupt:
        pytest.fail("the signal went through the runner, leaving its job running")
    finally:
        timer.join()
        after = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, term)
    assert time.time() - start < 40  # the job ended on its Ctrl-C, not on the kill a minute later
    assert saved.read_text() == "state"
    recorded = {r["name"]: r["status"] for r in json.loads((tmp_path / "jobs.json").read_text())}
    assert recorded == {"first": "unfinished", "second": "waiting"}
    assert after == handlers  # the runner gives back the handlers it found


def finished(tmp_path, name, group, estimate, seconds=None):
    """A job of `group`; with `seconds`, one that has finished, its metrics.json recording that long."""
    done = tmp_path / name / "metrics.json"
    if seconds is not None:
        done.parent.mkdir(parents=True)
        done.write_text(json.dumps({"train_seconds": seconds - 10, "decode_seconds": 10}))
    return Job(name, [sys.executable, "-c", "pass"], done, estimate=estimate, group=group)


def test_expected_times_are_learnt_from_finished_runs(tmp_path):
    jobs = [finished(tmp_path, "a0", "a", 300, seconds=100), finished(tmp_path, "a1", "a", 300, seconds=120),
            finished(tmp_path, "b0", "b", 500, seconds=400), finished(tmp_path, "b1", "b", 500),
            finished(tmp_path, "a2", "a", 300), finished(tmp_path, "c0", "c", 1000), Job("own", [], tmp_path / "own", 50)]
    clock = Clock(jobs)
    assert clock(jobs[4]) == pytest.approx(1.25 * 120) and clock(jobs[3]) == pytest.approx(1.25 * 400)
    # an arm not run yet: its estimate, corrected by the median of the measured arms' ratios (0.4 and 0.8)
    assert clock(jobs[5]) == pytest.approx(1.25 * 0.6 * 1000)
    assert "x 0.75" in clock.source(jobs[5]) and "longest finished run" in clock.source(jobs[4])
    assert clock(jobs[6]) == pytest.approx(1.25 * 0.6 * 50)  # ungrouped: corrected, never measured
    clock.add(jobs[5], 2000)  # a run finishing while the sweep runs counts at once
    assert clock(jobs[5]) == pytest.approx(2500)
    unmeasured = finished(tmp_path, "d0", "d", 70)
    nothing = Clock([unmeasured])  # no run finished yet: the plan's estimate as it is
    assert nothing(unmeasured) == 70 and nothing.source(unmeasured) == "the plan's estimate"


def test_the_deadline_trusts_measured_times_over_the_plans_estimates(tmp_path):
    # the plan says an hour, but this arm's runs took 2 s: it fits a 60 s budget; the reverse does not
    quick = [finished(tmp_path, "q0", "quick", 3600, seconds=2), finished(tmp_path, "q1", "quick", 3600)]
    slow = [finished(tmp_path, "s0", "slow", 1, seconds=3600), finished(tmp_path, "s1", "slow", 1)]
    quick[1].cmd = [sys.executable, "-c", f"open({str(quick[1].done_file)!r}, 'w').write('{{}}')"]
    quick[1].done_file.parent.mkdir()
    status = {j.name: j.status for j in run_jobs(quick + slow, tmp_path, 1, time.time() + 60, poll=0.1)}
    assert status == {"q0": "done", "q1": "done", "s0": "done", "s1": "skipped"}


def write_run(out, size, ev, lr, seed, dev, score, dev_by_epoch=None):
    d = out / "results" / eval_name(size, ev, lr, seed)
    d.mkdir(parents=True)
    metrics = {"best_dev_loss": dev, "bleu": score, "trainable_params": 100, "kept_params": 10,
               **({"dev_loss": dev_by_epoch} if dev_by_epoch else {})}
    (d / "metrics.json").write_text(json.dumps(metrics))


def test_learning_rate_is_chosen_on_dev_loss_over_shared_seeds(tmp_path):
    plan = {"sizes": [{"name": "s"}], "evals": [{"task": "e2e", "method": "prefix", "lrs": [1e-3, 3e-3],
                                                  "seeds": [0, 1, 2]}]}
    size, ev = plan["sizes"][0], plan["evals"][0]
    # lr 1e-3: better dev loss, worse test BLEU; lr 3e-3 has a third seed with a tiny dev loss
    for seed, dev, bleu in ((0, 1.0, 50.0), (1, 1.2, 52.0)):
        write_run(tmp_path, size, ev, 1e-3, seed, dev, bleu)
    for seed, dev, bleu in ((0, 1.5, 60.0), (1, 1.5, 61.0), (2, 0.1, 62.0)):
        write_run(tmp_path, size, ev, 3e-3, seed, dev, bleu)
    row = collect(plan, tmp_path)["table"][0]
    assert row["chosen_lr"] == 1e-3  # 1.1 vs 1.5 on seeds 0 and 1; test BLEU never looked at
    # the report shows what was compared: seed 2's 0.1 is not in 3e-3's mean
    assert row["dev_loss_by_lr"] == {"0.001": pytest.approx(1.1), "0.003": pytest.approx(1.5)}
    assert row["scores"] == [50.0, 52.0] and row["mean"] == pytest.approx(51.0) and row["n"] == 2
    # a diverged lr (non-finite dev loss) is never chosen
    write_run(tmp_path, size, ev, 1e-3, 2, float("nan"), 0.0)
    assert collect(plan, tmp_path)["table"][0]["chosen_lr"] == 3e-3


def test_parameter_counts_come_from_any_seed_that_recorded_them(tmp_path):
    plan = {"sizes": [{"name": "s"}], "evals": [{"task": "e2e", "method": "prefix", "lrs": [1e-3], "seeds": [0, 1]}]}
    size, ev = plan["sizes"][0], plan["evals"][0]
    write_run(tmp_path, size, ev, 1e-3, 0, 1.0, 50.0)
    write_run(tmp_path, size, ev, 1e-3, 1, 1.0, 52.0)
    older = tmp_path / "results" / eval_name(size, ev, 1e-3, 0) / "metrics.json"
    older.write_text(json.dumps({"best_dev_loss": 1.0, "bleu": 50.0}))  # a run from before the counts were kept
    row = collect(plan, tmp_path)["table"][0]
    assert (row["trainable_params"], row["kept_params"]) == (100, 10)
    (tmp_path / "results" / eval_name(size, ev, 1e-3, 1) / "metrics.json").write_text(
        json.dumps({"best_dev_loss": 1.0, "bleu": 52.0}))
    assert params(collect(plan, tmp_path)["table"][0]) == "– / –"


def test_later_seeds_can_run_only_at_the_lr_the_first_seed_chose_on_dev(tmp_path):
    ev = {"task": "e2e", "method": "prefix", "lrs": [1e-3, 3e-3], "seeds": [0, 1, 2], "later_seeds": "chosen_lr"}
    plan = {"seeds_first": False, "sizes": [{"name": "s", "checkpoint": "ckpt"}], "evals": [ev]}
    jobs = {j.name: j for j in plan_jobs(plan, tmp_path, py="python")}
    assert list(jobs)[:2] == ["s-e2e-prefix-lr0.001-seed0", "s-e2e-prefix-lr0.003-seed0"]
    later = jobs["s-e2e-prefix-lr0.003-seed1"]
    assert later.needs == ["s-e2e-prefix-lr0.001-seed0", "s-e2e-prefix-lr0.003-seed0"] and not later.later
    size = plan["sizes"][0]
    write_run(tmp_path, size, ev, 1e-3, 0, dev=1.9, score=50.0)
    write_run(tmp_path, size, ev, 3e-3, 0, dev=float("nan"), score=0.0)  # a diverged lr never wins
    assert jobs["s-e2e-prefix-lr0.001-seed1"].wanted() and not jobs["s-e2e-prefix-lr0.003-seed2"].wanted()
    # the runner settles an unwanted job without starting it
    for j in jobs.values():
        j.cmd = [sys.executable, "-c", "raise SystemExit(5)"]
        j.estimate = 3600  # longer than the deadline below: being unwanted is still told apart from no time
        if j.name.endswith("seed0"):
            j.status = "done"
    for name in ("s-e2e-prefix-lr0.001-seed1", "s-e2e-prefix-lr0.001-seed2"):
        (tmp_path / "results" / name).mkdir(parents=True)
        (tmp_path / "results" / name / "metrics.json").write_text("{}")  # already finished
    status = {j.name: j.status for j in run_jobs(list(jobs.values()), tmp_path, 1, time.time() + 30, poll=0.1)}
    assert status["s-e2e-prefix-lr0.003-seed1"] == status["s-e2e-prefix-lr0.003-seed2"] == "not needed"
    assert status["s-e2e-prefix-lr0.001-seed1"] == "done"


def test_the_report_adds_what_making_a_model_cost_to_its_task_training(tmp_path):
    from experiments.reports.study import compute_table
    result = {"models": [{"name": "none", "given": True, "tokens_seen": 9e9, "train_seconds": 9e5},
                         {"name": "shared", "given": False, "tokens_seen": 600_000, "train_seconds": 300.0}],
              "table": [{"size": "none", "task": "e2e", "method": "prefix", "train_tokens": 2_000_000,
                         "train_seconds": 400.0},
                        {"size": "shared", "task": "e2e", "method": "prefix", "train_tokens": 2_000_000,
                         "train_seconds": 410.0}]}
    rows = [line for line in compute_table(result) if line.startswith("| none") or line.startswith("| shared")]
    assert rows == ["| none | e2e | prefix | 0.00M, 0 | 2.00M, 400 | 400 |",  # a given checkpoint costs nothing here
                    "| shared | e2e | prefix | 0.60M, 300 | 2.00M, 410 | 710 |"]


def test_arms_name_their_runs_and_get_their_own_lr_choice(tmp_path):
    """Evaluations with the same task and method but other settings ("arm") are run and reported apart."""
    evs = [{"task": "e2e", "method": "prefix", "arm": "len1", "lrs": [1e-3], "seeds": [0, 1], "args": {"prefix_len": 1}},
           {"task": "e2e", "method": "prefix", "arm": "len20", "lrs": [1e-3, 3e-3], "seeds": [0],
            "args": {"prefix_len": 20}}]
    plan = {"sizes": [{"name": "s", "checkpoint": "ckpt"}], "evals": evs}
    jobs = {j.name: j for j in plan_jobs(plan, tmp_path, py="python")}
    assert set(jobs) == {"s-e2e-len1-lr0.001-seed0", "s-e2e-len1-lr0.001-seed1", "s-e2e-len20-lr0.001-seed0",
                         "s-e2e-len20-lr0.003-seed0"}
    assert "--prefix_len=20" in jobs["s-e2e-len20-lr0.003-seed0"].cmd
    size = plan["sizes"][0]
    write_run(tmp_path, size, evs[0], 1e-3, 0, dev=2.0, score=30.0)
    write_run(tmp_path, size, evs[0], 1e-3, 1, dev=2.1, score=0.5)  # a collapsed seed stays in view
    write_run(tmp_path, size, evs[1], 1e-3, 0, dev=1.9, score=40.0)
    write_run(tmp_path, size, evs[1], 3e-3, 0, dev=1.8, score=35.0)
    result = collect(plan, tmp_path)
    by_arm = {r["arm"]: r for r in result["table"]}
    assert by_arm["len20"]["chosen_lr"] == 3e-3 and by_arm["len20"]["mean"] == 35.0  # dev loss chose, not test
    assert by_arm["len1"]["scores"] == [30.0, 0.5] and by_arm["len1"]["n"] == 2
    text = markdown({**result, "models": []}, tmp_path)
    assert "| s | len1 | 0.001 |" in text and "(30.0, 0.5)" in text
    assert "| 2 |  |  | 100 / 10 |" in text  # what the arm trains / keeps, from its runs
    # 3e-3 is the largest lr len20 tried: the report flags it, so that the grid is widened before comparing
    assert "| s | len20 | 0.003 (edge) |" in text and "(edge): the dev loss chose the smallest or the largest" in text


def test_each_arm_is_compared_with_the_fine_tuning_arm_of_its_own_data_and_budget(tmp_path):
    short, long = {"max_train": 500, "epochs": 2}, {"max_train": 500, "epochs": 10}
    evals = [{"task": "e2e", "method": m, "arm": f"{m}-{name}", "lrs": [1e-3], "seeds": [0, 1], "args": args}
             for name, args in (("short", short), ("long", long)) for m in ("prefix", "finetune")]
    plan = {"sizes": [{"name": "s"}], "evals": evals}
    for ev, scores in zip(evals, ((30.0, 32.0), (50.0, 52.0), (42.0, 44.0), (40.0, 42.0))):
        for seed, score in enumerate(scores):
            write_run(tmp_path, plan["sizes"][0], ev, 1e-3, seed, dev=1.0, score=score)
    text = markdown({**collect(plan, tmp_path), "models": []}, tmp_path)
    assert "| s | prefix-short | 0.001 | 0.001: 1.000 | 31.0 ± 1.4 (30.0, 32.0) | 2 | -20.0 (se 1.4) |" in text
    assert "| s | prefix-long | 0.001 | 0.001: 1.000 | 43.0 ± 1.4 (42.0, 44.0) | 2 | +2.0 (se 1.4) |" in text
    assert "| s | finetune-long | 0.001 | 0.001: 1.000 | 41.0 ± 1.4 (40.0, 42.0) | 2 |  |" in text


def test_an_arm_can_take_its_lr_from_a_cheap_grid_on_a_subset(tmp_path):
    grid = {"task": "e2e", "method": "lora", "arm": "lora-grid", "lrs": [1e-3, 3e-3], "seeds": [0],
            "args": {"max_train": 50}}
    full = {"task": "e2e", "method": "lora", "arm": "lora", "lr_from": "lora-grid", "seeds": [0, 1]}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"sizes": [{"name": "s", "checkpoint": "ckpt"}], "evals": [grid, full]}))
    plan = load_plan(path)
    assert plan["evals"][1]["lrs"] == [1e-3, 3e-3]  # the grid's lrs, each run only if the grid chose it
    jobs = {j.name: j for j in plan_jobs(plan, tmp_path, py="python")}
    for seed in (0, 1):  # even the first seed of the full arm waits for the grid
        assert jobs[f"s-e2e-lora-lr0.003-seed{seed}"].needs == ["s-e2e-lora-grid-lr0.001-seed0",
                                                                 "s-e2e-lora-grid-lr0.003-seed0"]
    size = plan["sizes"][0]
    write_run(tmp_path, size, grid, 1e-3, 0, dev=1.9, score=50.0)
    write_run(tmp_path, size, grid, 3e-3, 0, dev=1.7, score=40.0)  # dev loss chooses 3e-3, not test BLEU
    assert jobs["s-e2e-lora-lr0.003-seed0"].wanted() and not jobs["s-e2e-lora-lr0.001-seed1"].wanted()
    write_run(tmp_path, size, plan["evals"][1], 3e-3, 0, dev=1.2, score=55.0, dev_by_epoch=[1.5, 1.2, 1.3])
    row = next(r for r in collect(plan, tmp_path)["table"] if r["arm"] == "lora")
    assert row["lr_from"] == "lora-grid" and row["chosen_lr"] == 3e-3 and row["best_epochs"] == [2]
    path.write_text(json.dumps({"sizes": [{"name": "s", "checkpoint": "ckpt"}], "evals": [{**full, "lr_from": "x"}]}))
    with pytest.raises(SystemExit, match="takes its lr from 'x', which is no e2e arm"):
        load_plan(path)


@pytest.mark.parametrize("name", ["adaptation", "findings", "fulldata", "lowdata", "scale", "table1", "webnlg"])
def test_the_shipped_plans_make_valid_runs(name, tmp_path):
    """Every evaluation a shipped plan would start passes the experiment settings' checks."""
    from pathlib import Path

    from experiments.config import parse_cli
    from experiments.plans import load_plan
    plan = load_plan(Path(__file__).parents[1] / "studies" / name)
    jobs = [j for j in plan_jobs(plan, tmp_path, py="python") if j.cmd[2] == "experiments.run"]
    assert jobs
    for j in jobs:
        parse_cli(j.cmd[3:])  # exits with a one-line error on a bad setting


def test_webnlg_reports_seen_and_unseen_categories(tmp_path):
    from experiments.reports.study import markdown
    ev = {"task": "webnlg", "method": "prefix", "lrs": [1e-3], "seeds": [0]}
    plan = {"sizes": [{"name": "s", "checkpoint": "ckpt"}], "evals": [ev]}
    d = tmp_path / "results" / eval_name(plan["sizes"][0], ev, 1e-3, 0)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"best_dev_loss": 2.0, "bleu": 40.0, "bleu_seen": 50.0,
                                                "bleu_unseen": 30.0}))
    result = collect(plan, tmp_path)
    assert result["table"][0]["bleu_seen"] == 50.0 and result["table"][0]["bleu_unseen"] == 30.0
    assert "| 50.0 / 30.0 |" in markdown({**result, "models": []}, tmp_path)


def test_the_bar_chart_draws_each_arm_at_its_chosen_lr_with_its_seeds():
    import matplotlib
    matplotlib.use("Agg")
    from experiments.reports.study import bars_figure

    def row(arm, lr, scores, tried):
        return {"size": "gutenberg", "task": "e2e", "method": "prefix", "arm": arm, "chosen_lr": lr, "lrs_tried": tried,
                "n": len(scores), "scores": scores, "mean": sum(scores) / len(scores), "sd": 1.0,
                "slot_error_rate": 12.0}
    fig = bars_figure({"table": [row("every-mlp-len10", 1e-3, [40.0, 41.0, 36.0], [3e-4, 1e-3, 3e-3]),
                                 row("embedding-len10", 1.0, [5.0, 9.0, 13.0], [0.1, 0.3, 1.0])], "runs": []})
    ax = fig.axes[0]
    assert [round(p.get_width(), 3) for p in ax.patches] == [39.0, 9.0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["every-mlp-len10\n(lr 0.001; n=3)", "embedding-len10\n(lr 1, edge; n=3)"]
    dots = [sorted(line.get_xdata()) for line in ax.lines if line.get_marker() == "o"]
    assert dots == [[36.0, 40.0, 41.0], [5.0, 9.0, 13.0]]  # every seed, the low one too
    assert any(line.get_xdata()[0] == 58.0 for line in ax.lines if line.get_linestyle() == ":")  # the E2E floor
    assert bars_figure({"table": [], "runs": []}) is None


def test_a_grid_still_running_is_reported_as_such_not_at_an_edge():
    """Two of four lrs finished, the larger chosen: no "edge" yet (the other two may win), "2 of 4 lrs"; once
    the whole grid has run, an lr at its end is an edge."""
    from experiments.plans.collect import at_edge, unfinished_grid
    row = {"chosen_lr": 1e-3, "lrs_tried": [3e-4, 1e-3], "lrs_planned": [3e-4, 1e-3, 3e-3, 1e-2]}
    assert not at_edge(row) and unfinished_grid(row) == "2 of 4 lrs"
    whole = {**row, "lrs_tried": row["lrs_planned"], "chosen_lr": 1e-2}
    assert at_edge(whole) and unfinished_grid(whole) == ""
    assert not at_edge({**whole, "chosen_lr": 1e-3})
    assert at_edge({"chosen_lr": 1.0, "lrs_tried": [0.1, 1.0]})  # a row without its plan: what ran is the grid


def test_packed_predictions_read_the_same_and_score_the_same_slot_errors(tmp_path):
    from experiments.results import pack_predictions, read_predictions
    from experiments.slots import e2e_test
    plan = {"sizes": [{"name": "s"}], "evals": [{"task": "e2e", "method": "prefix", "lrs": [1e-3], "seeds": [0]}]}
    size, ev = plan["sizes"][0], plan["evals"][0]
    write_run(tmp_path, size, ev, 1e-3, 0, 1.0, 50.0)
    folder = tmp_path / "results" / eval_name(size, ev, 1e-3, 0)
    tables = e2e_test()[0]
    lines = [t.split(" | ")[0].replace("name : ", "") + " serves Café food for £20." for t in tables]  # slot errors
    (folder / "predictions.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    before = collect(plan, tmp_path)["table"][0]["slot_error_rate"]
    assert before is not None and 0 < before < 100
    assert pack_predictions(tmp_path / "results") == 1 and pack_predictions(tmp_path / "results") == 0
    assert not (folder / "predictions.txt").exists() and (folder / "predictions.txt.gz").exists()
    assert read_predictions(folder) == lines
    assert collect(plan, tmp_path)["table"][0]["slot_error_rate"] == before
    assert read_predictions(tmp_path) is None  # a folder with neither
    packed = (folder / "predictions.txt.gz").read_bytes()
    (folder / "predictions.txt.gz").write_bytes(packed[: len(packed) // 2])  # cut short
    with pytest.raises(ValueError, match="predictions.txt.gz is not a readable gzip"):
        read_predictions(folder)
