"""The fused CPU training kernels (minigpt/kernels.py) against the eager PyTorch they replace, at gpt2's
shapes in bf16, and a whole gpt2 bf16 training step with the kernels off and on. Writes a table into
bench/RESULTS.md (between the KERNELS markers).

    python -m bench.kernels              # about a minute
    python -m bench.kernels --no-write   # print the table only

Each kernel row is the forward and backward of one layer's tensor (what a training step runs); the loss
row is the whole chunked loss of a batch, its matmuls included; the step row is bench.bench's gpt2 bf16
training step. The two settings alternate in one process (`minigpt.kernels.ENABLED` off and on);
medians of 7.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.bench import FULL, batch, build, run
from bench.linear import C, V, median_ms, publish
from minigpt import kernels
from minigpt.attention import causal_mask
from minigpt.model import ChunkedCrossEntropy

BF16 = torch.bfloat16
B, T, H, P = FULL["batch"], FULL["seq"], 12, 10  # batch 8 x 128 tokens, 12 heads, prefix length 10


def backward_of(fn, x: torch.Tensor, grad: torch.Tensor):
    """A callable running fn(x) and its backward, as a training step does."""
    return lambda: torch.autograd.grad(fn(x), x, grad)


def cases() -> list[tuple[str, callable]]:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(B, T, 4 * C, generator=g).to(BF16).requires_grad_()  # one MLP's pre-activation
    scores = (4 * torch.randn(B, H, T, P + T, generator=g)).to(BF16).requires_grad_()
    bias = torch.zeros(T, P + T).masked_fill(~causal_mask(T, P + T), float("-inf")).view(1, 1, T, P + T)
    hidden = torch.randn(B * (T - 1), C, generator=g).to(BF16).requires_grad_()
    weight = (0.02 * torch.randn(V, C, generator=g)).to(BF16)  # the tied output layer
    targets = torch.randint(0, V, (B * (T - 1),), generator=g)
    setting = dict(part="train", model="gpt2", precision="bf16", projection=False, loss="all")
    net, opt = build("ours", setting, "cpu")
    data = batch(setting, FULL, "cpu")
    return [
        (f"GELU, {B} x {T} x {4 * C}, forward + backward",
         backward_of(kernels.gelu, h, torch.randn_like(h))),
        (f"attention softmax, {B} x {H} x {T} x {P + T}, forward + backward",
         backward_of(lambda s: kernels.softmax(s, bias, 0.125), scores, torch.randn_like(scores))),
        (f"loss, {B * (T - 1)} rows in chunks of 128 (matmuls included), forward + backward",
         lambda: torch.autograd.grad(ChunkedCrossEntropy.apply(hidden, weight, targets, 128, True), hidden)),
        ("gpt2 training step (bench.bench, loss on all tokens, no MLP)",
         lambda: run("ours", net, opt, setting, data, FULL["new"])),
    ]


def switched(fn, on: bool):
    def call():
        kernels.ENABLED = on
        fn()
    return call


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-write", action="store_true", help="print the table, leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    enabled = kernels.ENABLED
    if not enabled:
        raise SystemExit("the kernels are off (MINIGPT_COMPILE=0)")
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16, "
             f"{time.strftime('%Y-%m-%d %H:%M')}; command: `python -m bench.kernels`", "",
             "| what | eager ms | with the kernels ms | speed-up |", "|---|---|---|---|"]
    try:
        for label, fn in cases():
            ms = median_ms(dict(eager=switched(fn, False), kernels=switched(fn, True)))
            lines.append(f"| {label} | {ms['eager']:.2f} | {ms['kernels']:.2f} | **{ms['eager'] / ms['kernels']:.2f}×** |")
    finally:
        kernels.ENABLED = enabled
    if kernels._broken:
        raise SystemExit("compiling the kernels failed here: nothing to compare")
    publish("KERNELS", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
