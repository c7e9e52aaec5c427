"""The fused CPU training kernels (minigpt/fast/kernels.py) against the eager PyTorch they replace, at gpt2's
shapes in bf16, and a whole gpt2 bf16 training step with the kernels off and on; then that step three
ways: plain eager PyTorch, the transformer body under `torch.compile`, and ours. Writes two tables into
bench/RESULTS.md (between the KERNELS markers).

    python -m bench.kernels              # about a minute (plus compiling, on a machine's first run)
    python -m bench.kernels --no-write   # print the tables only

Each kernel row is the forward and backward of one layer's tensor (what a training step runs); the loss
row is the whole chunked loss of a batch, its matmuls included; the step row is bench.bench's gpt2 bf16
training step. The two settings alternate in one process (`fast.switches(compiled_kernels=...)` off and on);
medians of 7. In the second table the three forms of the step alternate the same way; the two
PyTorch-only forms run with both of our CPU fast paths off (`fast.switches(onednn=False,
compiled_kernels=False)`), so that their matmuls are PyTorch's own (MKL) and their elementwise work is
eager or inductor's, and the compiled form compiles `PrefixTuner.hidden_states` (default mode, static
shapes) with the loss outside it, as in the others. A last row replays the matmuls of one of ours'
steps alone (recorded with a TorchDispatchMode: the same ops on the same operands in the same order),
the time a step would take if everything else in it were free.
"""
from __future__ import annotations

import argparse
import functools
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.bench import FULL, batch, build, run
from bench.linear import C, V, median_ms, publish
from minigpt import fast
from minigpt.attention import causal_mask
from minigpt.fast import kernels
from minigpt.fast.loss import ChunkedCrossEntropy

BF16 = torch.bfloat16
B, T, H, P = FULL["batch"], FULL["seq"], 12, 10  # batch 8 x 128 tokens, 12 heads, prefix length 10


def backward_of(fn, x: torch.Tensor, grad: torch.Tensor):
    """A callable running fn(x) and its backward, as a training step does."""
    return lambda: torch.autograd.grad(fn(x), x, grad)


SETTING = dict(part="train", model="gpt2", precision="bf16", projection=False, loss="all")


@functools.cache
def gpt2_step() -> tuple:
    """(net, optimizer, (ids, labels)) of bench.bench's gpt2 bf16 training step (loss on all tokens, no
    MLP), built once for both tables."""
    return *build("ours", SETTING, "cpu"), batch(SETTING, FULL, "cpu")


def cases() -> list[tuple[str, callable]]:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(B, T, 4 * C, generator=g).to(BF16).requires_grad_()  # one MLP's pre-activation
    scores = (4 * torch.randn(B, H, T, P + T, generator=g)).to(BF16).requires_grad_()
    bias = torch.zeros(T, P + T).masked_fill(~causal_mask(T, P + T), float("-inf")).view(1, 1, T, P + T)
    hidden = torch.randn(B * (T - 1), C, generator=g).to(BF16).requires_grad_()
    weight = (0.02 * torch.randn(V, C, generator=g)).to(BF16)  # the tied output layer
    targets = torch.randint(0, V, (B * (T - 1),), generator=g)
    net, opt, data = gpt2_step()
    return [
        (f"GELU, {B} x {T} x {4 * C}, forward + backward",
         backward_of(kernels.gelu, h, torch.randn_like(h))),
        (f"attention softmax, {B} x {H} x {T} x {P + T}, forward + backward",
         backward_of(lambda s: kernels.softmax(s, bias, 0.125), scores, torch.randn_like(scores))),
        (f"loss, {B * (T - 1)} rows in chunks of 128 (matmuls included), forward + backward",
         lambda: torch.autograd.grad(ChunkedCrossEntropy.apply(hidden, weight, targets, 128, True), hidden)),
        ("gpt2 training step (bench.bench, loss on all tokens, no MLP)",
         lambda: run("ours", net, opt, SETTING, data, FULL["new"])),
    ]


def switched(fn, on: bool):
    def call():
        with fast.switches(compiled_kernels=on):
            fn()
    return call


def step_forms() -> tuple[list[tuple[str, callable]], callable]:
    """bench.bench's gpt2 bf16 training step (loss on all tokens, no MLP) in three forms (module doc),
    and ours with the kernels off, whose matmuls are ours' (the kernels have none) and which, unlike a
    compiled call, runs under a TorchDispatchMode."""
    net, opt, (ids, labels) = gpt2_step()
    compiled = torch.compile(net.hidden_states, dynamic=False)

    def form(body, linear_on: bool, kernels_on: bool):
        def step():
            with fast.switches(onednn=linear_on, compiled_kernels=kernels_on):
                loss = net.model.target_loss(body(ids), labels)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    return ([("PyTorch eager (MKL matmuls, eager elementwise)", form(net.hidden_states, False, False)),
             ("transformer body under torch.compile (MKL matmuls, inductor's fusion)", form(compiled, False, False)),
             ("ours (oneDNN packed matmuls, the fused kernels)", form(net.hidden_states, True, True))],
            form(net.hidden_states, True, False))


MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.bmm.default, torch.ops.aten.addmm.default,
           torch.ops.aten.baddbmm.default, torch.ops.mkldnn._linear_pointwise.default}


class _Matmuls(TorchDispatchMode):
    """Records the matmul calls made under it: (op, operands, keyword arguments), in order."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMULS:  # detached: replayed with autograd watching, oneDNN's op takes a slow path
            self.calls.append((func, [a.detach() if isinstance(a, torch.Tensor) else a for a in args], kwargs))
        return func(*args, **kwargs)


def matmuls_alone(step) -> tuple[int, float]:
    """(number of matmul calls, median ms of replaying them): the matmuls one call of `step` makes, each
    op called again on the same operands in the same order, nothing else (a floor for the step)."""
    with _Matmuls() as recorded:
        step()

    def replay():
        for func, args, kwargs in recorded.calls:
            func(*args, **kwargs)
    return len(recorded.calls), median_ms(dict(replay=replay))["replay"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-write", action="store_true", help="print the table, leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    if not (kernels.ENABLED and fast.linear.ENABLED):
        raise SystemExit("a CPU fast path is off (MINIGPT_COMPILE=0 or MINIGPT_ONEDNN=0): nothing to compare")
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16, "
             f"{time.strftime('%Y-%m-%d %H:%M')}; command: `python -m bench.kernels`", "",
             "| what | eager ms | with the kernels ms | speed-up |", "|---|---|---|---|"]
    for label, fn in cases():
        ms = median_ms(dict(eager=switched(fn, False), kernels=switched(fn, True)))
        lines.append(f"| {label} | {ms['eager']:.2f} | {ms['kernels']:.2f} | **{ms['eager'] / ms['kernels']:.2f}×** |")
    forms, ours_eager = step_forms()
    ms = median_ms(dict(forms))
    base = ms[forms[0][0]]
    lines += ["", "| gpt2 bf16 training step, loss on all tokens | ms | speed-up over eager |", "|---|---|---|"]
    lines += [f"| {label} | {ms[label]:.1f} | **{base / ms[label]:.2f}×** |" for label, _ in forms]
    n, floor = matmuls_alone(ours_eager)
    lines.append(f"| ours' matmuls alone ({n} calls replayed: {100 * floor / ms[forms[-1][0]]:.0f}% of ours' "
                 f"step) | {floor:.1f} | **{base / floor:.2f}×** |")
    if kernels._broken:
        raise SystemExit("compiling the kernels failed here: nothing to compare")
    publish("KERNELS", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
