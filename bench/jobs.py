"""How to spend a CPU's cores on a sweep: one run using every core, or one run per core; bf16 or fp32.

    python -m bench.jobs                          # prefix and fine-tuning, bf16 and fp32 (~6 min on 2 cores)
    python -m bench.jobs --methods prefix --precisions bf16 --steps 10 --no-write   # a quick look, printed only
    python -m bench.jobs --report                 # rewrite the table of bench/RESULTS.md from the JSON file

Each setting trains a run of the experiments exactly as `python -m experiments.run` does (its base model,
precision recipe and training loop, `experiments.train.fit`, on the task's real training pairs in the same
order), in fresh processes: once alone with `--cores` threads, then as `--cores` runs side by side with one
thread each, as `python -m experiments.plans run --jobs N --threads 1` would. Timed: the steps after
--warmup steps (kernel compilation and weight packing happen in the first ones), from the training log's
clock. Throughput of one layout = the sum over its runs of steps per second. A sweep's choice depends on the
CPU (bf16 is fast only where the CPU has bf16 matrix instructions worth using), so every row names the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.sections import write_section
from minigpt.io import atomic_write

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results-jobs-cpu.json"


def child(args: argparse.Namespace) -> None:
    """One training run in this process: print the seconds of each timed step as JSON."""
    from experiments.config import load_config
    from experiments.data import encode_pair
    from experiments.run import build_net, load_base
    from experiments.tasks import task_splits
    from experiments.train import LMObjective, fit
    from minigpt import EOT, load_tokenizer
    from minigpt.fast.allocator import keep_freed_memory

    keep_freed_memory()  # as experiments.run does in a training process; threads: OMP_NUM_THREADS, as a sweep sets
    steps = args.warmup + args.steps
    cfg = load_config(overrides={"task": args.task, "method": args.method, "bf16": args.precision == "bf16",
                                 "model": args.model, "max_train": steps * 10, "batch_size": 10, "max_dev": 10,
                                 "epochs": 1, "log_every": 1, "ckpt_every": 10 ** 9, "lr": 1e-4})
    enc = load_tokenizer()
    train, dev, *_ = task_splits(cfg.task, cfg.data_dir, cfg.max_train, cfg.max_dev, 1, cfg.train_seed)
    base = load_base(cfg)
    net = build_net(cfg, base, enc)
    clock: dict[int, float] = {}

    def log(item):
        if "train_loss" in item:
            clock[item["step"]] = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        fit(net, LMObjective(base, EOT), [encode_pair(enc, *p) for p in train], [encode_pair(enc, *p) for p in dev],
            cfg, Path(run_dir), log=log)
    timed = [clock[s + 1] - clock[s] for s in range(args.warmup, steps)]
    print(json.dumps({"step_seconds": timed}))


def launch(args: argparse.Namespace, method: str, precision: str, threads: int, n: int) -> list[list[float]]:
    """`n` runs side by side with `threads` threads each; their timed step seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "bench.jobs", "--child", "--method", method, "--precision", precision,
           "--task", args.task, "--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a benchmark run failed ({' '.join(cmd)}):\n{stderr[-2000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1])["step_seconds"])
    return out


def measure(args: argparse.Namespace) -> list[dict]:
    import torch

    from experiments.provenance import cpu_name
    rows = []
    for method in args.methods:
        for precision in args.precisions:
            alone = launch(args, method, precision, args.cores, 1)[0]
            shared = launch(args, method, precision, 1, args.cores)
            row = {"method": method, "precision": precision, "task": args.task, "model": args.model,
                   "cores": args.cores, "steps": args.steps, "warmup": args.warmup,
                   "alone_step_s": statistics.median(alone),
                   "shared_step_s": [statistics.median(s) for s in shared],
                   "cpu": cpu_name(), "torch": torch.__version__,
                   "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "command": args.command}
            row["alone_steps_per_s"] = 1 / row["alone_step_s"]
            row["shared_steps_per_s"] = sum(1 / s for s in row["shared_step_s"])
            print(f"{method} {precision}: one run x {args.cores} threads {row['alone_steps_per_s']:.2f} steps/s; "
                  f"{args.cores} runs x 1 thread {row['shared_steps_per_s']:.2f} steps/s in all "
                  f"({row['shared_steps_per_s'] / row['alone_steps_per_s']:.2f}x)", flush=True)
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: per CPU, method and precision, the two layouts' throughput and their ratio."""
    lines = ["| CPU | method | precision | one run, all cores (steps/s) | one run per core, in all (steps/s) | "
             "per core / all cores | fp32 / bf16 (one run per core) | date, command |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fp32 = next((x for x in rows if x["cpu"] == r["cpu"] and x["method"] == r["method"]
                     and x["precision"] == "fp32"), None)
        speed = "–" if fp32 is None or r["precision"] != "bf16" else \
            f"{fp32['shared_steps_per_s'] / r['shared_steps_per_s']:.2f}×"
        lines.append(f"| {r['cpu']} ({r['cores']} cores) | {r['method']} | {r['precision']} | "
                     f"{r['alone_steps_per_s']:.2f} | {r['shared_steps_per_s']:.2f} | "
                     f"{r['shared_steps_per_s'] / r['alone_steps_per_s']:.2f}× | {speed} | "
                     f"{r['date']}, `{r['command']}` |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["prefix", "finetune"], choices=["prefix", "finetune"])
    ap.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    ap.add_argument("--task", default="e2e", choices=["e2e", "webnlg"], help="whose training pairs (default e2e)")
    ap.add_argument("--model", default="checkpoints/minigpt-gutenberg", help="the base model (default the shipped one)")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores to share out (default: all)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/ as it is")
    ap.add_argument("--report", action="store_true", help="only rewrite the table from the results file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--precision", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    if args.cores < 1 or args.steps < 1 or args.warmup < 1:
        raise SystemExit("--cores, --steps and --warmup must be at least 1")
    args.command = " ".join(["python -m bench.jobs", *(sys.argv[1:] if argv is None else argv)])
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if not args.report:
        new = measure(args)
        if args.no_write:
            print(table(new))
            return
        keys = {(r["cpu"], r["method"], r["precision"]) for r in new}
        old = [r for r in old if (r["cpu"], r["method"], r["precision"]) not in keys] + new
        atomic_write(RESULTS, lambda t: Path(t).write_text(json.dumps(old, indent=1) + "\n"))
    write_section(ROOT / "bench" / "RESULTS.md", "JOBS", table(old))
    print(table(old))


if __name__ == "__main__":
    main()
