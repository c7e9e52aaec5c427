"""The fused CPU training kernels (minigpt/kernels.py) against the eager PyTorch they replace, at gpt2's
shapes in bf16, and a whole gpt2 bf16 training step with the kernels off and on; then that step three
ways: plain eager PyTorch, the transformer body under `torch.compile`, and ours. Writes two tables into
bench/RESULTS.md (between the KERNELS markers).

    python -m bench.kernels              # about a minute (plus compiling, on a machine's first run)
    python -m bench.kernels --no-write   # print the tables only

Each kernel row is the forward and backward of one layer's tensor (what a training step runs); the loss
row is the whole chunked loss of a batch, its matmuls included; the step row is bench.bench's gpt2 bf16
training step. The two settings alternate in one process (`minigpt.kernels.ENABLED` off and on);
medians of 7. In the second table the three forms of the step alternate the same way; the two
PyTorch-only forms run with both of our CPU fast paths off (`minigpt.linear.ENABLED`,
`minigpt.kernels.ENABLED`), so that their matmuls are PyTorch's own (MKL) and their elementwise work is
eager or inductor's, and the compiled form compiles `PrefixTuner.hidden_states` (default mode, static
shapes) with the loss outside it, as in the others.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.bench import FULL, batch, build, run
from bench.linear import C, V, median_ms, publish
from experiments.train import target_loss
import minigpt.linear as fast_linear
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


def step_forms() -> list[tuple[str, callable]]:
    """bench.bench's gpt2 bf16 training step (loss on all tokens, no MLP) in three forms (module doc)."""
    setting = dict(part="train", model="gpt2", precision="bf16", projection=False, loss="all")
    net, opt = build("ours", setting, "cpu")
    ids, labels = batch(setting, FULL, "cpu")
    compiled = torch.compile(net.hidden_states, dynamic=False)

    def form(body, ours: bool):
        def step():
            fast_linear.ENABLED = kernels.ENABLED = ours
            loss = target_loss(net.model, body(ids), labels, reduction="mean")
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    return [("PyTorch eager (MKL matmuls, eager elementwise)", form(net.hidden_states, False)),
            ("transformer body under torch.compile (MKL matmuls, inductor's fusion)", form(compiled, False)),
            ("ours (oneDNN packed matmuls, the fused kernels)", form(net.hidden_states, True))]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-write", action="store_true", help="print the table, leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    enabled, linear_enabled = kernels.ENABLED, fast_linear.ENABLED
    if not (enabled and linear_enabled):
        raise SystemExit("a CPU fast path is off (MINIGPT_COMPILE=0 or MINIGPT_ONEDNN=0): nothing to compare")
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16, "
             f"{time.strftime('%Y-%m-%d %H:%M')}; command: `python -m bench.kernels`", "",
             "| what | eager ms | with the kernels ms | speed-up |", "|---|---|---|---|"]
    try:
        for label, fn in cases():
            ms = median_ms(dict(eager=switched(fn, False), kernels=switched(fn, True)))
            lines.append(f"| {label} | {ms['eager']:.2f} | {ms['kernels']:.2f} | **{ms['eager'] / ms['kernels']:.2f}×** |")
        forms = step_forms()
        ms = median_ms(dict(forms))
        base = ms[forms[0][0]]
        lines += ["", "| gpt2 bf16 training step, loss on all tokens | ms | speed-up over eager |", "|---|---|---|"]
        lines += [f"| {label} | {ms[label]:.1f} | **{base / ms[label]:.2f}×** |" for label, _ in forms]
    finally:
        kernels.ENABLED, fast_linear.ENABLED = enabled, linear_enabled
    if kernels._broken:
        raise SystemExit("compiling the kernels failed here: nothing to compare")
    publish("KERNELS", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
