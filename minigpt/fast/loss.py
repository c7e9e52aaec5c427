"""The loss without the logits: cross-entropy of `hidden @ weight.T` a chunk of rows at a time.

The core's `GPT.loss` forms the (N, vocab) logits and calls `F.cross_entropy`. Here the logits of one
chunk exist at a time and the gradient (softmax minus one-hot, times the weight) is computed on the way,
so the backward only scales it: less memory, and on CPU less time, because the 50,257-way output layer is
most of a small model's step (bench/RESULTS.md). `fast.enable(model)` makes `GPT.loss` use it.
"""
from __future__ import annotations

import torch

from . import kernels
from .linear import linear, matmul


class ChunkedCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of the logits `hidden @ weight.T` against `targets`, computed `chunk` rows at
    a time: the (N, vocab) logits never exist whole. The gradient (softmax minus one-hot, times weight)
    is computed on the way when autograd will need it; backward only scales it."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, grad_enabled: bool):
        need_h, need_w = (grad_enabled and n for n in ctx.needs_input_grad[:2])
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        total = hidden.new_zeros((), dtype=torch.float32)
        # Every chunk reuses the same (chunk, V) buffers: a fresh allocation of this size is new memory
        # each time, and on CPU first touching new memory costs as much as the arithmetic.
        bufs: dict[str, torch.Tensor] = {}
        want = need_h or need_w

        def buf(name: str, dtype: torch.dtype, n: int) -> torch.Tensor:  # n rows of the named buffer
            if name not in bufs:
                bufs[name] = hidden.new_empty((min(chunk, hidden.shape[0]), weight.shape[0]), dtype=dtype)
            return bufs[name][:n]

        for i in range(0, hidden.shape[0], chunk):
            h, t = hidden[i:i + chunk], targets[i:i + chunk]  # (n, C), (n,)
            n = len(t)
            logits = linear(h, weight)  # (n, V); bf16 with a bf16 model or under autocast
            loss = None
            if want and kernels.applies(logits):  # CPU training: one fused pass (fast/kernels.py)
                g = buf("grad", logits.dtype, n)
                loss = kernels.cross_entropy(logits, t, g)
            if loss is None:  # elsewhere: eager, in fp32
                loss, g = ChunkedCrossEntropy.eager(logits, t, want, buf)
            del logits  # freed before the next chunk's are made, so that they reuse its memory
            total += loss.sum()
            if need_h:
                grad_h[i:i + chunk] = matmul(g, weight)
            if need_w:
                grad_w += g.t() @ h
        ctx.save_for_backward(grad_h, grad_w)
        return total

    @staticmethod
    def eager(logits, t, derivative: bool, buf) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-row losses (n,) of one chunk and, if `derivative`, d loss / d logits in the logits' dtype."""
        n, low = len(t), logits.dtype
        if low != torch.float32:  # the softmax runs in fp32
            logits = buf("fp32 logits", torch.float32, n).copy_(logits)
        logp = torch.log_softmax(logits, -1, out=buf("logp", torch.float32, n))  # (n, V)
        loss = -logp.gather(1, t[:, None]).squeeze(1)
        if not derivative:
            return loss, None
        g = logp.exp_()  # softmax, in place: (n, V)
        g[torch.arange(n, device=t.device), t] -= 1  # d loss / d logits
        return loss, g if low == torch.float32 else buf("grad", low, n).copy_(g)

    @staticmethod
    def backward(ctx, grad):
        grad_h, grad_w = ctx.saved_tensors
        return (None if grad_h is None else grad_h * grad.to(grad_h.dtype),
                None if grad_w is None else grad_w * grad.to(grad_w.dtype), None, None, None)


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          reduction: str = "mean", chunk: int = 128) -> torch.Tensor:
    """`F.cross_entropy((hidden @ weight.T).float(), targets, reduction=reduction)`, `chunk` rows at a time;
    hidden (N, C), weight (vocab, C), targets (N,)."""
    total = ChunkedCrossEntropy.apply(hidden, weight, targets, chunk, torch.is_grad_enabled())
    return total / targets.shape[0] if reduction == "mean" else total
