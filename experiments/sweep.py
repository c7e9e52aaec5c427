"""The ablation sweeps around the default run, each over several seeds; completed runs are skipped.

    python -m experiments.sweep [--sweeps=length,depth,reparam,baselines] [--seeds=0,1,2] [--jobs=1] [--key=value ...]
    make ablation

--jobs=N runs N runs at a time, each with cpu_count/N threads and its output in <runs_dir>/<run>.out (two
single-threaded runs get more done per hour than one two-threaded run on a 2-core machine: experiments/README.md).

length:    prefix length {1, 2, 5, 10, 20, 40}, every layer, MLP
depth:     embedding-only (lr EMBEDDING_LR) vs every layer at lengths {1, 10, 20}
reparam:   MLP vs direct table (lr DIRECT_LR) at the default length
baselines: full fine-tuning, and a prefix on a randomly initialized model of the same shape
Extra `--key=value` settings apply to every run (e.g. a smaller --max_train for a quick sweep).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .config import parse_cli

LENGTHS = (1, 2, 5, 10, 20, 40)
DEPTH_LENGTHS = (1, 10, 20)
SWEEPS = ("length", "depth", "reparam", "baselines")
FINETUNE_LR = 1e-4  # full fine-tuning moves 19M+ weights: a prefix's learning rate would wreck them
# A free table moves ~lr per AdamW step, far slower than the table an MLP computes (notebook 03): at the
# MLP's 1e-3 a direct table or an embedding-only prompt barely leaves its random start. Each gets the
# learning rate of its own (a short probe on the shipped model; prompt tuning is usually run near 0.3).
DIRECT_LR = 1e-1
EMBEDDING_LR = 3e-1


def sweep_runs(sweeps, default_len: int) -> list[dict]:
    """The distinct runs (as settings over the defaults) that the chosen sweeps need, in run order."""
    runs: list[dict] = []

    def add(**kw):
        if kw not in runs:
            runs.append(kw)
    for name in sweeps:
        if name == "length":
            for n in LENGTHS:
                add(prefix_len=n)
        elif name == "depth":
            for n in DEPTH_LENGTHS:
                add(prefix_len=n)
                add(prefix_len=n, depth="embedding", reparam="direct", lr=EMBEDDING_LR)
        elif name == "reparam":
            add(prefix_len=default_len)
            add(prefix_len=default_len, reparam="direct", lr=DIRECT_LR)
        elif name == "baselines":
            add(method="finetune", lr=FINETUNE_LR)
            add(prefix_len=default_len, random_init=True)
        else:
            raise SystemExit(f"unknown sweep {name!r}; choose from {', '.join(SWEEPS)}")
    return runs


class Progress:
    """What a sweep has left: printed as each run starts and ends, with the finished runs' times and an ETA."""

    def __init__(self, total: int, jobs: int):
        self.total, self.jobs, self.t0 = total, jobs, time.time()
        self.seconds: list[float] = []  # runs that trained (a run already done takes ~0 s and is not counted)
        self.ended = self.failed = self.reused = 0
        self.lock = threading.Lock()

    def eta(self) -> str:
        if not self.seconds:
            return "ETA after the first run"
        left = (self.total - self.ended) * statistics.median(self.seconds) / self.jobs
        return f"median run {statistics.median(self.seconds) / 60:.1f} min, about {left / 60:.0f} min left"

    def start(self, name: str) -> None:
        with self.lock:
            print(f"[{self.ended}/{self.total} done] starting {name}; {self.eta()}", flush=True)

    def end(self, name: str, code: int, seconds: float, reused: bool) -> None:
        with self.lock:
            self.ended += 1
            self.failed += code != 0
            if reused:
                self.reused += 1
            elif code == 0:
                self.seconds.append(seconds)
            what = "FAILED" if code else "already done" if reused else f"finished in {seconds / 60:.1f} min"
            print(f"[{self.ended}/{self.total} done] {what}: {name}", flush=True)

    def summary(self) -> str:
        return (f"sweep: {self.total} runs in {(time.time() - self.t0) / 60:.1f} min: "
                f"{self.total - self.failed - self.reused} trained, {self.reused} already done, {self.failed} failed")


def run_one(args: list[str], jobs: int, progress: Progress) -> int:
    """One run in a fresh process: it runs (and records) the code as it is when it starts."""
    cmd = [sys.executable, "-m", "experiments.run", *args]
    cfg = parse_cli(args)
    done = Path(cfg.results_dir) / cfg.run_name / "metrics.json"
    reused = done.exists()  # experiments.run checks that it holds this very run, and prints it
    progress.start(cfg.run_name)
    t0 = time.time()
    if jobs == 1:
        code = subprocess.run(cmd).returncode
    else:
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        out = Path(cfg.runs_dir) / f"{cfg.run_name}.out"
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"  output of {cfg.run_name}: {out}", flush=True)
        with open(out, "a") as f:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={
                **os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}).returncode
    progress.end(cfg.run_name, code, time.time() - t0, reused)
    return code


def integers(option: str, text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; anything but comma-separated integers >= 0 exits with a one-line error."""
    parts = text.split(",")
    if not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise SystemExit(f"error: --{option} must be comma-separated integers >= 0, got {text!r}")
    return [int(p) for p in parts]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    own = ("--sweeps=", "--seeds=", "--jobs=")
    opts = {a[2:].split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith(own)}
    rest = [a for a in argv if not a.startswith(own)]
    sweeps = opts.get("sweeps", ",".join(SWEEPS)).split(",")
    seeds = integers("seeds", opts.get("seeds", "0,1,2"))
    jobs_text = opts.get("jobs", "1")
    if not (jobs_text.isascii() and jobs_text.isdigit() and int(jobs_text) >= 1):
        raise SystemExit(f"error: --jobs must be an integer >= 1, got {jobs_text!r}")
    jobs = int(jobs_text)
    base = parse_cli(rest)
    runs = sweep_runs(sweeps, base.prefix_len)
    print(f"{len(runs)} settings x {len(seeds)} seeds = {len(runs) * len(seeds)} runs, {jobs} at a time")
    # all settings for one seed first: partial sweeps are still balanced
    todo = [rest + [f"--{k}={v if not isinstance(v, bool) else str(v).lower()}" for k, v in kw.items()]
            + [f"--seed={seed}"] for seed in seeds for kw in runs]
    progress = Progress(len(todo), jobs)
    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(lambda args: run_one(args, jobs, progress), todo))
    print(progress.summary(), flush=True)
    failed = [" ".join(args) for args, code in zip(todo, codes) if code]
    if failed:
        raise SystemExit("failed runs (rerun the sweep to retry them):\n  " + "\n  ".join(failed))


if __name__ == "__main__":
    main()
