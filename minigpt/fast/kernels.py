"""Fused CPU kernels for the elementwise parts of a training step, generated once by `torch.compile`.

On CPU the matmuls of a step already run at about the machine's peak (fast/linear.py). What remains
is elementwise work, which eager PyTorch does one operation (one pass over memory) at a time, and some
of it slowly: GPT-2's tanh GELU costs several times the exact one, because `tanh` is slow. Each kernel is one
function that inductor (`torch.compile`'s compiler) turns into one loop nest:

- `gelu(h)`: GPT-2's GELU, 0.5·h·(1 + tanh u) with u = sqrt(2/π)(h + 0.044715h³), computed as the equal
  h·sigmoid(2u) (exp is fast where tanh is not). The same pass writes the derivative, so the backward
  is one multiply and the pre-activation `h` need not be kept.
- `softmax(scores, bias, scale)`: attention's scaling, mask and softmax in one pass; its backward in
  one pass too.
- `cross_entropy(logits, targets, grad_out)`: one chunk of the loss: each row's loss (fp32) and
  d loss / d logits (softmax minus one-hot), written into a buffer that the chunks share (fresh memory
  of that size costs page faults).

All arithmetic is fp32, rounded once to the input dtype at the end. The kernels run when: CPU; fp32 or
bf16; a gradient is wanted (inference stays eager: generating text never waits for a compiler); large
enough to pay for the call (a compiled call costs ~20 us); not inside a model that is itself being
compiled (there inductor fuses the plain operations); the environment variable `MINIGPT_COMPILE` is not
`0`; and compiling works (inductor needs a C++ compiler: if compiling fails, a warning says so once and
eager PyTorch runs from then on). Compiled kernels are cached on disk by PyTorch, so only a
machine's first run pays the compile time (seconds). tests/test_kernels.py checks each kernel against
fp64; bench/RESULTS.md has the speed.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

ENABLED = os.environ.get("MINIGPT_COMPILE", "1") != "0"
MIN_NUMEL = 1 << 15  # smaller tensors run eagerly: a compiled call costs ~20 us
_C = 2 * math.sqrt(2 / math.pi)  # sigmoid(_C * (h + 0.044715 h^3)) = (1 + tanh(u)) / 2
_COMPILED: dict[Callable, Callable] = {}
_broken = False  # set when compiling failed: eager from then on


def applies(x: torch.Tensor) -> bool:
    """Whether a kernel runs for input `x` (see the module docstring)."""
    return (ENABLED and not _broken and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
            and x.numel() >= MIN_NUMEL
            and not torch.compiler.is_compiling())


def _run(fn: Callable, *args):
    """The compiled `fn` on `args`, or None if compiling fails (then kernels are off, with one warning)
    or failed before."""
    global _broken
    if _broken:
        return None
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
    try:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):  # one global state: fewer recompiles
            return _COMPILED[fn](*args)
    except torch._dynamo.exc.FailOnRecompileLimitHit:
        return None  # a rare mix of dtypes and shapes beyond those compiled: eager for this call
    except Exception as e:  # no compiler, an unsupported platform, ...: the caller runs the eager form
        _broken = True
        warnings.warn(f"minigpt: compiling the fused CPU kernels failed ({type(e).__name__}: {e}); running "
                      "eager PyTorch instead (slower). Set MINIGPT_COMPILE=0 to skip the attempt.", stacklevel=3)
        return None


# ---------------------------------------------------------------- GELU

def _gelu(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = h.float()
    s = torch.sigmoid(_C * (x + 0.044715 * x * x * x))
    d = s + x * s * (1 - s) * _C * (1 + 3 * 0.044715 * x * x)  # d y / d h
    return (x * s).to(h.dtype), d.to(h.dtype)


class _Gelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h):
        out = _run(_gelu, h)
        ctx.compiled = out is not None
        if not ctx.compiled:  # compiling failed: aten's GELU, whose backward needs h
            ctx.save_for_backward(h)
            return F.gelu(h, approximate="tanh")
        ctx.save_for_backward(out[1])  # the derivative
        return out[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (saved,) = ctx.saved_tensors
        if not ctx.compiled:
            return torch.ops.aten.gelu_backward(grad, saved, approximate="tanh")
        return grad * saved


def gelu(h: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU (the tanh form), `F.gelu(h, approximate="tanh")`."""
    if torch.is_grad_enabled() and h.requires_grad and applies(h):
        return _Gelu.apply(h.reshape(-1)).view(h.shape)  # flat: one shape for the compiler, whatever h's
    return F.gelu(h, approximate="tanh")


# ---------------------------------------------------------------- attention softmax

def _softmax(scores: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    x = scores.float() * scale
    if bias is not None:
        x = x + bias
    return torch.softmax(x, -1).to(scores.dtype)


def _softmax_backward(grad: torch.Tensor, p: torch.Tensor, scale: float) -> torch.Tensor:
    g, pf = grad.float(), p.float()
    return (pf * (g - (g * pf).sum(-1, keepdim=True)) * scale).to(grad.dtype)


def _eager_softmax(scores: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    x = scores * scale
    return (x if bias is None else x + bias.to(x.dtype)).softmax(-1)


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, bias, scale):
        p = _run(_softmax, scores, bias, scale)
        if p is None:
            p = _eager_softmax(scores, bias, scale)
        ctx.save_for_backward(p)
        ctx.scale = scale
        return p

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (p,) = ctx.saved_tensors
        out = _run(_softmax_backward, grad, p, ctx.scale)
        if out is None:
            out = torch._softmax_backward_data(grad, p, -1, p.dtype) * ctx.scale
        return out, None, None


def softmax(scores: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Attention weights `softmax(scores * scale + bias)` over the last dim. scores (B, H, Tq, Tk); bias
    (0 = may attend, -inf = masked) (B or 1, 1, Tq, Tk), or None. Every row must keep a key.
    (An additive mask, not a boolean one: the compiled kernel is faster with it.)"""
    if torch.is_grad_enabled() and scores.requires_grad and applies(scores):
        return _Softmax.apply(scores, bias, scale)
    return _eager_softmax(scores, bias, scale)


# ---------------------------------------------------------------- cross-entropy

def _log_sum_exp(x: torch.Tensor) -> torch.Tensor:  # (n, V) fp32 -> (n, 1)
    m = x.amax(-1, keepdim=True)
    return m + torch.exp(x - m).sum(-1, keepdim=True).log()


def _cross_entropy_and_gradient(logits: torch.Tensor, targets: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    x = logits.float()
    lse = _log_sum_exp(x)  # (n, 1)
    # exp recomputed rather than kept from the sum: a (n, V) fp32 temporary costs more than the exp
    p = torch.exp(x - lse)  # (n, V) softmax
    hot = torch.arange(x.shape[-1], device=x.device, dtype=torch.int32) == targets.int()[:, None]  # (n, V)
    grad_out.copy_(torch.where(hot, p - 1, p))
    return (lse - x.gather(1, targets[:, None])).squeeze(-1)  # (n,)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor | None:
    """Per-row cross-entropy (n,), in fp32, of logits (n, V) against targets (n,) in [0, V), and its
    gradient with respect to the logits (softmax minus one-hot), written into `grad_out` (n, V). None
    where the kernel does not run: the caller's eager code does the work."""
    return _run(_cross_entropy_and_gradient, logits, targets, grad_out) if applies(logits) else None
