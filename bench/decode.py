"""Beam search on a real test set with a trained prefix, four ways: the eager decoder with settled rows
leaving the batch (`generate`'s default), the eager decoder with every row decoded until its batch's last row
settles (`drop_settled=False`, what transformers' `generate` does), the static cache (`decoder="static"`,
no host sync per step) and the static cache with the one-token step compiled (`decoder="compiled"`: one
CUDA graph per step on a GPU). Writes a table into bench/RESULTS.md (between the DECODE markers).

    python -m bench.decode --run studies/findings/runs/<a prefix run>   # E2E test set, ~3-5 min
    python -m bench.decode --run DIR --max-test 128 --no-write             # a quick look, printed only

The run's own settings (run.json: base model, precision, beam width, length limit, decoding batch) are
used, as `experiments.run` decodes its test set. The ways decode the same sources in one process,
alternating (the order flipped every repeat), after one untimed decode of the first batch each (the
compiled way compiles there); medians of --repeats. In fp32 the outputs must be identical (the script stops
if one differs); in bf16 only the two eager ways must agree, and the share of outputs that the static ways
decode identically is reported (there the sums over the cache's slots round differently, which can turn
a near-tie between two tokens).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.sections import write_section
from experiments.config import ExperimentConfig, load_config
from experiments.data import encode_source
from experiments.decode import decode
from experiments.metrics import bleu
from experiments.provenance import commit, machine
from experiments.run import load_base
from experiments.runid import recorded_settings
from experiments.tasks import task_splits
from minigpt.io import atomic_write
from minigpt.runtime import sync
from minigpt.tokenizer import load_tokenizer
from prefix import PrefixTuner

ROOT = Path(__file__).resolve().parent.parent
WAYS = {"drop settled rows": dict(drop_settled=True), "every row to the end": dict(drop_settled=False),
        "static cache": dict(decoder="static"), "static, compiled": dict(decoder="compiled")}
REFERENCE = "every row to the end"  # the speedups are against it (what transformers does)


def load_run(run: Path) -> tuple[ExperimentConfig, PrefixTuner]:
    """The run's settings and its trained prefix on its base model."""
    record, saved = run / "run.json", run / "prefix"
    if not record.is_file() or not (saved / "prefix_config.json").is_file():
        raise SystemExit(f"{run} is not a finished prefix run: it needs run.json and prefix/prefix_config.json "
                         f"(a folder under a plan's runs/, e.g. studies/findings/runs/<name>)")
    cfg = load_config(overrides=recorded_settings(json.loads(record.read_text())["settings"]))
    if cfg.method != "prefix" or cfg.position != "prefix" or cfg.task not in ("e2e", "webnlg"):
        raise SystemExit(f"{run}: a table-to-text prefix run is needed (method=prefix, position=prefix, "
                         f"task e2e or webnlg); this one is {cfg.task}, {cfg.method}, {cfg.position}")
    return cfg, PrefixTuner.load(saved, load_base(cfg)).eval()


def compare(cfg: ExperimentConfig, net, enc, sources: list, repeats: int) -> tuple[dict, dict]:
    """Each way's decoding seconds ([repeats]) and outputs, the ways alternating (the order flipped every
    repeat) after one untimed batch each; stops where outputs differ that must not (module docstring)."""
    device = next(net.parameters()).device

    def run(way: str, items: list) -> tuple[float, list[str]]:
        sync(device)
        t0 = time.perf_counter()
        out = decode(net, enc, items, num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens,
                     batch_size=cfg.decode_batch_size, bf16=cfg.bf16, desc=way, **{"decoder": "eager", **WAYS[way]})
        sync(device)
        return time.perf_counter() - t0, out

    for way in WAYS:  # warm-up: compiling, caches, allocator
        run(way, sources[:cfg.decode_batch_size])
    seconds = {way: [] for way in WAYS}
    outputs = {}
    for r in range(repeats):
        for way in (WAYS if r % 2 == 0 else reversed(WAYS)):
            took, outputs[way] = run(way, sources)
            seconds[way].append(took)
        for way, out in outputs.items():
            if out != outputs[REFERENCE] and (not cfg.bf16 or way == "drop settled rows"):
                bad = next(i for i, (a, b) in enumerate(zip(out, outputs[REFERENCE])) if a != b)
                raise SystemExit(f"{way!r} and {REFERENCE!r} decode test item {bad} differently: {out[bad]!r} "
                                 f"vs {outputs[REFERENCE][bad]!r}")
    return seconds, outputs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="a prefix run's folder (run.json, prefix/)")
    ap.add_argument("--max-test", type=int, default=None, help="first N test items (default: the whole set)")
    ap.add_argument("--repeats", type=int, default=3, help="timed decodes per way (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-write", action="store_true", help="print the table; leave bench/ as it is")
    ap.add_argument("--report", action="store_true", help="only rewrite the table from the results files")
    args = ap.parse_args(argv)
    if args.report:
        for out in sorted((ROOT / "bench").glob("results-decode-*.json")):
            write_table(json.loads(out.read_text()))
        return
    if args.run is None:
        ap.error("--run is required (a prefix run's folder)")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, net = load_run(args.run)
    enc = load_tokenizer()
    test = task_splits(cfg.task, cfg.data_dir, 1, 1, args.max_test).test
    sources = [encode_source(enc, table) for table, _ in test]

    seconds, outputs = compare(cfg, net, enc, sources, args.repeats)
    same = {way: sum(a == b for a, b in zip(out, outputs[REFERENCE])) / len(sources) for way, out in outputs.items()}
    med = {way: statistics.median(s) for way, s in seconds.items()}
    refs = [r for _, r in test]
    scores = {way: round(bleu(out, refs), 2) for way, out in outputs.items()}
    device = next(net.parameters()).device.type
    where = machine()
    row = {"run": str(args.run), "task": cfg.task, "items": len(sources), "num_beams": cfg.num_beams,
           "max_new_tokens": cfg.max_new_tokens, "batch": cfg.decode_batch_size, "bf16": cfg.bf16,
           "device": where["gpu"] or f"{where['cpus']}-core {where['cpu']}", "threads": torch.get_num_threads(),
           "repeats": args.repeats,
           "seconds": {w: [round(x, 2) for x in s] for w, s in seconds.items()},
           "median_seconds": {w: round(x, 2) for w, x in med.items()},
           "speedup": {w: round(med[REFERENCE] / x, 2) for w, x in med.items() if w != REFERENCE},
           "same_outputs": {w: round(x, 4) for w, x in same.items() if w != REFERENCE}, "bleu": scores,
           "command": "python -m bench.decode " + " ".join(sys.argv[1:] if argv is None else argv),
           "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(row, indent=1))
    if args.no_write:
        return
    out = ROOT / "bench" / f"results-decode-{device}.json"
    rows = json.loads(out.read_text()) if out.exists() else []
    rows.append(row)
    atomic_write(out, lambda t: Path(t).write_text(json.dumps(rows, indent=1) + "\n"))
    write_table(rows)
    print(f"wrote {out} and the DECODE table of bench/RESULTS.md")


def write_table(rows: list[dict]) -> None:
    """Seconds per way (median), and in brackets the speedup over every row to the end; `-`: not measured
    (rows from before the static ways existed)."""
    others = [w for w in WAYS if w != REFERENCE]
    lines = [f"| run | items | beam | precision | {REFERENCE} (s) | " + " | ".join(f"{w} (s)" for w in others)
             + " | outputs identical to it (" + ", ".join(others) + ") | machine, threads, date |",
             "|---|---|---|---|---|" + "---|" * len(others) + "---|---|"]
    for x in rows:
        m = x["median_seconds"]
        speedup = x["speedup"] if isinstance(x["speedup"], dict) else {"drop settled rows": x["speedup"]}
        cells = [f"{m[w]:.1f} ({speedup[w]:.2f}x)" if w in m else "-" for w in others]
        same = x["same_outputs"] if isinstance(x["same_outputs"], dict) else {"drop settled rows": 1.0}
        agree = " / ".join(f"{same[w]:.1%}" if w in same else "-" for w in others)
        if "bleu" in x:  # the test BLEU of each way's outputs (they differ only where outputs do)
            agree += " (BLEU " + " / ".join(f"{x['bleu'][w]:.1f}" for w in [REFERENCE] + others) + ")"
        lines.append(f"| {Path(x['run']).name} | {x['items']} | {x['num_beams']} | {'bf16' if x['bf16'] else 'fp32'} | "
                     f"{m[REFERENCE]:.1f} | " + " | ".join(cells) + f" | {agree} | "
                     f"{x['device']}, {x['threads']}, {x['date']} |")
    write_section(ROOT / "bench" / "RESULTS.md", "DECODE", "\n".join(lines))


if __name__ == "__main__":
    main()
