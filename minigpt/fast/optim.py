"""AdamW on PyTorch's fused kernel wherever that kernel runs."""
from __future__ import annotations

from collections.abc import Iterable

import torch


def fusable(params: Iterable[torch.Tensor]) -> bool:
    """Whether `torch.optim.AdamW(..., fused=True)` takes these parameters: floating point, on CPU or CUDA."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """`torch.optim.AdamW(params, **kwargs)`, fused when `fusable`; `params` as AdamW takes them (tensors or
    parameter groups).

    The same update up to rounding, in one pass over each parameter instead of about ten
    (bench/RESULTS.md). transformers' `Trainer` makes the same choice by default (`adamw_torch_fused`).
    """
    params = list(params)
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    kwargs.setdefault("fused", fusable(tensors))
    return torch.optim.AdamW(params, **kwargs)
