"""Solutions to course/exercises/attention.py (notebook 01)."""
from __future__ import annotations

import math

import torch


def causal_mask(tq: int, tk: int) -> torch.Tensor:
    q = torch.arange(tq)[:, None]  # (tq, 1)
    k = torch.arange(tk)[None, :]  # (1, tk)
    return k <= q + (tk - tq)


def attention_with_prefix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          prefix_k: torch.Tensor, prefix_v: torch.Tensor) -> torch.Tensor:
    keys = torch.cat([prefix_k, k], dim=2)  # (B, H, P + T, Dh)
    values = torch.cat([prefix_v, v], dim=2)
    scores = q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, P + T)
    scores = scores.masked_fill(~causal_mask(q.shape[2], keys.shape[2]), float("-inf"))
    return scores.softmax(-1) @ values  # (B, H, T, Dh)
