"""A plan as jobs: the models to make, then the evaluations, each with what it needs and what it costs."""
from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..results import read_run
from .spec import arm, eval_command, flag, lr_source, model_dir, model_job, run_name


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


def plan_jobs(plan: dict, out: Path, py: str = sys.executable) -> list[Job]:
    """Jobs that make the models first (pretraining, or adaptation of a checkpoint on task text; a model
    given as a checkpoint needs none), then evaluations (task, method, seed and lr order as in the plan)."""
    jobs = [j for size in plan["sizes"] if not size.get("checkpoint") for j in model_jobs(plan, size, out, py)]
    return jobs + eval_jobs(plan, out, py)


def model_jobs(plan: dict, size: dict, out: Path, py: str) -> list[Job]:
    """The job that adapts a checkpoint on task text, or the pretraining job and the model card's after it."""
    folder = model_dir(out, size)
    resume = ["--resume"] if (folder / "train_state.pt").exists() else []
    if size.get("adapt"):
        a = size["adapt"]
        cmd = [py, "-m", "experiments.adapt", "--tasks", ",".join(a["tasks"]), "--model", a["from"],
               "--tokens", str(a["tokens"]), "--out", str(folder)]
        cmd += [x for k, v in a.get("args", {}).items() for x in flag(k, v)] + resume
        return [Job(f"adapt-{size['name']}", cmd, folder / "adaptation.json", estimate=size.get("seconds", 600))]
    cmd = [py, "-m", "minigpt.pretraining", "--out", str(folder), "--lr", str(size["lr"]),
           "--max-seconds", str(size["seconds"])]
    if size.get("init_from"):  # continued pretraining: the checkpoint fixes the shape
        cmd += ["--init-from", size["init_from"]]
    else:
        cmd += ["--n-layer", str(size["n_layer"]), "--n-head", str(size["n_head"]), "--n-embd", str(size["n_embd"])]
    for spec in plan["mixture"]:
        cmd += ["--source", spec]
    for k, v in plan["pretrain"].items():
        cmd += flag(k, v)
    cmd += resume
    card = [py, "-m", "minigpt.pretraining.model_card", str(folder), "--command", " ".join(["python", *cmd[1:]]),
            "--hardware", plan.get("hardware", "see pretrain_metrics.json")]
    return [Job(f"pretrain-{size['name']}", cmd, folder / "pretrain_metrics.json",
                estimate=size["seconds"] + plan.get("pretrain_overhead_seconds", 60)),
            Job(f"card-{size['name']}", card, folder / "README.md", estimate=30, needs=[f"pretrain-{size['name']}"])]


def eval_jobs(plan: dict, out: Path, py: str) -> list[Job]:
    """One job per (seed, model, evaluation, lr): every first seed before any further seed unless the plan
    says `"seeds_first": false`; a further seed of a `"later_seeds": "chosen_lr"` evaluation waits for its
    first seed's runs and is wanted only at the lr they chose, and every seed of a `"lr_from"` evaluation
    waits for the first seed's runs of the grid it names."""
    order = [(seed, size, ev, lr) for ev in plan["evals"] for seed in ev["seeds"] for size in plan["sizes"]
             if not ev.get("only") or size["name"] in ev["only"] for lr in ev["lrs"]]
    if plan.get("seeds_first", True):
        order.sort(key=lambda t: t[0] != t[2]["seeds"][0])  # every first seed before any further seed
    jobs = []
    for seed, size, ev, lr in order:
        name, cmd = eval_command(plan, size, ev, lr, seed, out, py)
        first, grid = ev["seeds"][0], lr_source(plan, ev)
        needs, wanted = model_job(size), None
        if grid is not ev or (seed != first and ev.get("later_seeds") == "chosen_lr"):
            needs = needs + [run_name(plan, size, grid, x, grid["seeds"][0], out) for x in grid["lrs"]]
            wanted = chosen_by_first_seed(plan, out, size, grid, lr)
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


def chosen_by_first_seed(plan: dict, out: Path, size: dict, ev: dict, lr: float) -> Callable[[], bool]:
    """Whether `lr` has the lowest best dev loss among the first seed's runs (read when they are done)."""
    def wanted() -> bool:
        dev = {}
        for x in ev["lrs"]:
            record = read_run(out / "results" / run_name(plan, size, ev, x, ev["seeds"][0], out))
            m = record.metrics if record else {}  # a damaged record (named in a warning) chooses nothing
            if isinstance(m.get("best_dev_loss"), (int, float)) and math.isfinite(m["best_dev_loss"]):
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
