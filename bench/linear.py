"""GPT-2's frozen linear layers on CPU: PyTorch's default path (`F.linear`, MKL) against ours
(`minigpt.fast.linear`, oneDNN; bf16 weights packed once), for the products a training step and a decoding
step make. Writes a table into bench/RESULTS.md (between the LINEAR markers).

    python -m bench.linear              # gpt2 shapes, both precisions (about a minute)
    python -m bench.linear --no-write   # print the table only

Each row times the 12 layers' four linear layers (or the output layer, 50,257 x 768, once) in
sequence, so weights stream from memory as in a real step; medians of 7, the two sides alternating.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.sections import write_section
from minigpt.fast import linear as fast

ROOT = Path(__file__).resolve().parent.parent
C, V, LAYERS = 768, 50257, 12
SHAPES = [(3 * C, C), (C, C), (4 * C, C), (C, 4 * C)]  # c_attn, attn c_proj, c_fc, mlp c_proj: (out, in)
CASES = [  # (label, rows, output layer?, input-gradient product?)
    ("decoding step, 8 rows: linear layers", 8, False, False),
    ("decoding step, 8 rows: output layer", 8, True, False),
    ("training step, 1,024 rows: linear layers, forward", 1024, False, False),
    ("training step, 1,024 rows: linear layers, input gradient", 1024, False, True),
    ("loss chunk, 128 rows: output layer, forward", 128, True, False),
    ("loss chunk, 128 rows: output layer, input gradient", 128, True, True),
]


def median_ms(fns: dict, repeats: int = 7) -> dict[str, float]:
    times = {k: [] for k in fns}
    for f in fns.values():  # warm-up (and, for ours, the one-time packing)
        f()
    for r in range(repeats):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(t) for k, t in times.items()}


def publish(name: str, lines: list[str], write: bool) -> None:
    """Print a table; if `write`, also put it in bench/RESULTS.md between `<!-- BEGIN name -->` and
    `<!-- END name -->`."""
    text = "\n".join(lines)
    print(text)
    if write:
        write_section(ROOT / "bench" / "RESULTS.md", name, text)


def measure(dtype: torch.dtype) -> list[tuple[str, float, float]]:
    g = torch.Generator().manual_seed(0)
    layers = [(0.02 * torch.randn(o, i, generator=g)).to(dtype) for _ in range(LAYERS) for o, i in SHAPES]
    head = [(0.02 * torch.randn(V, C, generator=g)).to(dtype)]
    rows = []
    for label, n, is_head, grad in CASES:
        ws = head if is_head else layers
        d = 0 if grad else 1  # the weight dimension the input meets
        xs = {w.shape[d]: torch.randn(n, w.shape[d], generator=g).to(dtype) for w in ws}
        if grad:  # dy @ W: the product that carries the gradient to the layer's input
            fns = dict(default=lambda: [xs[w.shape[d]] @ w for w in ws],
                       ours=lambda: [fast.matmul(xs[w.shape[d]], w) for w in ws])  # as the model
        else:
            fns = dict(default=lambda: [F.linear(xs[w.shape[d]], w) for w in ws],
                       ours=lambda: [fast.linear(xs[w.shape[d]], w) for w in ws])
        ms = median_ms(fns)
        rows.append((label, ms["default"], ms["ours"]))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-write", action="store_true", help="print the table, leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    x = torch.zeros(2, C)
    if not fast.applies(x, torch.zeros(C, C)):
        raise SystemExit("the oneDNN path is off here (no oneDNN in this PyTorch build, or MINIGPT_ONEDNN=0)")
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M')}; "
             "command: `python -m bench.linear`", "",
             "| product | precision | F.linear / @ (MKL) ms | ours (oneDNN) ms | speed-up |", "|---|---|---|---|---|"]
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for label, default, ours in measure(dtype):
            lines.append(f"| {label} | {name} | {default:.1f} | {ours:.1f} | **{default / ours:.2f}×** |")
    publish("LINEAR", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
