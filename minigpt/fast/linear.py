"""`FastLinear`: `nn.Linear` with a CPU fast path for frozen weights (the whole base model in prefix-tuning).

On CPU, `F.linear` runs on MKL, which on some processors (AMD among them) reaches well under half of the
fp32 matmul throughput that oneDNN, PyTorch's other CPU matmul library, gets from the same cores, and
which re-reads a bf16 weight in a layout that is slow to stream when only a few rows go through (decoding).
A frozen weight never changes, so here it goes to oneDNN, in bf16 packed once into oneDNN's blocked layout
and reused (what `torch.compile` does for frozen weights). bench/RESULTS.md has the measurements.
The arithmetic is an ordinary fp32 or bf16 matmul (fp32 accumulation); only the summation order differs.

The fast path is taken when: CPU; weight and bias frozen (`requires_grad=False`); input and weight both
fp32 or both bf16; autocast off; oneDNN present; and the environment variable `MINIGPT_ONEDNN` is not
`0`. Otherwise, and for weights that train, it is `F.linear`. Gradients flow to the input. Packed copies
cost memory (one per bf16 weight for the forward, a second once a backward has run) and are made only where
they pay.

A packed weight is remembered per weight tensor, with its storage address and version counter, so an
in-place change (`with torch.no_grad(): w.copy_(...)`, an optimizer step, `load_state_dict`) repacks it.
A change made through `weight.data` bypasses the version counter: after one, call `clear_packed()`.
"""
from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.weak import WeakIdKeyDictionary

ENABLED = os.environ.get("MINIGPT_ONEDNN", "1") != "0"
_PACKED: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> {transposed: (address, version, packed)}


@functools.cache
def _onednn(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build can run a linear layer of this dtype on oneDNN."""
    try:
        ops = torch.ops.mkldnn
        ok = torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
        if dtype == torch.bfloat16:
            ok = ok and hasattr(ops, "_reorder_linear_weight") and ops._is_mkldnn_bf16_supported()
        return bool(ok)
    except (AttributeError, RuntimeError):
        return False


def applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Whether `linear(x, weight, bias)` takes the oneDNN path (see the module docstring); never inside a
    model being compiled (there the compiler chooses the matmul)."""
    return (ENABLED and not torch.compiler.is_compiling() and not weight.requires_grad and x.device.type == "cpu" and weight.device.type == "cpu"
            and x.dtype == weight.dtype and x.dtype in (torch.float32, torch.bfloat16) and x.dim() >= 2
            and (bias is None or (bias.dtype == x.dtype and not bias.requires_grad))
            and not torch.is_autocast_enabled("cpu")
            and _onednn(x.dtype))


def clear_packed() -> None:
    """Forget every packed weight (needed only after editing a frozen weight through `.data`)."""
    _PACKED.clear()


def _weight(weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    """The oneDNN weight operand for `x @ weight.T` (or `x @ weight` if transposed): in bf16, packed once
    into oneDNN's blocked layout and remembered; in fp32, the dense tensor itself."""
    w = weight.t() if transposed else weight  # (out, in) as oneDNN expects
    if weight.dtype != torch.bfloat16:
        return w
    key = (weight.data_ptr(), weight._version)
    slot = _PACKED.setdefault(weight, {})
    if transposed not in slot or slot[transposed][:2] != key:
        with torch.no_grad():
            slot[transposed] = (*key, torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), 64))
    return slot[transposed][2]


def _mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, _weight(weight, transposed), bias, "none", [], "")


class _FrozenLinear(torch.autograd.Function):
    """x @ weight.T + bias on oneDNN; the gradient goes to x only (weight and bias are frozen)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        return _mm(x, weight, bias, transposed=False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return matmul(grad, weight), None, None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`: x (..., in), weight (out, in) -> (..., out); oneDNN when `applies`, with
    a bf16 weight packed (bench/RESULTS.md)."""
    if not applies(x, weight, bias):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and x.requires_grad:
        return _FrozenLinear.apply(x, weight, bias)
    return _mm(x, weight, bias, transposed=False)  # no graph to record (decoding): skip autograd


def matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x @ weight`: x (..., out), weight (out, in) -> (..., in), the product that carries a linear
    layer's gradient to its input; oneDNN when `applies`, a bf16 weight packed for this product too (a
    second packed copy, made on the first backward; bench/RESULTS.md). Meant for use inside a backward; an
    input that autograd tracks gets the plain, differentiable product (oneDNN's op has no derivative, and
    called with autograd watching it is also much slower)."""
    if applies(x, weight) and not (torch.is_grad_enabled() and x.requires_grad):
        return _mm(x, weight, None, transposed=True)
    return x @ weight


class FastLinear(nn.Linear):
    """`nn.Linear` (same parameters, same state dict) whose forward is `linear`: fast when frozen on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
