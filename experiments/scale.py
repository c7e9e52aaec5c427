"""The scale curve: pretrain a family of models on one mixture, then prefix-tune and fine-tune each.

    python -m experiments.scale plan [STUDY]                     (the jobs left, and their expected hours)
    python -m experiments.scale run [STUDY] [--out DIR] [--deadline SECONDS [--start-late]] [--jobs N] [--threads N]
    python -m experiments.scale report [STUDY] [--out DIR]
    python -m experiments.scale pack [STUDY] [--out DIR]         (gzip the results' predictions.txt to commit)
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
reader takes either form, `runid.read_predictions`): do it before committing a plan's results.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from minigpt.io import atomic_write

from .runid import pack_predictions, read_predictions

STUDIES = Path("studies")  # one folder per study, relative to the project root (where commands run)


def plan_file(study: str | os.PathLike) -> Path:
    """A study's plan: `<folder>/plan.json` for a study folder, `studies/<name>/plan.json` for a bare name
    that is no folder here, or the plan file itself."""
    path = Path(study)
    if path.is_dir():
        return path / "plan.json"
    if path.suffix != ".json" and len(path.parts) == 1:
        return STUDIES / path / "plan.json"
    return path


def load_plan(study: str | os.PathLike) -> dict:
    """A study's plan (see `plan_file`), checked; SystemExit naming the file when it cannot be used."""
    path = plan_file(study)
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"plan {path} cannot be read: {e}") from None
    pretrained = any(not (size.get("checkpoint") or size.get("adapt")) for size in plan.get("sizes", []))
    for key in ("sizes", "evals", *(("mixture", "pretrain") if pretrained else ())):
        if key not in plan:
            raise SystemExit(f"plan {path} has no {key!r} entry")
    names = [s["name"] for s in plan["sizes"]]
    if len(set(names)) != len(names):
        raise SystemExit(f"plan {path}: size names must differ, got {names}")
    arms = [(ev["task"], arm(ev)) for ev in plan["evals"]]
    if len(set(arms)) != len(arms):
        raise SystemExit(f"plan {path}: two evaluations of one task share an arm name; give each its own \"arm\"")
    return plan


def flag(k: str, v) -> list[str]:
    """argparse flags for a pretraining setting: booleans are switches."""
    k = "--" + k.replace("_", "-")
    if isinstance(v, bool):
        return [k] if v else []
    return [k, str(v)]


# ------------------------------------------------------------------------------------------ jobs
@dataclass
class Job:
    name: str
    cmd: list[str]
    done_file: Path  # exists once the job has finished well
    estimate: float  # seconds, the plan's (for the deadline, `Clock` corrects it with measured runs)
    needs: list[str] = field(default_factory=list)
    later: bool = False  # a further seed: starts only once every first-seed run has started
    wanted: Callable[[], bool] | None = None  # asked once `needs` are done; False: the job is not needed
    group: str = ""  # jobs that cost about the same (one arm of one model); "": its own
    status: str = "waiting"  # waiting, running, done, failed, unfinished, skipped, not needed
    started: float | None = None
    seconds: float | None = None
    returncode: int | None = None


def fmt_lr(lr: float) -> str:
    return f"{lr:g}"


def model_dir(out: Path, size: dict) -> Path:
    """Where a plan's model is: its own checkpoint, or the folder its job writes."""
    return Path(size["checkpoint"]) if size.get("checkpoint") else out / "models" / size["name"]


def model_job(size: dict) -> list[str]:
    """The name of the job that makes the model (none for an existing checkpoint)."""
    if size.get("checkpoint"):
        return []
    return [f"{'adapt' if size.get('adapt') else 'pretrain'}-{size['name']}"]


def arm(ev: dict) -> str:
    """An evaluation's name in results: its "arm" (e.g. "prefix-len20", "embedding-10"), else its method."""
    return ev.get("arm") or ev["method"]


def eval_name(size: dict, ev: dict, lr: float, seed: int) -> str:
    return f"{size['name']}-{ev['task']}-{arm(ev)}-lr{fmt_lr(lr)}-seed{seed}"


def plan_jobs(plan: dict, out: Path, py: str = sys.executable) -> list[Job]:
    """Jobs that make the models first (pretraining, or adaptation of a checkpoint on task text; a model
    given as a checkpoint needs none), then evaluations (task, method, seed and lr order as in the plan)."""
    jobs = []
    for size in plan["sizes"]:
        if size.get("checkpoint"):
            continue
        if size.get("adapt"):
            a = size["adapt"]
            cmd = [py, "-m", "experiments.adapt", "--tasks", ",".join(a["tasks"]), "--model", a["from"],
                   "--tokens", str(a["tokens"]), "--out", str(model_dir(out, size))]
            cmd += [x for k, v in a.get("args", {}).items() for x in flag(k, v)]
            if (model_dir(out, size) / "train_state.pt").exists():
                cmd.append("--resume")
            jobs.append(Job(f"adapt-{size['name']}", cmd, model_dir(out, size) / "adaptation.json",
                            estimate=size.get("seconds", 600)))
            continue
        cmd = [py, "-m", "minigpt.pretraining", "--out", str(model_dir(out, size)), "--lr", str(size["lr"]),
               "--max-seconds", str(size["seconds"])]
        if size.get("init_from"):  # continued pretraining: the checkpoint fixes the shape
            cmd += ["--init-from", size["init_from"]]
        else:
            cmd += ["--n-layer", str(size["n_layer"]), "--n-head", str(size["n_head"]), "--n-embd", str(size["n_embd"])]
        for spec in plan["mixture"]:
            cmd += ["--source", spec]
        for k, v in plan["pretrain"].items():
            cmd += flag(k, v)
        if (model_dir(out, size) / "train_state.pt").exists():
            cmd.append("--resume")
        jobs.append(Job(f"pretrain-{size['name']}", cmd, model_dir(out, size) / "pretrain_metrics.json",
                        estimate=size["seconds"] + plan.get("pretrain_overhead_seconds", 60)))
        card = [py, "-m", "minigpt.pretraining.model_card", str(model_dir(out, size)), "--command", " ".join(["python", *cmd[1:]]),
                "--hardware", plan.get("hardware", "see pretrain_metrics.json")]
        jobs.append(Job(f"card-{size['name']}", card, model_dir(out, size) / "README.md", estimate=30,
                        needs=[f"pretrain-{size['name']}"]))
    order = []
    for ev in plan["evals"]:
        for seed in ev["seeds"]:
            for size in plan["sizes"]:
                if ev.get("only") and size["name"] not in ev["only"]:
                    continue
                for lr in ev["lrs"]:
                    order.append((seed, size, ev, lr))
    if plan.get("seeds_first", True):
        order.sort(key=lambda t: t[0] != t[2]["seeds"][0])  # every first seed before any further seed
    for seed, size, ev, lr in order:
        name = eval_name(size, ev, lr, seed)
        first = ev["seeds"][0]
        needs, wanted = model_job(size), None
        if seed != first and ev.get("later_seeds") == "chosen_lr":
            needs = needs + [eval_name(size, ev, x, first) for x in ev["lrs"]]
            wanted = chosen_by_first_seed(out, size, ev, lr)
        cmd = [py, "-m", "experiments.run", f"--task={ev['task']}", f"--model={model_dir(out, size)}",
               f"--method={ev['method']}", f"--lr={lr}", f"--seed={seed}", f"--results_dir={out / 'results'}",
               f"--runs_dir={out / 'runs'}", f"--name={name}"]
        cmd += [f"--{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in ev.get("args", {}).items()]
        estimate = ev.get("seconds", 120) * size.get("eval_cost", 1.0)
        jobs.append(Job(name, cmd, out / "results" / name / "metrics.json", estimate, needs=needs,
                        later=seed != first and plan.get("seeds_first", True), wanted=wanted,
                        group=f"{size['name']}-{ev['task']}-{arm(ev)}"))
    return jobs


class Clock:
    """Each job's expected seconds, learnt from the runs that finished in the output folder.

    An arm (task, arm and model) with finished runs: its longest run times MARGIN. An arm without: its plan
    estimate times MARGIN times the median measured/estimated ratio of the arms that have finished runs (how
    far off the plan's estimates are on this machine), or the plan's estimate as it is when none has."""

    MARGIN = 1.25

    def __init__(self, jobs: list[Job]):
        self.took: dict[str, list[float]] = {}
        self.estimates = {j.group: j.estimate for j in jobs if j.group}
        for j in jobs:
            if j.group and j.done_file.exists():
                try:  # training and decoding; a record without timings leaves the plan's estimate standing
                    m = json.loads(j.done_file.read_text())
                    self.add(j, float(m["train_seconds"]) + float(m.get("decode_seconds") or 0))
                except (OSError, ValueError, KeyError, TypeError):
                    pass

    def add(self, j: Job, seconds: float) -> None:
        if j.group:
            self.took.setdefault(j.group, []).append(seconds)

    def ratio(self) -> float | None:
        """How far off the plan's estimates are: the median over measured arms of longest run / estimate."""
        ratios = [max(t) / self.estimates[g] for g, t in self.took.items() if self.estimates.get(g)]
        return statistics.median(ratios) if ratios else None

    def expect(self, j: Job) -> tuple[float, str]:
        """A job's expected seconds and where they come from."""
        if j.group in self.took:
            return self.MARGIN * max(self.took[j.group]), f"its arm's longest finished run x {self.MARGIN:g}"
        r = self.ratio()
        if r is None:
            return j.estimate, "the plan's estimate"
        return self.MARGIN * r * j.estimate, f"the plan's estimate x {self.MARGIN * r:.2f}, as measured on other arms"

    def __call__(self, j: Job) -> float:
        return self.expect(j)[0]

    def source(self, j: Job) -> str:
        return self.expect(j)[1]


def chosen_by_first_seed(out: Path, size: dict, ev: dict, lr: float) -> Callable[[], bool]:
    """Whether `lr` has the lowest best dev loss among the first seed's runs (read when they are done)."""
    def wanted() -> bool:
        dev = {}
        for x in ev["lrs"]:
            m = json.loads((out / "results" / eval_name(size, ev, x, ev["seeds"][0]) / "metrics.json").read_text())
            if m.get("best_dev_loss") is not None and math.isfinite(m["best_dev_loss"]):
                dev[x] = m["best_dev_loss"]
        return bool(dev) and min(dev, key=dev.get) == lr
    return wanted


def tokenize(plan: dict) -> None:
    from minigpt.pretraining.train import resolve_sources
    cache = Path(plan["pretrain"].get("cache_dir", ".cache/pretrain"))
    for source in resolve_sources(plan["mixture"], None):
        source.load(cache)
        print(f"source {source.name}: {len(source.train):,} training tokens, {len(source.val):,} validation tokens",
              flush=True)


def hear_ctrl_c() -> None:
    """In a job's process before it starts: take Ctrl-C (SIGINT) as Python does by default, even where the sweep
    was started in the background (`cmd &`), which makes its children ignore SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sigterm_as_ctrl_c(signum, frame):
    raise KeyboardInterrupt


class Runner:
    """Runs jobs as subprocesses: dependencies first, `max_jobs` at a time, each with `threads` CPU threads (by
    default the machine's cores shared out), until all are settled or the time `end` passes. Each job's output
    goes to out/logs/<name>.log and every job's status to out/jobs.json, rewritten as it changes."""

    def __init__(self, jobs: list[Job], out: Path, max_jobs: int, end: float | None, poll: float = 1.0,
                 threads: int | None = None, grace: float = 60.0, start_late: bool = False):
        self.jobs, self.out, self.max_jobs, self.end, self.poll = jobs, out, max_jobs, end, poll
        self.grace, self.start_late = grace, start_late
        self.by_name = {j.name: j for j in jobs}
        self.running: dict[str, subprocess.Popen] = {}
        self.clock = Clock(jobs)
        self.t0 = time.time()
        threads = str(threads or max(1, (os.cpu_count() or 1) // max_jobs))
        # progress bars refresh rarely in the logs; expandable segments fragment GPU memory less when jobs share it
        self.env = {"TQDM_MININTERVAL": "10", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", **os.environ,
                    "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}

    def say(self, message: str) -> None:
        print(f"[{time.time() - self.t0:6.0f}s] {message}", flush=True)

    def write_status(self) -> None:
        rows = [{"name": j.name, "status": j.status, "seconds": j.seconds, "returncode": j.returncode,
                 "started_after": None if j.started is None else round(j.started - self.t0, 1),
                 "command": " ".join(j.cmd)} for j in self.jobs]
        atomic_write(self.out / "jobs.json", lambda t: Path(t).write_text(json.dumps(rows, indent=2) + "\n"))

    def ended(self, name: str, returncode: int, not_done: str) -> Job:
        """Record that job `name` has ended: done if it exited cleanly and wrote its result, else `not_done`."""
        j = self.by_name[name]
        j.seconds, j.returncode = round(time.time() - j.started, 1), returncode
        j.status = "done" if returncode == 0 and j.done_file.exists() else not_done
        return j

    def reap(self) -> None:
        """Record the jobs that have ended since the last look."""
        for name, proc in list(self.running.items()):
            if proc.poll() is None:
                continue
            j = self.ended(name, proc.returncode, "failed")
            if j.status == "done":
                self.clock.add(j, j.seconds)
            del self.running[name]
            left = sum(x.status in ("waiting", "running") for x in self.jobs)
            self.say(f"{j.status}: {name} ({j.seconds:.0f}s); {left} jobs left")

    def stop(self, why: str) -> None:
        """Stop the running jobs as Ctrl-C would (training saves its state, so the next run resumes it), killing
        any that have not ended `grace` seconds later; each is recorded as unfinished (or done, if it just
        finished)."""
        for proc in self.running.values():
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:  # it has just ended by itself
                pass
        for name, proc in self.running.items():
            how = "stopped"
            try:
                proc.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                how = f"killed {self.grace:.0f} s after Ctrl-C (what it did since its last checkpoint is lost)"
            j = self.ended(name, proc.returncode, "unfinished")
            self.say(f"{why}: {how if j.status == 'unfinished' else 'done'}: {name}")
        self.running.clear()

    def start(self, j: Job) -> None:
        j.status, j.started = "running", time.time()
        with open(self.out / "logs" / f"{j.name}.log", "a") as log:
            self.running[j.name] = subprocess.Popen(j.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                    start_new_session=True, preexec_fn=hear_ctrl_c)
        self.say(f"started {j.name}")

    def schedule(self) -> None:
        """Settle or start each waiting job whose turn it is."""
        now = time.time()
        for j in self.jobs:
            if j.status != "waiting":
                continue
            deps = [self.by_name[d].status for d in j.needs]
            if any(s in ("failed", "skipped", "unfinished") for s in deps):
                j.status = "skipped"
                continue
            ready = all(s == "done" for s in deps)
            if ready and j.wanted is not None and not j.wanted():
                j.status = "not needed"  # settled before the clock: an unwanted job is never "skipped"
                self.say(f"not needed: {j.name}")
                continue
            if self.end is not None and (now >= self.end or (now + self.clock(j) > self.end and not self.start_late)):
                j.status = "skipped"
                seconds, source = self.clock.expect(j)
                self.say(f"no time left for {j.name} (expected {seconds:.0f}s: {source})")
                continue
            first_waiting = any(not x.later and x.needs and x.status == "waiting" for x in self.jobs)
            if len(self.running) < self.max_jobs and ready and not (j.later and first_waiting):
                self.start(j)

    def loop(self) -> list[Job]:
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        for j in self.jobs:
            if j.done_file.exists():
                j.status = "done"
        while True:
            self.reap()
            if self.end is not None and time.time() >= self.end:
                self.stop("deadline")
            self.schedule()
            self.write_status()
            if not self.running and all(j.status != "waiting" for j in self.jobs):
                break
            time.sleep(self.poll)
        counts = {s: sum(j.status == s for j in self.jobs)
                  for s in ("done", "failed", "unfinished", "skipped", "not needed")}
        self.say(", ".join(f"{v} {k}" for k, v in counts.items()))
        return self.jobs

    def run(self) -> list[Job]:
        """The loop, with Ctrl-C or SIGTERM on the runner stopping its jobs as the deadline does: they are
        recorded as unfinished and SystemExit says how to resume them."""
        in_main = threading.current_thread() is threading.main_thread()
        term = signal.signal(signal.SIGTERM, sigterm_as_ctrl_c) if in_main else None
        ctrl_c = signal.getsignal(signal.SIGINT)
        try:
            return self.loop()
        except KeyboardInterrupt:
            if in_main:  # a second Ctrl-C must not cut the runs' saving short
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            print(f"interrupted: stopping {len(self.running)} run(s), each saving its training state "
                  f"(up to {self.grace:.0f} s)", flush=True)
            self.stop("interrupted")
            self.write_status()
            stopped = [j.name for j in self.jobs if j.status == "unfinished"]
            raise SystemExit(f"interrupted: {len(stopped)} run(s) unfinished"
                             f"{' (' + ', '.join(stopped) + ')' if stopped else ''}"
                             "; the same command resumes them from their saved training state")
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, term)
                signal.signal(signal.SIGINT, ctrl_c)


def run_jobs(jobs: list[Job], out: Path, max_jobs: int, end: float | None, poll: float = 1.0,
             threads: int | None = None, grace: float = 60.0, start_late: bool = False) -> list[Job]:
    """Run `jobs` (see Runner) until all are settled or the time `end` passes. Jobs still running then get
    Ctrl-C (SIGINT), on which training saves its state and stops, and are killed if they have not ended
    `grace` seconds later. A job expected to outlast `end` is skipped, unless `start_late`: then it starts
    anyway, and what it does before `end` is saved for the next run to resume.

    Ctrl-C or SIGTERM on the runner stops its jobs the same way, records them and raises SystemExit."""
    return Runner(jobs, out, max_jobs, end, poll, threads, grace, start_late).run()


# ------------------------------------------------------------------------------------------ report
ARM_LABELS = {"prefix": "prefix (length 10, MLP)", "finetune": "full fine-tuning"}
SCORE = {"e2e": ("bleu", "BLEU"), "webnlg": ("bleu", "BLEU"), "sst2": ("accuracy", "accuracy (%)")}
# Reference points (../shared/PAPER.md): Li & Liang (2021), GPT-2-medium (302M non-embedding parameters)
PAPER = {"e2e": {"prefix": 70.3, "finetune": 68.8}}
MEDIUM_NON_EMBEDDING = 24 * 12 * 1024 * 1024 + 24 * 13 * 1024 + 2 * 1024  # blocks + final layer norm
FLOORS = {"e2e": [(58.0, "template floor (~58 BLEU)")], "sst2": [(50.0, "chance"), (80.9, "bag of words (80.9%)")]}


def draw_floors(ax, task: str, fontsize: float = 8) -> None:
    """The task's reference levels (template floor, chance, bag of words) as labelled dotted lines."""
    for y, label in FLOORS.get(task, []):
        ax.axhline(y, ls=":", c="gray")
        ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), va="bottom", fontsize=fontsize, color="gray")


def e2e_slot_errors(folder: Path) -> float | None:
    """Slot error rate (%) of the E2E test predictions in a run's results folder (experiments/slots.py), or
    None without them (or with fewer than the whole test set)."""
    outputs = read_predictions(folder)
    if outputs is None:
        return None
    from .slots import corpus_slot_errors, e2e_test
    tables = e2e_test()[0]
    return corpus_slot_errors(outputs, tables)["slot_error_rate"] if len(outputs) == len(tables) else None


def mean_of(values: list) -> float | None:
    """The mean of the values that were recorded (None if none was)."""
    known = [v for v in values if v is not None]
    return statistics.mean(known) if known else None


def collect(plan: dict, out: Path) -> dict:
    """Every finished run, and per (size, task, method) the lr chosen on mean best dev loss (over the seeds
    that every lr has); its test scores over all of its seeds are reported."""
    runs, table = [], []
    for size in plan["sizes"]:
        metrics_file = model_dir(out, size) / "pretrain_metrics.json"
        pre = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
        for ev in plan["evals"]:
            if ev.get("only") and size["name"] not in ev["only"]:
                continue
            by_lr = {}
            for lr in ev["lrs"]:
                for seed in ev["seeds"]:
                    f = out / "results" / eval_name(size, ev, lr, seed) / "metrics.json"
                    if f.exists():
                        m = json.loads(f.read_text())
                        row = {"size": size["name"], "task": ev["task"], "method": ev["method"], "arm": arm(ev),
                               "lr": lr,
                               "seed": seed, "best_dev_loss": m.get("best_dev_loss"),
                               "score": m.get(SCORE[ev["task"]][0]), "metrics": m}
                        if ev["task"] == "e2e":  # slot errors, from the run's predictions
                            row["slot_error_rate"] = e2e_slot_errors(f.parent)
                        runs.append(row)
                        by_lr.setdefault(lr, []).append(row)
            finite = {lr: rows for lr, rows in by_lr.items()
                      if all(r["best_dev_loss"] is not None and math.isfinite(r["best_dev_loss"]) for r in rows)}
            if not finite:
                continue
            # compare learning rates on the seeds they all have, so that no lr wins by a luckier seed
            common = set.intersection(*({r["seed"] for r in rows} for rows in finite.values()))
            lr = min(finite, key=lambda k: statistics.mean(r["best_dev_loss"] for r in finite[k]
                                                           if not common or r["seed"] in common))
            scores = [r["score"] for r in finite[lr]]
            spent = [(r["metrics"].get("train_tokens"), r["metrics"].get("train_seconds")) for r in finite[lr]]
            sers = [r["slot_error_rate"] for r in finite[lr] if r.get("slot_error_rate") is not None]
            table.append({"size": size["name"], "task": ev["task"], "method": ev["method"], "arm": arm(ev),
                          "seeds": [r["seed"] for r in finite[lr]],
                          "non_embedding_params": (pre or {}).get("non_embedding_parameters"),
                          "chosen_lr": lr, "lrs_tried": sorted(by_lr), "n": len(scores),
                          "mean": statistics.mean(scores), "sd": statistics.stdev(scores) if len(scores) > 1 else None,
                          "scores": scores, "dev_loss": statistics.mean(r["best_dev_loss"] for r in finite[lr]),
                          "train_tokens": mean_of([t for t, _ in spent]),
                          "train_seconds": mean_of([sec for _, sec in spent]),
                          "slot_error_rate": statistics.mean(sers) if sers else None,
                          # trained while training, and kept to deploy (a prefix: its table after materialize())
                          **{k: next((r["metrics"][k] for r in finite[lr] if r["metrics"].get(k) is not None), None)
                             for k in ("trainable_params", "kept_params")},
                          # WebNLG: test BLEU on the categories seen in training and on the unseen ones
                          **{k: mean_of([r["metrics"].get(k) for r in finite[lr]]) for k in ("bleu_seen", "bleu_unseen")
                             if ev["task"] == "webnlg"},
                          # what the choice compared: each lr's mean dev loss over the seeds every lr has
                          "dev_loss_by_lr": {fmt_lr(k): statistics.mean(r["best_dev_loss"] for r in v
                                                                        if not common or r["seed"] in common)
                                             for k, v in finite.items()}})
    return {"runs": runs, "table": table}


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = [t for t in ("e2e", "sst2") if any(r["task"] == t for r in result["table"])]
    if not tasks:
        return
    fig, axes = plt.subplots(2, len(tasks), figsize=(6 * len(tasks), 7.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.4]})
    for col, task in enumerate(tasks):
        ax, gap_ax = axes[0][col], axes[1][col]
        means = {}
        for method, style in (("prefix", "o-"), ("finetune", "s--")):
            rows = sorted((r for r in result["table"] if r["task"] == task and r["method"] == method
                           and r["non_embedding_params"]), key=lambda r: r["non_embedding_params"])
            if rows:
                lrs = ", ".join(f"{r['chosen_lr']:g}" for r in rows)
                ax.errorbar([r["non_embedding_params"] for r in rows], [r["mean"] for r in rows],
                            yerr=[r["sd"] or 0.0 for r in rows], fmt=style, capsize=3,
                            label=f"{'prefix (length 10, MLP)' if method == 'prefix' else 'full fine-tuning'}"
                                  f"; lr by size: {lrs}")
                means[method] = {r["non_embedding_params"]: r["mean"] for r in rows}
                for r in rows:
                    ax.annotate(f"n={r['n']}", (r["non_embedding_params"], r["mean"]), textcoords="offset points",
                                xytext=(5, -10 if method == "prefix" else 5), fontsize=7)
        draw_floors(ax, task)
        for method, y in PAPER.get(task, {}).items():
            ax.plot([MEDIUM_NON_EMBEDDING], [y], "*" if method == "prefix" else "P", ms=11, c="black",
                    label=f"paper, GPT-2-medium, {'prefix' if method == 'prefix' else 'fine-tuning'} ({y})")
        name, unit = SCORE[task]
        ax.set(xscale="log", ylabel=f"test {unit}", title=f"{task.upper()}: test score by model size "
               "(mean ± sd over n seeds)")
        ax.legend(fontsize=7, loc="lower right")
        common = sorted(set(means.get("prefix", {})) & set(means.get("finetune", {})))
        if common:
            gap_ax.plot(common, [means["prefix"][n] - means["finetune"][n] for n in common], "o-", c="C2")
        gap_ax.axhline(0, c="gray", lw=0.8)
        gap_ax.set(xscale="log", xlabel="non-embedding parameters", ylabel="prefix − fine-tuning",
                   xlim=ax.get_xlim())
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, dpi=120, format="png"))
    plt.close(fig)


def sd(row: dict) -> str:
    """' ± sd', or nothing for a single seed."""
    return "" if row["sd"] is None else f" ± {row['sd']:.1f}"


def machine_name(m: dict) -> str:
    """'NVIDIA H200', or '2-core AMD EPYC (no AMX), 2 threads' from a run's recorded machine."""
    if m.get("gpu"):
        return m["gpu"]
    return f"{m.get('cpus', '?')}-core {m.get('cpu') or m.get('processor') or 'CPU'}, {m.get('threads', '?')} threads"


def markdown(result: dict, out: Path, title: str = "Scale curve") -> str:
    """The tables of RESULTS.md: models, the dev-chosen results per size, and every run."""
    jobs = json.loads((out / "jobs.json").read_text()) if (out / "jobs.json").exists() else []
    status = {s: sum(j["status"] == s for j in jobs) for s in ("done", "failed", "unfinished", "skipped", "not needed")}
    machines = sorted({f"{machine_name(r['metrics']['machine'])}, torch {r['metrics']['machine']['torch']}"
                       for r in result["runs"] if "machine" in r["metrics"]})
    lines = [f"# {title}", "",
             f"Generated by `python -m experiments.scale report` from `{out}` only: `plan.json` is the plan, "
             "`jobs.json` what became of each job, `results/<run>/` each run's config, metrics and predictions, "
             "`models/<model>/` each model's card. Learning rates are chosen per (model, task, arm) on the mean "
             "best dev loss over the seeds every lr has; the test scores are those of the chosen lr, mean ± sd "
             "over its seeds (n).", "",
             f"Jobs: {', '.join(f'{v} {k}' for k, v in status.items())}. Machines: {'; '.join(machines) or 'n/a'}.",
             "", f"![{out.name}]({out.name}.png)", "", "## Models", "",
             "Tokens and seconds are those of each model's own training run (for an adapted or continued model, "
             "that run alone).", "",
             "| model | non-embedding parameters | tokens seen | training s | held-out loss by source (nats/token) |",
             "|---|---|---|---|---|"]
    for m in result["models"]:
        losses = ", ".join(f"{k} {v:.3f}" for k, v in m["val_loss_by_source"].items())
        name = m["name"] + (f" (adapted on {', '.join(m['adapted_on'])})" if m.get("adapted_on") else "")
        lines.append(f"| {name} | {m['non_embedding_parameters'] / 1e6:.2f}M | {m['tokens_seen'] / 1e6:.1f}M | "
                     f"{m['train_seconds']:.0f} | {losses} |")
    for task in ("e2e", "webnlg", "sst2"):
        rows = [r for r in result["table"] if r["task"] == task]
        if not rows:
            continue
        name, unit = SCORE[task]
        seen = task == "webnlg"
        ft = {r["size"]: r["mean"] for r in rows if r["method"] == "finetune"}
        ser = task == "e2e"
        lines += ["", f"## {task.upper()}: test {unit}", "",
                  "| model | arm | chosen lr | dev loss by lr (on the seeds every lr ran) | test: mean ± sd (each seed) | n "
                  "| prefix − fine-tuning | parameters trained / kept |" + (" slot errors (%) |" if ser else "")
                  + (" BLEU seen / unseen categories |" if seen else ""),
                  "|---|---|---|---|---|---|---|---|" + ("---|" if ser or seen else "")]
        for r in rows:
            gap = f"{r['mean'] - ft[r['size']]:+.1f}" if r["method"] == "prefix" and r["size"] in ft else ""
            dev = ", ".join(f"{k}: {v:.3f}" for k, v in r["dev_loss_by_lr"].items())
            has = r.get("slot_error_rate") is not None
            slots = "" if not ser else f" {r['slot_error_rate']:.1f} |" if has else " |"
            if seen:
                slots = f" {fmt_or_dash(r.get('bleu_seen'))} / {fmt_or_dash(r.get('bleu_unseen'))} |"
            edge = " (edge)" if at_edge(r) else ""
            lines.append(f"| {r['size']} | {arm(r)} | {r['chosen_lr']:g}{edge} | {dev} | {r['mean']:.1f}{sd(r)} "
                         f"({', '.join(f'{v:.1f}' for v in r['scores'])}) | {r['n']} | {gap} | {params(r)} |{slots}")
        if seen:
            lines += ["", "WebNLG 2017 test BLEU on the categories seen in training and on the unseen ones. The paper "
                      "(GPT-2 medium), seen / unseen / all: fine-tuning 64.7 / 26.7 / 45.7, prefix 62.9 / 45.3 / 55.0 "
                      "(prefix-tuning extrapolates better)."]
        if ser:
            from .slots import corpus_slot_errors, e2e_test
            tables, references = e2e_test()
            refs = corpus_slot_errors([r[0] for r in references], tables)["slot_error_rate"]
            lines += ["", "Slot errors: table values missing from the output plus values it adds, per table slot "
                      f"(experiments/slots.py; each table's first human reference scores {refs:.1f}% with this "
                      "simple matcher)."]
    if any(at_edge(r) for r in result["table"]):
        lines += ["", "(edge): the dev loss chose the smallest or the largest lr of the grid, so a lr beyond it may "
                  "do better; add one to the arm's `lrs` in the plan and run it again (finished runs are kept)."]
    lines += compute_table(result)
    lines += ["", "## Every run", "", "| run | best dev loss | test score | train s |", "|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {eval_name({'name': r['size']}, r, r['lr'], r['seed'])} | {r['best_dev_loss']:.3f} | "
                     f"{r['score']:.1f} | {r['metrics'].get('train_seconds', float('nan')):.0f} |")
    return "\n".join(lines) + "\n"


def params(row: dict) -> str:
    """'2,235,392 / 40,960': what an arm trains and what it keeps (– where its runs did not record it)."""
    return " / ".join(f"{row[k]:,}" if row.get(k) is not None else "–" for k in ("trainable_params", "kept_params"))


def at_edge(row: dict) -> bool:
    """Whether the dev loss chose the smallest or largest lr of a grid of several: a lr beyond it may be
    better, and the grid should be widened before the arm is compared."""
    tried = row["lrs_tried"]
    return len(tried) > 1 and row["chosen_lr"] in (min(tried), max(tried))


def fmt_or_dash(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def compute_table(result: dict) -> list[str]:
    """Per model, task and method: the tokens and seconds of making the model (its own pretraining,
    continued pretraining or adaptation run; none for a given checkpoint) and of training on the task (the
    mean over the chosen lr's seeds), and their sum."""
    made = {m["name"]: m for m in result.get("models", [])}
    lines = ["", "## Compute per arm", "",
             "Tokens through the model and wall-clock seconds on the machine that ran each job (see the runs' "
             "`metrics.json`): making the model (for an adapted model, the adaptation run alone; a given "
             "checkpoint counts none) plus training on the task (mean over the chosen lr's seeds).", "",
             "| model | task | arm | making the model: tokens, s | task training: tokens, s | total s |",
             "|---|---|---|---|---|---|"]
    for r in result["table"]:
        m = made.get(r["size"])
        making = (0, 0.0) if m is None or m.get("given") else (m["tokens_seen"], m["train_seconds"])
        if r.get("train_tokens") is None or r.get("train_seconds") is None:
            continue
        lines.append(f"| {r['size']} | {r['task']} | {arm(r)} | {making[0] / 1e6:.2f}M, {making[1]:.0f} | "
                     f"{r['train_tokens'] / 1e6:.2f}M, {r['train_seconds']:.0f} | "
                     f"{making[1] + r['train_seconds']:.0f} |")
    return lines


def model_summary(size: dict, folder: Path) -> dict | None:
    """What a model's own training run recorded (pretraining, continued pretraining or adaptation)."""
    f = folder / "pretrain_metrics.json"
    if not f.exists():
        return None
    m = json.loads(f.read_text())
    c = json.loads((folder / "config.json").read_text())
    non_embedding = m.get("non_embedding_parameters",
                          m["parameters"] - c["n_embd"] * (c["vocab_size"] + c["n_positions"]))
    adapted = folder / "adaptation.json"
    return {"name": size["name"], "non_embedding_parameters": non_embedding, "parameters": m["parameters"],
            "tokens_seen": m["tokens_seen"], "train_seconds": m["train_seconds"],
            "val_loss_by_source": m.get("val_loss_by_source") or {"validation": m["val_loss"]}, "gpu": m.get("gpu"),
            "adapted_on": json.loads(adapted.read_text())["tasks"] if adapted.exists() else None,
            "given": bool(size.get("checkpoint"))}  # an existing checkpoint: the plan did not make it


def bars(result: dict, path: Path) -> None:
    """`bars_figure` written to `path` (nothing without finished runs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = bars_figure(result)
    if fig is not None:
        atomic_write(path, lambda t: fig.savefig(t, dpi=120, format="png"))
        plt.close(fig)


def bars_figure(result: dict):
    """Test scores per arm and model, one horizontal bar each (mean ± sd over its seeds at its dev-chosen lr,
    the seeds as dots), labelled with the lr and n, slot errors or seen/unseen BLEU beside it; floors dotted."""
    import matplotlib.pyplot as plt
    tasks = [t for t in ("e2e", "webnlg", "sst2") if any(r["task"] == t for r in result["table"])]
    if not tasks:
        return None
    per_task = {t: [r for r in result["table"] if r["task"] == t] for t in tasks}
    models = list(dict.fromkeys(r["size"] for r in result["table"]))
    height = 1.6 + 0.32 * max(len(rows) for rows in per_task.values())
    fig, axes = plt.subplots(1, len(tasks), figsize=(7.5 * len(tasks), height), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = per_task[task]
        for y, r in enumerate(rows):
            color = f"C{models.index(r['size']) % 10}"
            ax.barh(y, r["mean"], 0.7, xerr=r["sd"] or 0.0, capsize=3, color=color, alpha=0.75)
            ax.plot(r["scores"], [y] * len(r["scores"]), "o", ms=3, c="black", zorder=3)
            note = f"{r['mean']:.1f}" + (f" ± {r['sd']:.1f}" if r["sd"] else "")
            if r.get("slot_error_rate") is not None:
                note += f", slot err {r['slot_error_rate']:.0f}%"
            if r.get("bleu_unseen") is not None:
                note += f", seen {fmt_or_dash(r.get('bleu_seen'))}, unseen {r['bleu_unseen']:.1f}"
            ax.annotate(note, (max(r["scores"] + [r["mean"] + (r["sd"] or 0.0)]), y), textcoords="offset points",
                        xytext=(4, 0), va="center", fontsize=7)
        labels = [(f"{r['size']}: " if len(models) > 1 else "") + ARM_LABELS.get(arm(r), arm(r)) +
                  f"\n(lr {fmt_lr(r['chosen_lr'])}{', edge' if at_edge(r) else ''}; n={r['n']})" for r in rows]
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.invert_yaxis()  # the plan's order, top to bottom
        for x, label in FLOORS.get(task, []):
            ax.axvline(x, ls=":", c="gray")
            ax.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, ha="right", va="top",
                        fontsize=7, color="gray")
        top = max(max(r["scores"] + [r["mean"] + (r["sd"] or 0.0)]) for r in rows)
        ax.set_xlim(0, max(top * 1.3, max((x for x, _ in FLOORS.get(task, [])), default=0) * 1.05))
        ax.set(xlabel=f"test {SCORE[task][1]}", title=f"{task.upper()}: mean ± sd over n seeds at the lr chosen on "
               "dev loss; dots: each seed")
        ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def report(plan: dict, out: Path) -> dict:
    result = collect(plan, out)
    sizes = [m for m in (model_summary(size, model_dir(out, size)) for size in plan["sizes"]) if m]
    result["models"] = sizes
    atomic_write(out / f"{out.name}.json", lambda t: Path(t).write_text(json.dumps(result, indent=2) + "\n"))
    (bars if plan.get("plot") == "bars" else plot)(result, out / f"{out.name}.png")
    text = markdown(result, out, plan.get("title", "Scale curve"))
    atomic_write(out / "RESULTS.md", lambda t: Path(t).write_text(text))
    print(f"{'model':<14} {'non-emb':>9} {'tokens':>8}  val loss by source")
    for s in sizes:
        print(f"{s['name']:<14} {s['non_embedding_parameters'] / 1e6:8.1f}M {s['tokens_seen'] / 1e6:7.0f}M  "
              + "  ".join(f"{k} {v:.3f}" for k, v in s["val_loss_by_source"].items()))
    print(f"\n{'model':<14} {'task':<6} {'method':<9} {'lr':>7} {'n':>2} {'test':>12}  dev loss by lr")
    for r in result["table"]:
        print(f"{r['size']:<14} {r['task']:<6} {r['method']:<9} {r['chosen_lr']:>7g} {r['n']:>2} "
              f"{r['mean']:6.1f}{sd(r):<7}  " + ", ".join(f"{k}: {v:.3f}" for k, v in r["dev_loss_by_lr"].items()))
    return result


def main(argv: list[str] | None = None) -> None:
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
    args = p.parse_args(argv)
    end = None if args.deadline is None else time.time() + args.deadline
    plan = load_plan(args.study)
    out = Path(args.out) if args.out else plan_file(args.study).parent
    if args.action == "pack":
        print(f"packed {pack_predictions(out / 'results')} predictions.txt under {out / 'results'}")
        return
    if args.action == "plan":
        jobs = plan_jobs(plan, out)
        by_name, clock = {j.name: j for j in jobs}, Clock(jobs)
        # left out: finished jobs, and later seeds at an lr their first seed's finished runs did not choose
        todo = [j for j in jobs if not j.done_file.exists() and not (
            j.wanted is not None and all(by_name[d].done_file.exists() for d in j.needs) and not j.wanted())]
        for j in todo:
            seconds, source = clock.expect(j)
            print(f"{seconds / 60:6.1f} min  {j.name}{'  (if its lr is chosen)' if j.wanted else ''}  ({source})")
        lrs = {eval_name(size, ev, lr, seed): len(ev["lrs"]) for size in plan["sizes"] for ev in plan["evals"]
               for lr in ev["lrs"] for seed in ev["seeds"]}
        hours = sum(clock(j) / (lrs.get(j.name, 1) if j.wanted else 1) for j in todo) / 3600
        print(f"{len(todo)} of {len(jobs)} jobs not done; {hours:.1f} h one job at a time, counting a later "
              f"seed's run only at the lr its first seed chose")
        return
    if args.action == "run":
        jobs = args.jobs or plan.get("jobs", 4)
        if jobs < 1 or (args.deadline is not None and not args.deadline > 0):
            raise SystemExit("--jobs must be >= 1 and --deadline > 0")
        out.mkdir(parents=True, exist_ok=True)
        if out.resolve() != plan_file(args.study).parent.resolve():  # elsewhere: a record of the plan that ran
            atomic_write(out / "plan.json", lambda t: Path(t).write_text(json.dumps(plan, indent=2) + "\n"))
        if "mixture" in plan:
            tokenize(plan)  # once, here: the pretraining jobs then all read the same cache
        run_jobs(plan_jobs(plan, out), out, jobs, end, threads=args.threads, start_late=args.start_late)
    report(plan, out)


if __name__ == "__main__":
    main()
