"""Beam search on a real test set with a trained prefix: settled rows leaving the batch (`generate`'s
default) against every row decoded until its batch's last row settles (`drop_settled=False`, what
transformers' `generate` does). Writes a table into bench/RESULTS.md (between the DECODE markers).

    python -m bench.decode --run studies/findings/runs/<a prefix run>   # E2E test set, ~3-5 min
    python -m bench.decode --run DIR --max-test 128 --no-write             # a quick look, printed only

The run's own settings (run.json: base model, precision, beam width, length limit, decoding batch) are
used, as `experiments.run` decodes its test set. Both ways decode the same sources in one process,
alternating (the order flipped every repeat); medians of --repeats. The outputs must be identical: the
script stops if one differs.
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
from experiments.provenance import commit, machine
from experiments.run import load_base
from experiments.runid import recorded_settings
from experiments.tasks import task_splits
from minigpt.io import atomic_write
from minigpt.tokenizer import load_tokenizer
from prefix import PrefixTuner

ROOT = Path(__file__).resolve().parent.parent
WAYS = {"drop settled rows": True, "every row to the end": False}


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

    def run(drop: bool) -> tuple[float, list[str]]:
        t0 = time.perf_counter()
        out = decode(net, enc, sources, num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens,
                     batch_size=cfg.decode_batch_size, bf16=cfg.bf16, desc=f"drop_settled={drop}",
                     drop_settled=drop)
        return time.perf_counter() - t0, out

    seconds = {way: [] for way in WAYS}
    outputs = {}
    for r in range(args.repeats):
        for way in (WAYS if r % 2 == 0 else reversed(WAYS)):
            took, outputs[way] = run(WAYS[way])
            seconds[way].append(took)
        if outputs["drop settled rows"] != outputs["every row to the end"]:
            bad = next(i for i, (a, b) in enumerate(zip(*outputs.values())) if a != b)
            raise SystemExit(f"the two ways decode test item {bad} differently: {list(outputs.values())[0][bad]!r} "
                             f"vs {list(outputs.values())[1][bad]!r}")
    med = {way: statistics.median(s) for way, s in seconds.items()}
    device = next(net.parameters()).device.type
    where = machine()
    row = {"run": str(args.run), "task": cfg.task, "items": len(sources), "num_beams": cfg.num_beams,
           "max_new_tokens": cfg.max_new_tokens, "batch": cfg.decode_batch_size, "bf16": cfg.bf16,
           "device": where["gpu"] or f"{where['cpus']}-core {where['cpu']}", "threads": torch.get_num_threads(),
           "repeats": args.repeats,
           "seconds": {w: [round(x, 2) for x in s] for w, s in seconds.items()},
           "median_seconds": {w: round(x, 2) for w, x in med.items()},
           "speedup": round(med["every row to the end"] / med["drop settled rows"], 2), "same_outputs": True,
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
    lines = ["| run | items | beam | every row to the end (s) | drop settled rows (s) | speedup | same outputs | "
             "machine, threads, date |", "|---|---|---|---|---|---|---|---|"]
    for x in rows:
        m = x["median_seconds"]
        lines.append(f"| {Path(x['run']).name} | {x['items']} | {x['num_beams']} | {m['every row to the end']:.1f} | "
                     f"{m['drop settled rows']:.1f} | {x['speedup']:.2f}x | {'yes' if x['same_outputs'] else 'no'} | "
                     f"{x['device']}, {x['threads']}, {x['date']} |")
    write_section(ROOT / "bench" / "RESULTS.md", "DECODE", "\n".join(lines))


if __name__ == "__main__":
    main()
