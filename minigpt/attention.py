"""Causal self-attention that natively takes prefix keys/values, and the KV cache used for decoding.

A prefix is data, not a patch: each layer may receive `(prefix_k, prefix_v)` shaped
`(B or 1, n_head, P, head_dim)`. Keys are laid out as `[prefix; cache; current]`. Every query sees all
P prefix positions and, causally, the real tokens: with Tk keys and Tq queries the causal mask is
aligned to the bottom-right, so query i sees keys j <= i + (Tk - Tq).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import GPTConfig

PrefixKV = tuple[torch.Tensor, torch.Tensor]


def causal_mask(tq: int, tk: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (tq, tk) mask, True = may attend; the causal diagonal is aligned bottom-right."""
    q = torch.arange(tq, device=device)[:, None]
    k = torch.arange(tk, device=device)[None, :]
    return k <= q + (tk - tq)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
           dropout_p: float = 0.0) -> torch.Tensor:
    """Causal attention for q (B, H, Tq, Dh), k and v (B, H, Tk, Dh), Tk >= Tq; returns (B, H, Tq, Dh).

    Query i sees keys j <= i + (Tk - Tq): the diagonal sits bottom-right, behind the prefix and past keys.
    `mask` (bool, True = may attend), if given, replaces that rule (padded batches).
    """
    tq, tk = q.shape[2], k.shape[2]
    if mask is None and 1 < tq < tk:
        mask = causal_mask(tq, tk, q.device)  # (Tq, Tk)
    causal = False
    if mask is None and tq > 1:  # a branch, not an expression: a plain bool where lengths are symbolic (compiling)
        causal = True
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout_p)


class KVCache:
    """Preallocated per-layer key/value buffers for decoding, filled in place (no per-step reallocation).

    A layer's prefix (if any) is written once into the first slots of its buffer, so decoding steps
    attend to `[prefix; past; new]` without concatenation. Layers may hold prefixes of different lengths.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_tokens: int, *,
                 prefix: list[PrefixKV | None] | None = None, dtype=None, device=None):
        H, D = config.n_head, config.head_dim
        prefix = prefix if prefix is not None else [None] * config.n_layer
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.fill: list[int] = []  # filled slots per layer
        self.prefix_len: list[int] = []
        for kv in prefix:
            P = 0 if kv is None else kv[0].shape[2]
            k = torch.empty(batch_size, H, P + max_tokens, D, dtype=dtype, device=device)  # (B, H, P+T, Dh)
            v = torch.empty_like(k)
            if kv is not None:
                k[:, :, :P] = kv[0]
                v[:, :, :P] = kv[1]
            self.k.append(k)
            self.v.append(v)
            self.fill.append(P)
            self.prefix_len.append(P)

    visible = None  # (a static cache's mask of the slots a layer sees: minigpt.fast.decode.StaticCache)

    @property
    def tokens(self) -> int:
        """Number of real tokens held (same for every layer)."""
        return self.fill[0] - self.prefix_len[0]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's (B, H, T, Dh) keys/values; return all keys/values of the layer so far."""
        start, end = self.fill[layer], self.fill[layer] + k.shape[2]
        if end > self.k[layer].shape[2]:
            size = self.k[layer].shape[2] - self.prefix_len[layer]
            raise ValueError(f"KV cache is full: it was sized for {size} tokens")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        self.fill[layer] = end
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search): row b of the cache becomes old row index[b].

        In place: only the rows that change are copied, and only their filled slots.
        """
        if index.shape[0] != self.k[0].shape[0]:  # the number of rows changes (beams start): new buffers
            self.k = [k.index_select(0, index) for k in self.k]
            self.v = [v.index_select(0, index) for v in self.v]
            return
        moved = (index != torch.arange(index.shape[0], device=index.device)).nonzero().squeeze(1)  # (M,)
        if moved.numel() == 0:
            return
        src = index[moved]
        for i, n in enumerate(self.fill):
            self.k[i][moved, :, :n] = self.k[i][src, :, :n]  # the right side is a copy: no aliasing
            self.v[i][moved, :, :n] = self.v[i][src, :, :n]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, GPT-2 layout (`c_attn` = fused QKV, `c_proj` = output)."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.n_head = config.n_head
        self.layer_idx = layer_idx
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout
        self.attend = attend  # the attention function (`fast.enable` swaps in its own)

    def forward(self, x: torch.Tensor, *, prefix: PrefixKV | None = None,
                key_padding: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """x: (B, T, C). key_padding: (B, Tk_real) bool, True = real token, over past + current tokens.

        Returns (B, T, C).
        """
        q, k, v = rearrange(self.c_attn(x), "b t (three h d) -> three b h t d", three=3, h=self.n_head)
        if cache is not None:
            k, v = cache.append(self.layer_idx, k, v)  # prefix already sits in the cache's first slots
            n_prefix = cache.prefix_len[self.layer_idx]
            if cache.visible is not None:  # a static cache says which of its slots each layer's queries see
                return self.c_proj(rearrange(self.attend(q, k, v, cache.visible(self.layer_idx)),
                                             "b h t d -> b t (h d)"))
        elif prefix is not None:
            pk, pv = prefix
            B = q.shape[0]
            # (1 or B, H, P, Dh) -> (B, H, P + T, Dh); an expand is a view, the cat is the only copy
            k = torch.cat([pk.to(k.dtype).expand(B, -1, -1, -1), k], dim=2)
            v = torch.cat([pv.to(v.dtype).expand(B, -1, -1, -1), v], dim=2)
            n_prefix = pk.shape[2]
        else:
            n_prefix = 0

        mask = None
        if key_padding is not None:
            tq, tk = q.shape[2], k.shape[2]
            keys = torch.cat([key_padding.new_ones(key_padding.shape[0], n_prefix), key_padding], dim=1)  # (B, Tk)
            mask = causal_mask(tq, tk, q.device)[None] & keys[:, None, :]  # (B, Tq, Tk)
            mask = mask | ~mask.any(-1, keepdim=True)  # a padding query with no key: let it see all (ignored)
            mask = mask[:, None]  # (B, 1, Tq, Tk)
        y = self.attend(q, k, v, mask, dropout_p=self.dropout if self.training else 0.0)
        return self.c_proj(rearrange(y, "b h t d -> b t (h d)"))
