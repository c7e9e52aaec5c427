"""Attention for bf16 on CPU: two matmuls around one fused softmax pass.

In bf16 on CPU, PyTorch's fused `scaled_dot_product_attention` is slower than two matmuls at GPT-2 sizes
(bench/RESULTS.md). This `attend` computes `q @ k.T`, then scaling, mask and softmax in one fp32 pass
(`kernels.softmax`, rounded to bf16 once), then `@ v`, as transformers' eager attention does; in every
other case it is the core's `attend`. `fast.enable(model)` puts it into every attention layer.
"""
from __future__ import annotations

import torch

from .. import attention
from . import kernels


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
           dropout_p: float = 0.0) -> torch.Tensor:
    """`minigpt.attention.attend` (same arguments and result), with the bf16 CPU path above."""
    if not (q.device.type == "cpu" and q.dtype == torch.bfloat16 and dropout_p == 0.0):
        return attention.attend(q, k, v, mask, dropout_p=dropout_p)
    tq, tk = q.shape[2], k.shape[2]
    if mask is None and tq > 1:
        mask = attention.causal_mask(tq, tk, q.device)  # (Tq, Tk)
    scores = q @ k.transpose(-1, -2)  # (B, H, Tq, Tk)
    bias = None  # additive mask: 0 where a key may be seen, -inf elsewhere; (B or 1, 1, Tq, Tk)
    if mask is not None:
        bias = torch.zeros(mask.shape, device=q.device).masked_fill(~mask, float("-inf")).view(-1, 1, tq, tk)
    return kernels.softmax(scores, bias, q.shape[-1] ** -0.5) @ v
