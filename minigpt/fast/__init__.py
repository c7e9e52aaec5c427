"""The speed layer: the same model, computed faster on CPU, switched on by one call.

    from minigpt import GPT, fast
    model = fast.enable(GPT.from_pretrained("gpt2"))   # same weights, same outputs up to rounding

The core (`minigpt/model.py`, `minigpt/attention.py`) is plain PyTorch: `nn.Linear`, `F.gelu`,
`F.scaled_dot_product_attention`, `F.cross_entropy`. `enable(model)` swaps in, module by module:

- `linear.FastLinear` for every `nn.Linear`: frozen weights run on oneDNN, bf16 weights packed once
  (`linear.py`); weights that train keep `F.linear`.
- `kernels.gelu` for each MLP's activation and `attention.attend` for each attention layer: fused
  CPU kernels that `torch.compile` generates once (`kernels.py`, `attention.py`).
- `loss.chunked_cross_entropy` for `GPT.loss`: the logits a chunk at a time, never all at once (`loss.py`).

Each falls back to the plain computation wherever it does not apply (GPU, autocast, small tensors, no C++
compiler), so enabling is always safe; `disable(model)` puts the plain parts back. Two more pieces serve
training commands: `optim.adamw` (PyTorch's fused AdamW) and `allocator.keep_freed_memory` (glibc keeps
freed memory for the next step). `switches(...)` turns the oneDNN path or the kernels off for a block
(benchmarks, tests); the environment variables MINIGPT_ONEDNN=0 and MINIGPT_COMPILE=0 do so for a process.
What each piece gains, measured: bench/RESULTS.md.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from . import attention, kernels, linear, loss
from .. import model as core
from ..attention import CausalSelfAttention
from ..attention import attend as plain_attend


def enable(model: nn.Module) -> nn.Module:
    """Swap the fast parts into `model` (a GPT, or anything holding one, e.g. a PrefixTuner); returns it."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = linear.FastLinear  # same parameters (and tying), another forward
        elif isinstance(module, core.MLP):
            module.act = kernels.gelu
        elif isinstance(module, CausalSelfAttention):
            module.attend = attention.attend
        elif isinstance(module, core.GPT):
            module.cross_entropy = loss.chunked_cross_entropy
    return model


def disable(model: nn.Module) -> nn.Module:
    """Put the plain parts back into `model`; returns it."""
    for module in model.modules():
        if type(module) is linear.FastLinear:
            module.__class__ = nn.Linear
        elif isinstance(module, core.MLP):
            module.act = core.gelu
        elif isinstance(module, CausalSelfAttention):
            module.attend = plain_attend
        elif isinstance(module, core.GPT):
            module.cross_entropy = core.cross_entropy
    return model


def enabled(model: nn.Module) -> bool:
    """Whether `enable` has been applied to `model`."""
    return any(isinstance(m, core.GPT) and m.cross_entropy is loss.chunked_cross_entropy for m in model.modules())


@contextmanager
def switches(*, onednn: bool | None = None, compiled_kernels: bool | None = None) -> Iterator[None]:
    """Within the block, the oneDNN linear path and/or the compiled kernels are on or off (None: unchanged),
    for every enabled model; the previous settings come back after."""
    before = linear.ENABLED, kernels.ENABLED
    try:
        if onednn is not None:
            linear.ENABLED = onednn
        if compiled_kernels is not None:
            kernels.ENABLED = compiled_kernels
        yield
    finally:
        linear.ENABLED, kernels.ENABLED = before
