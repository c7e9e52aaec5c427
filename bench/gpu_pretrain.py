"""Pretraining on a lent GPU machine in one command of at most ~9.5 minutes, and its weights brought back.

    python -m bench.gpu_pretrain bundle [--max-mib N]     # here: .gpu/pretrain/ (corpus subset + BPE files)
    python -m bench.gpu_pretrain run --out $OUT [--dry]  # there: the steps below; --dry: tiny, on the CPU
    python -m bench.gpu_pretrain receive DIR             # here: DIR's parts into .gpu/received/, weights rebuilt

`bash bench/gpu.sh pretrain-bundle | pretrain | pretrain-receive` call these. `run` does, each step with
its own time limit, in this order:

1. **Speed**: 8x512 and 12x768, one at a time, compiled, bf16, vocabulary padded to 64; tokens/s and MFU of
   the steps after compilation (`steady_tokens_per_second`, `steady_mfu`).
2. **Pretraining**, up to 3 runs at a time on the GPU, every run the same number of tokens (`--epochs`, 4,
   passes over the subset's training tokens: about 9M, all that fits beside the tree), warmup-stable-decay: Muon against AdamW at 8x256 (the shipped
   shape), and AdamW at 4x128, 6x192 and 8x512, so that with the AdamW 8x256 run four sizes span 30x
   non-embedding parameters. These share the GPU: their tokens/s are not speed measurements, and their MFU
   is taken against the peak the first speed run measured alone.
3. **Weights back**: each finished model as an int8 pack (`minigpt.export`), rebuilt there and its held-out
   loss before and after measured on a validation book; the packs that fit (`SHIP_ORDER`), with every
   run's metrics and logs, shipped as at most 4 parts of 16 MiB (`bundle ship`) plus `summary.json`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / ".gpu" / "pretrain"
MIB = 2 ** 20
TREE_LIMIT_MIB = 64
MIXTURE = ("gutenberg=corpus/gutenberg:0.35", "wikipedia=corpus/wikipedia:0.3", "imdb=corpus/imdb:0.35")
SHIP_MIB = 60  # of the 64 MiB a command may return: summary and logs beside


@dataclass
class Job:
    """One pretraining run: its name, shape and optimizer."""
    name: str
    layers: int
    width: int
    lr: float
    optimizer: str = "adamw"
    extra: list[str] = field(default_factory=list)

    def args(self, corpus: Path, out: Path, cache: Path, steps: int, dry: bool) -> list[str]:
        heads = max(1, self.width // 64)
        common = ["--out", str(out / self.name), "--overwrite", "--cache-dir", str(cache), *sources(corpus),
                  "--n-layer", str(self.layers), "--n-head", str(heads), "--n-embd", str(self.width),
                  "--lr", str(self.lr), "--optimizer", self.optimizer, "--schedule", "wsd", "--max-steps", str(steps),
                  "--pad-vocab", "64", "--seed", "1337"]
        if dry:
            return common + ["--block-size", "64", "--batch-size", "4", "--warmup-steps", "2", "--eval-interval", "5",
                             "--eval-windows", "2", "--ckpt-interval", "5", "--device", "cpu", "--peak-tflops", "0.1",
                             *self.extra]
        return common + ["--block-size", "512", "--batch-size", "64", "--warmup-steps", "200", "--eval-interval",
                         "250", "--eval-windows", "100", "--ckpt-interval", "500", "--compile", *self.extra]


def sources(corpus: Path) -> list[str]:
    """The mixture's `--source` arguments with the corpus folders under `corpus`."""
    return [f"--source={s.replace('corpus/', f'{corpus}/')}" for s in MIXTURE]


QUICK_EVAL = ["--eval-windows", "8", "--eval-interval", "100000"]  # a speed run's loss is not the point
SPEED = [Job("speed-8x512", 8, 512, 1.5e-3, extra=QUICK_EVAL), Job("speed-12x768", 12, 768, 1e-3, extra=QUICK_EVAL)]
# by priority: the A/B pair (candidates for a new default: the shipped shape costs what it costs now on a CPU)
# first; their weights are shipped first too, then the smaller sizes', then 8x512's if room is left
RUNS = [Job("muon-8x256", 8, 256, 2e-3, "muon", ["--muon-lr", "0.02"]), Job("adamw-8x256", 8, 256, 2e-3),
        Job("adamw-8x512", 8, 512, 1.5e-3), Job("adamw-6x192", 6, 192, 2.5e-3), Job("adamw-4x128", 4, 128, 3e-3)]
SHIP_ORDER = ["muon-8x256", "adamw-8x256", "adamw-6x192", "adamw-4x128", "adamw-8x512"]
DRY_STEPS = 40  # tiny runs on the CPU: enough logged steps for the steady rate
DRY_SHAPES = {"8x512": (2, 96), "12x768": (2, 128), "8x256": (2, 64), "6x192": (2, 48), "4x128": (1, 32)}


def dry_job(j: Job) -> Job:
    layers, width = DRY_SHAPES[j.name.split("-")[1]]
    return Job(j.name, layers, width, j.lr, j.optimizer, j.extra)


# ---------------------------------------------------------------- here: what travels
def tree_mib() -> float:
    """MiB of what a device call sends without `carry`: tracked files and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return sum((ROOT / f).stat().st_size for f in out.decode().split("\0") if f and (ROOT / f).is_file()) / MIB


def bundle(data: Path, max_mib: float | None) -> dict:
    """`.gpu/pretrain/`: the BPE files and a corpus subset of at most `max_mib` (default: what fits beside the
    tree in a call, less 1 MiB)."""
    from minigpt.pretraining.bundle import build_corpus
    HERE.mkdir(parents=True, exist_ok=True)
    (HERE / "gpt2").mkdir(exist_ok=True)
    for f in (data / "gpt2").iterdir():
        shutil.copyfile(f, HERE / "gpt2" / f.name)  # not copy2: the offline copy's files are read-only
    bpe = sum(p.stat().st_size for p in (HERE / "gpt2").iterdir()) / MIB
    room = TREE_LIMIT_MIB - 1 - tree_mib() - bpe
    max_mib = max_mib or room
    if max_mib > room:
        raise SystemExit(f"--max-mib {max_mib} leaves no room: the tree and BPE files need "
                         f"{TREE_LIMIT_MIB - 1 - room:.1f} of the {TREE_LIMIT_MIB} MiB a call sends")
    specs = [s.replace("corpus/", f"{data}/corpus/") for s in MIXTURE]
    meta = build_corpus(specs, HERE / "corpus.tar.xz", max_mib=max_mib)
    exclude = ROOT / ".git" / "info" / "exclude"
    if "/.gpu/" not in exclude.read_text().split():
        exclude.write_text(exclude.read_text().rstrip("\n") + "\n/.gpu/\n")
    print(f"{meta['bytes'] / MIB:.1f} MiB of corpus (room {room:.1f} MiB): carry .gpu/pretrain")
    return meta


def receive(parts_dir: Path, dest: Path) -> list[Path]:
    """Join the parts into `dest` and rebuild every int8 pack there as a float32 checkpoint."""
    from minigpt.export import unpack
    from minigpt.pretraining.bundle import receive as join
    join(parts_dir / "results.tar", dest)
    rebuilt = []
    for manifest in sorted(dest.glob("ship/packs/*/manifest.json")):
        out = dest / "models" / manifest.parent.name
        unpack(manifest.parent, out)
        rebuilt.append(out)
        print(f"rebuilt {out}")
    return rebuilt


# ---------------------------------------------------------------- there: the runs
def steps_for(corpus: Path, cache: Path, epochs: float, tokens_per_step: int) -> tuple[int, int]:
    """(steps for `epochs` passes over the subset's training tokens, those tokens); tokenizes into `cache`."""
    from minigpt.pretraining.mixture import Source
    loaded = [Source.parse(a.split("=", 1)[1]).load(cache) for a in sources(corpus)]
    tokens = sum(len(s.train) for s in loaded)
    return math.ceil(epochs * tokens / tokens_per_step), tokens


def pool(jobs: list[tuple[str, list[str]]], logs: Path, limit: float, at_once: int) -> dict[str, float]:
    """Run `python -m minigpt.pretraining ARGS` for each (name, args), `at_once` at a time, until `limit`
    seconds: then the runs still going get Ctrl-C (they save their state) and, 60 s later, are killed.
    Returns each started run's seconds."""
    env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "TQDM_MININTERVAL": "10"}
    queue, running, took, t0 = list(jobs), {}, {}, time.monotonic()
    logs.mkdir(parents=True, exist_ok=True)
    while queue or running:
        while queue and len(running) < at_once and time.monotonic() - t0 < limit:
            name, args = queue.pop(0)
            log = open(logs / f"{name}.log", "w")
            running[name] = (subprocess.Popen([sys.executable, "-m", "minigpt.pretraining", *args], stdout=log,
                                              stderr=subprocess.STDOUT, env=env), log, time.monotonic())
            print(f"[{time.monotonic() - t0:5.0f}s] started {name}", flush=True)
        if time.monotonic() - t0 > limit:
            queue.clear()
            for proc, _, _ in running.values():
                proc.send_signal(signal.SIGINT)
            for proc, _, _ in running.values():
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for name, (proc, log, start) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                took[name] = round(time.monotonic() - start, 1)
                print(f"[{time.monotonic() - t0:5.0f}s] {name}: exit {proc.returncode} after {took[name]} s", flush=True)
                del running[name]
        time.sleep(1)
    return took


def weights_back(runs: Path, ship: Path, work: Path, text: Path, names: list[str]) -> dict:
    """Each finished run's int8 pack, rebuilt and compared with the original on `text`; the packs that fit in
    `SHIP_MIB`, in the order of `names`, go to `ship/packs/`."""
    from minigpt.export import main as export
    out, room = {}, SHIP_MIB * MIB - sum(p.stat().st_size for p in ship.rglob("*") if p.is_file())
    for name in names:
        if not (runs / name / "pretrain_metrics.json").exists():
            continue
        pack = work / "packs" / name
        export(["pack", str(runs / name), str(pack)])
        export(["unpack", str(pack), str(work / "rebuilt" / name)])
        losses = export(["compare", str(runs / name), str(work / "rebuilt" / name), "--text", str(text)])
        size = sum(p.stat().st_size for p in pack.iterdir())
        out[name] = {**losses, "pack_bytes": size, "shipped": size <= room}
        if size <= room:
            shutil.copytree(pack, ship / "packs" / name)
            room -= size
    return out


def summarize(runs: Path, names: list[str]) -> dict:
    """Each run's pretrain_metrics.json less its config and per-source details, or 'did not finish'."""
    out = {}
    for name in names:
        f = runs / name / "pretrain_metrics.json"
        if not f.exists():
            out[name] = "did not finish"
            continue
        m = json.loads(f.read_text())
        out[name] = {k: m[k] for k in ("val_loss", "val_loss_by_source", "steps", "tokens_seen", "train_seconds",
                                       "non_embedding_parameters", "parameters", "tokens_per_second", "mfu",
                                       "steady_tokens_per_second", "steady_mfu", "peak_tflops", "gpu", "torch")}
        out[name]["optimizer"] = m["config"]["optimizer"]
    return out


def measured_peak(runs: Path, names: list[str]) -> list[str]:
    """`--peak-tflops` as the first finished speed run measured it alone on the device, or nothing."""
    for name in names:
        f = runs / name / "pretrain_metrics.json"
        if f.exists():
            return ["--peak-tflops", str(json.loads(f.read_text())["peak_tflops"])]
    return []


def run(out: Path, work: Path, dry: bool, epochs: float, budget: float, data: Path = HERE,
        only: set[str] | None = None) -> dict:
    """Steps 1-3 of the module's docstring within `budget` seconds (the runs named in `only`, or all), reading
    `data` (what `bundle` made); the parts and summary.json go to `out`."""
    from minigpt.pretraining.bundle import ship, unpack
    t0 = time.monotonic()
    os.environ["DATA_DIR"] = str(data)  # the BPE files
    out.mkdir(parents=True, exist_ok=True)
    corpus, cache, runs, shipped = work / "corpus", work / "cache", work / "runs", work / "ship"
    meta = unpack(data / "corpus.tar.xz", corpus)
    speed, jobs = ([dry_job(j) if dry else j for j in js if not only or j.name in only] for js in (SPEED, RUNS))
    steps, tokens = steps_for(corpus, cache, epochs, 4 * 64 if dry else 64 * 512)
    steps = min(steps, DRY_STEPS) if dry else steps
    print(f"{tokens:,} training tokens; {steps} steps per run ({epochs} epochs)", flush=True)
    pool([(j.name, j.args(corpus, runs, cache, DRY_STEPS if dry else 200, dry)) for j in speed], shipped / "logs",
         limit=min(240, budget / 2.5), at_once=1)
    left = budget - (time.monotonic() - t0) - 90  # packing, comparing and shipping need about 90 s
    peak = measured_peak(runs, [j.name for j in speed])  # runs sharing the GPU would measure less
    pool([(j.name, j.args(corpus, runs, cache, steps, dry) + peak) for j in jobs], shipped / "logs", limit=left,
         at_once=3)
    names = [j.name for j in speed + jobs]
    for name in names:
        for f in ("pretrain_metrics.json", "pretrain_log.jsonl"):
            if (runs / name / f).exists():
                (shipped / "runs" / name).mkdir(parents=True, exist_ok=True)
                shutil.copy(runs / name / f, shipped / "runs" / name / f)
    book = sorted((corpus / "gutenberg" / "val").glob("*.txt"))[0]
    summary = {"bundle": meta, "epochs": epochs, "steps": steps, "train_tokens": tokens, "dry": dry,
               "runs": summarize(runs, names),
               "round_trip": weights_back(runs, shipped, work, book, SHIP_ORDER),
               "round_trip_text": f"{book.name}, first 20,000 tokens", "seconds": round(time.monotonic() - t0)}
    for folder in (shipped, out):
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    parts = ship(shipped, out, "results", max_file_mib=16, max_mib=62)
    print(f"{len(parts)} parts and summary.json in {out} after {summary['seconds']} s", flush=True)
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_pretrain", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("bundle", help="here: .gpu/pretrain/ to carry")
    c.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    c.add_argument("--max-mib", type=float, default=None, help="default: what fits beside the tree")
    c = sub.add_parser("run", help="there: speed, pretraining, weights back")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--work", type=Path, default=Path("/tmp/gpu_pretrain"))
    c.add_argument("--dry", action="store_true", help="tiny shapes on the CPU: checks the steps")
    c.add_argument("--epochs", type=float, default=4.0, help="passes over the subset's training tokens")
    c.add_argument("--budget", type=float, default=540.0, help="seconds for all of it")
    c.add_argument("--data", type=Path, default=HERE, help="what `bundle` made")
    c.add_argument("--only", default=None, help="these runs alone, e.g. speed-8x512,adamw-4x128")
    c = sub.add_parser("receive", help="here: join the parts, rebuild the weights")
    c.add_argument("parts", type=Path)
    c.add_argument("--dest", type=Path, default=ROOT / ".gpu" / "received")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if a.cmd == "bundle":
        return bundle(a.data, a.max_mib)
    if a.cmd == "receive":
        return receive(a.parts, a.dest)
    if a.work.exists():
        shutil.rmtree(a.work)
    only = set(a.only.split(",")) if a.only else None
    unknown = only and only - {j.name for j in SPEED + RUNS}
    if unknown:
        raise SystemExit(f"error: no run named {', '.join(sorted(unknown))}; the runs: "
                         f"{', '.join(j.name for j in SPEED + RUNS)}")
    return run(a.out, a.work, a.dry, a.epochs, a.budget, a.data, only)


if __name__ == "__main__":
    main()
