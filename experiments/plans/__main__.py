"""The scale curve: pretrain a family of models on one mixture, then prefix-tune and fine-tune each.

    python -m experiments.plans plan [STUDY]                     (the jobs left, and their expected hours)
    python -m experiments.plans run [STUDY] [--out DIR] [--deadline SECONDS [--start-late]] [--jobs N] [--threads N]
    python -m experiments.plans report [STUDY] [--out DIR]
    python -m experiments.plans pack [STUDY] [--out DIR]         (gzip the results' predictions.txt to commit)
    make scale                                  (run, then report, the study studies/scale)

STUDY (default `scale`) is a study's name (`lowdata`: the folder `studies/lowdata/`), a study folder, or a plan
file. A study folder holds its plan (`plan.json`) and everything the plan makes: `results/`, `models/`,
`jobs.json`, `logs/` and the report. With --out, the outputs go to that folder instead (with a copy of the
plan as its `plan.json`, the record of what ran there).

The plan names the models (`sizes`: a shape, peak lr and
pretraining seconds; or `"checkpoint": DIR`, an existing model; or `"adapt": {...}`, a checkpoint adapted
on task text by experiments.adapt), the shared pretraining recipe and mixture, and the evaluation grid:
for each task and method a list of learning rates and seeds (`"only"` limits it to some models;
`"later_seeds": "chosen_lr"` runs the seeds after the first only at the lr the first seed's dev loss chose,
which saves (lrs - 1) runs per further seed on a CPU).
`studies/adaptation/plan.json` is such a plan: no adaptation vs per-task vs shared adaptation. `run`
starts every job as soon as what it needs is done (a model's evaluations
wait for its pretraining), up to --jobs at a time on one machine (they share a GPU well: at these sizes
each process is bound by kernel launches). With --deadline, no job starts that cannot finish in time, and
jobs still running at the deadline are stopped (by Ctrl-C, on which training saves its state, so the next
`run` resumes them) and recorded as unfinished, so a fixed budget always ends
with what finished written down; --start-late starts the jobs that cannot finish too, so that a budget
shorter than a run still moves it forward. Ctrl-C (or SIGTERM) on `run` stops its jobs the same way.
Finished jobs are not run again. A job's expected time is learnt from the
runs finished in the output folder (`Clock`): its arm's longest run times 1.25, or, for an arm not run yet,
its plan estimate corrected by how far off the estimates were for the arms that have run; so a budget is
filled even when the plan's estimates were made on another machine.

`report` chooses each (size, task, method)'s learning rate by its mean best dev loss over seeds (the test
set is never looked at to choose), writes `<out>/<study>.json` (every run and the choices) and
`<out>/<study>.png` (test score against non-embedding parameters, the prefix - fine-tuning gap, the floors
and the paper's GPT-2-medium points), and prints the table.

`pack` gzips each finished run's `predictions.txt` under `<out>/results/` (E2E outputs shrink ~16x; every
reader takes either form, `results.read_predictions`): do it before committing a plan's results.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from minigpt.io import ProcessLock, atomic_write

from ..reports.study import report
from .. import results as result_files
from ..results import pack_predictions
from .jobs import Clock, plan_jobs, tokenize
from .runner import run_jobs
from .spec import load_plan, narrow, plan_file, run_name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["plan", "run", "report", "pack"],
                   help="plan: list the jobs and their estimated hours; run: run them; report: tables and plot; "
                   "pack: gzip the finished runs' predictions.txt (to commit them)")
    p.add_argument("study", nargs="?", default="scale",
                   help="a study's name (its folder under studies/), a study folder, or a plan file")
    p.add_argument("--out", default=None, help="output folder (default: the study's folder, where the plan is)")
    p.add_argument("--deadline", type=float, default=None, help="seconds from now by which every job ends")
    p.add_argument("--jobs", type=int, default=None, help="jobs at a time (default: the plan's 'jobs', else 4)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per job (default: the machine's cores / --jobs); e.g. 1 to keep a core free")
    p.add_argument("--start-late", action="store_true",
                   help="with --deadline: also start runs that cannot finish by it (the deadline stops them with "
                   "their training state saved, and the next run resumes them) instead of skipping them")
    p.add_argument("--tasks", default=None, help="only these tasks' evaluations, e.g. sst2 or e2e,sst2")
    p.add_argument("--sweeps", default=None, help="only the evaluations tagged with these sweeps, e.g. length,depth")
    p.add_argument("--seeds", default=None, help="these seeds instead of the plan's, e.g. 0 or 0,1,2")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every run (e.g. max_train=500; repeatable); needs --out, so that runs with "
                   "other settings never mix with the study's")
    p.add_argument("--strict", action="store_true", help="report: fail on a run folder that cannot be read (half-"
                   "written or foreign metrics.json, a NaN score) instead of skipping it with a warning")
    return p.parse_args(argv)


def narrowed(args: argparse.Namespace) -> dict:
    """The study's plan, with only the tasks, sweeps and seeds asked for and the settings given."""
    plan = load_plan(args.study)
    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE, got {item!r}")
        settings[key.replace("-", "_")] = value
    if settings and not args.out:
        raise SystemExit("--set changes the runs' settings: give --out DIR, so that they do not mix with the study's runs")
    seeds = None
    if args.seeds is not None:
        parts = args.seeds.split(",")
        if not all(x.strip().isascii() and x.strip().isdigit() for x in parts):
            raise SystemExit(f"--seeds must be comma-separated integers >= 0, got {args.seeds!r}")
        seeds = [int(x) for x in parts]
    words = {k: [x.strip() for x in v.split(",") if x.strip()] if v else None for k, v in
             (("tasks", args.tasks), ("sweeps", args.sweeps))}
    return narrow(plan, words["tasks"], words["sweeps"], seeds, settings)


def show_plan(plan: dict, out: Path) -> None:
    """The jobs not done yet, each with its expected minutes and where that estimate comes from."""
    jobs = plan_jobs(plan, out)
    by_name, clock = {j.name: j for j in jobs}, Clock(jobs)
    # left out: finished jobs, and later seeds at an lr their first seed's finished runs did not choose
    todo = [j for j in jobs if not j.done_file.exists() and not (
        j.wanted is not None and all(by_name[d].done_file.exists() for d in j.needs) and not j.wanted())]
    for j in todo:
        seconds, source = clock.expect(j)
        print(f"{seconds / 60:6.1f} min  {j.name}{'  (if its lr is chosen)' if j.wanted else ''}  ({source})")
    lrs = {run_name(plan, size, ev, lr, seed, out): len(ev["lrs"]) for size in plan["sizes"] for ev in plan["evals"]
           for lr in ev["lrs"] for seed in ev["seeds"]}
    hours = sum(clock(j) / (lrs.get(j.name, 1) if j.wanted else 1) for j in todo) / 3600
    print(f"{len(todo)} of {len(jobs)} jobs not done; {hours:.1f} h one job at a time, counting a later "
          f"seed's run only at the lr its first seed chose")


def write_report(plan: dict, out: Path) -> None:
    """The study's report: the reference sweeps' (run groups and curves) or a study's (lr chosen on dev loss)."""
    if plan.get("report") == "sweeps":
        from ..reports.sweeps import write
        write(out / "results", out / "RESULTS.md", title=plan.get("title"))
    else:
        report(plan, out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result_files.STRICT = args.strict
    end = None if args.deadline is None else time.time() + args.deadline
    plan = narrowed(args)
    home = plan_file(args.study).parent
    out = Path(args.out) if args.out else home
    if args.action == "pack":
        print(f"packed {pack_predictions(out / 'results')} predictions.txt under {out / 'results'}")
        return
    if args.action == "plan":
        return show_plan(plan, out)
    if args.action == "run":
        jobs = args.jobs if args.jobs is not None else plan.get("jobs", 4)
        if jobs < 1 or (args.deadline is not None and not args.deadline > 0):
            raise SystemExit("--jobs must be >= 1 and --deadline > 0")
        out.mkdir(parents=True, exist_ok=True)
        with ProcessLock(out / "lock", f"a plan into {out}"):  # one runner per output folder
            if out.resolve() != home.resolve():  # elsewhere: a record of the plan that ran
                atomic_write(out / "plan.json", lambda t: Path(t).write_text(json.dumps(plan, indent=2) + "\n"))
            if "mixture" in plan:
                tokenize(plan)  # once, here: the pretraining jobs then all read the same cache
            ran = run_jobs(plan_jobs(plan, out), out, jobs, end, threads=args.threads, start_late=args.start_late)
        write_report(plan, out)
        failed = [j for j in ran if j.status == "failed"]
        if failed:
            raise SystemExit(f"error: {len(failed)} of {len(ran)} jobs failed: " + "; ".join(
                f"{j.name} ({last_line(out / 'logs' / f'{j.name}.log')}; log {out / 'logs' / f'{j.name}.log'})"
                for j in failed[:5]) + ("; ..." if len(failed) > 5 else ""))
        return
    write_report(plan, out)


def last_line(log: Path) -> str:
    """The last non-empty line of a job's log (where a failing run says why), cut to 200 characters."""
    try:
        lines = [x.strip() for x in log.read_text(errors="replace").replace("\r", "\n").splitlines() if x.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "empty log"


if __name__ == "__main__":
    main()
