"""GPT-2 decoder with Hugging Face parameter names, taking optional prefix keys/values per layer."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import checks
from .attention import CausalSelfAttention, KVCache, PrefixKV
from .config import GPTConfig
from .generate import generate
from .weights import load_pretrained, save_pretrained


IGNORE = -100  # a label that is not a target (as in transformers and PyTorch's cross_entropy)


@dataclass
class LMOutput:
    """What `model(input_ids, labels=...)` returns: `loss`, the mean next-token cross-entropy over the
    positions that have a target, and `logits` (B, T, vocab), only when asked for (`return_logits=True`)."""
    loss: torch.Tensor
    logits: torch.Tensor | None = None


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, the tanh approximation."""
    return F.gelu(x, approximate="tanh")


def cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                  reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the logits `hidden @ weight.T` (N, vocab), in fp32, against `targets` (N,)."""
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction=reduction)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.act = gelu  # (`fast.enable` swaps in a fused kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, *, prefix=None, key_padding=None, cache=None):
        x = x + self.drop(self.attn(self.ln_1(x), prefix=prefix, key_padding=key_padding, cache=cache))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    """GPT-2 language model.

    `prefix` (optional) has one entry per layer: `None`, or `(key, value)` each shaped
    `(B or 1, n_head, P, head_dim)`. Real tokens attend to every prefix position and causally to each
    other. By the convention of the reference code and PEFT, the prefix occupies positions: real tokens'
    position ids start at `position_offset`, which defaults to the longest prefix length P (0 without a
    prefix). Pass `position_offset=0` to give real tokens positions 0, 1, ... regardless of the prefix.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.n_positions, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        self.cross_entropy = cross_entropy  # the loss of `loss` (`fast.enable` swaps in a chunked one)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hidden_states(self, input_ids: torch.Tensor | None = None, *,
                      prefix: Sequence[PrefixKV | None] | None = None,
                      attention_mask: torch.Tensor | None = None, position_offset: int | None = None,
                      inputs_embeds: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """Final hidden states (after `ln_f`), (B, T, n_embd). Arguments as in `forward`."""
        checks.inputs(self.config, input_ids, inputs_embeds, prefix, cache)
        x = self.transformer.wte(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T = x.shape[:2]
        if cache is not None:  # decoding: the prefix (if any) sits in the cache's first slots
            n_prefix, past = max(cache.prefix_len), cache.tokens
        else:
            n_prefix, past = checks.prefix_length(self.config, prefix, B), 0
        offset = n_prefix if position_offset is None else position_offset
        checks.fits(self.config, offset, past + T, n_prefix)
        key_padding = None
        if attention_mask is not None:
            checks.attention_mask(attention_mask, (B, past + T))
            key_padding = attention_mask.bool()
            # left padding: a token's position counts only the real tokens before it
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:] + offset  # (B, T)
        else:
            pos = torch.arange(offset + past, offset + past + T, device=x.device)[None]  # (1, T)
        x = self.transformer.drop(x + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, prefix=None if prefix is None else prefix[i], key_padding=key_padding, cache=cache)
        return self.transformer.ln_f(x)

    def forward(self, input_ids: torch.Tensor | None = None, *,
                prefix: Sequence[PrefixKV | None] | None = None,
                attention_mask: torch.Tensor | None = None, position_offset: int | None = None,
                inputs_embeds: torch.Tensor | None = None, cache: KVCache | None = None,
                labels: torch.Tensor | None = None, return_logits: bool = False) -> torch.Tensor | LMOutput:
        """Next-token logits (B, T, vocab); with `labels`, an `LMOutput` with the loss.

        input_ids: (B, T) token ids (or `inputs_embeds`: (B, T, n_embd)).
        prefix: per-layer `(key, value)` or None, each (B or 1, n_head, P, head_dim).
        attention_mask: (B, past + T) of 1 (real) / 0 (padding), for left-padded batches.
        position_offset: position id of the first real token (default: the prefix length).
        cache: a `KVCache` that this call reads and extends (decoding).
        labels: (B, T) token ids, IGNORE (-100) where there is no target; shifted inside, as in
            transformers (position t predicts labels[:, t + 1]). Logits are then computed only at the
            target positions (`target_loss`), unless `return_logits=True` asks for all of them too.
        """
        h = self.hidden_states(input_ids, prefix=prefix, attention_mask=attention_mask,
                               position_offset=position_offset, inputs_embeds=inputs_embeds, cache=cache)
        if labels is None:
            return self.lm_head(h)
        return LMOutput(self.target_loss(h, labels), self.lm_head(h) if return_logits else None)

    def target_loss(self, hidden: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Next-token loss of hidden states (B, T, C) against labels (B, T): position t is scored on
        labels[:, t + 1] where that is not IGNORE; `reduction` "mean" over those targets, or "sum"."""
        checks.labels_shape(labels, hidden)
        target = labels[:, 1:]  # (B, T-1)
        keep = target != IGNORE
        checks.token_ids(target[keep], self.config.vocab_size, "labels (other than IGNORE = -100)")
        return self.loss(hidden[:, :-1][keep], target[keep], reduction=reduction)

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
        """Next-token cross-entropy of final hidden states `hidden` (N, C) against `targets` (N,):
        `F.cross_entropy(self.lm_head(hidden).float(), targets)`. Pass only the rows that have a target
        (`h[keep]`): logits are computed nowhere else."""
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction={reduction!r}; use 'mean' or 'sum'")
        return self.cross_entropy(hidden, self.lm_head.weight, targets, reduction=reduction)

    def layer_kv(self, input_ids: torch.Tensor | None = None, *, inputs_embeds: torch.Tensor | None = None,
                 position_offset: int = 0) -> list[PrefixKV]:
        """Per-layer (key, value), each (B, n_head, T, head_dim), that the model computes for `input_ids`
        (or `inputs_embeds` (B, T, n_embd)) at positions `position_offset`, ... Differentiable.

        Used as a prefix, they make later tokens see exactly what they would see after those tokens.
        """
        x = input_ids if input_ids is not None else inputs_embeds
        B, T = x.shape[:2]
        dtype = self.transformer.wte.weight.dtype if inputs_embeds is None else inputs_embeds.dtype
        cache = KVCache(self.config, B, T, dtype=dtype, device=x.device)
        self.hidden_states(input_ids, inputs_embeds=inputs_embeds, position_offset=position_offset, cache=cache)
        return [(k[:, :, :T], v[:, :, :T]) for k, v in zip(cache.k, cache.v)]

    @classmethod
    def from_pretrained(cls, name_or_path: str, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> "GPT":
        """Load a Hugging Face GPT-2 checkpoint: a local directory or a hub id ('gpt2', ...)."""
        return load_pretrained(cls, name_or_path, dtype=dtype, device=device)

    def save_pretrained(self, directory: str, dtype: torch.dtype | None = None,
                        max_shard_bytes: int | None = None) -> None:
        """Write `config.json` + `model.safetensors` (Hugging Face GPT-2 format), optionally cast to `dtype`;
        with `max_shard_bytes`, sharded safetensors of at most that size each and their index instead."""
        save_pretrained(self, directory, dtype=dtype, max_shard_bytes=max_shard_bytes)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """Batched decoding with the KV cache; see `minigpt.generate.generate` for the arguments."""
        return generate(self, input_ids, max_new_tokens, **kwargs)
