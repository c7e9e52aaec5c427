"""GPT-2 decoder with Hugging Face parameter names, taking optional prefix keys/values per layer."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import kernels
from .attention import CausalSelfAttention, KVCache, PrefixKV
from .config import GPTConfig
from .generate import generate
from .linear import Linear, linear, matmul
from .weights import load_pretrained, save_pretrained


IGNORE = -100  # a label that is not a target (as in transformers and PyTorch's cross_entropy)


@dataclass
class LMOutput:
    """What `model(input_ids, labels=...)` returns: `loss`, the mean next-token cross-entropy over the
    positions that have a target, and `logits` (B, T, vocab), only when asked for (`return_logits=True`)."""
    loss: torch.Tensor
    logits: torch.Tensor | None = None


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
            if want and kernels.usable(logits):  # CPU training: one fused pass (minigpt/kernels.py)
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


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(kernels.gelu(self.c_fc(x)))  # GPT-2's GELU is the tanh form


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
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
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

    def _check_prefix(self, prefix: Sequence[PrefixKV | None], batch: int) -> int:
        cfg = self.config
        if len(prefix) != cfg.n_layer:
            raise ValueError(f"prefix has {len(prefix)} entries but the model has {cfg.n_layer} layers; "
                             "pass one (key, value) pair or None per layer")
        lengths = set()
        for i, kv in enumerate(prefix):
            if kv is None:
                continue
            k, v = kv
            if k.ndim != 4 or k.shape[1] != cfg.n_head or k.shape[3] != cfg.head_dim or k.shape != v.shape:
                raise ValueError(f"prefix[{i}] keys {tuple(k.shape)} / values {tuple(v.shape)} must both be "
                                 f"(B or 1, n_head={cfg.n_head}, P, head_dim={cfg.head_dim})")
            if k.shape[0] not in (1, batch):
                raise ValueError(f"prefix[{i}] is for a batch of {k.shape[0]} but the input has {batch} rows; "
                                 "pass one prefix row (shared) or one per input row")
            lengths.add(k.shape[2])
        return max(lengths, default=0)

    def hidden_states(self, input_ids: torch.Tensor | None = None, *,
                      prefix: Sequence[PrefixKV | None] | None = None,
                      attention_mask: torch.Tensor | None = None, position_offset: int | None = None,
                      inputs_embeds: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """Final hidden states (after `ln_f`), (B, T, n_embd). Arguments as in `forward`."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None and (cache is None or cache.tokens == 0):  # user input, not a decoded token
            V = self.config.vocab_size
            if input_ids.numel() and bool(((input_ids < 0) | (input_ids >= V)).any()):
                raise ValueError(f"input_ids hold ids outside the vocabulary [0, {V}): min {int(input_ids.min())}, "
                                 f"max {int(input_ids.max())}; encode text with this model's tokenizer")
        x = self.transformer.wte(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T = x.shape[:2]
        if cache is not None:
            if prefix is not None:
                raise ValueError("with a cache, the prefix lives in the cache (KVCache(..., prefix=...))")
            n_prefix, past = max(cache.prefix_len), cache.tokens
        else:
            n_prefix = self._check_prefix(prefix, B) if prefix is not None else 0
            past = 0
        offset = n_prefix if position_offset is None else position_offset
        if offset + past + T > self.config.n_positions:
            raise ValueError(f"sequence too long: {past + T} tokens at position offset {offset} (prefix length "
                             f"{n_prefix}) exceed the model's context of {self.config.n_positions} positions; "
                             "shorten the input or the prefix")
        key_padding = None
        if attention_mask is not None:
            if attention_mask.shape != (B, past + T):
                raise ValueError(f"attention_mask is {tuple(attention_mask.shape)}, expected (B, past + T) = "
                                 f"{(B, past + T)}")
            if bool(((attention_mask != 0) & (attention_mask != 1)).any()):
                raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
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
        if labels.shape != hidden.shape[:2]:
            raise ValueError(f"labels are {tuple(labels.shape)} but the input is {tuple(hidden.shape[:2])}; "
                             "pass one label per input token (IGNORE = -100 where there is none)")
        target = labels[:, 1:]  # (B, T-1)
        keep = target != IGNORE
        V = self.config.vocab_size
        if bool(((target[keep] < 0) | (target[keep] >= V)).any()):
            raise ValueError(f"labels hold ids outside the vocabulary [0, {V}) other than IGNORE ({IGNORE})")
        return self.loss(hidden[:, :-1][keep], target[keep], reduction=reduction)

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean",
             chunk: int = 128) -> torch.Tensor:
        """Next-token cross-entropy of final hidden states `hidden` (N, C) against `targets` (N,).

        Pass only the rows that have a target (`h[keep]`): logits are computed nowhere else. Equals
        `F.cross_entropy(self.lm_head(hidden).float(), targets, reduction=reduction)`, but `chunk` rows
        at a time with the gradient computed on the way, so the (N, vocab) logits are never stored: less
        memory, and on CPU less time (bench/RESULTS.md).
        """
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction={reduction!r}; use 'mean' or 'sum'")
        total = ChunkedCrossEntropy.apply(hidden, self.lm_head.weight, targets, chunk, torch.is_grad_enabled())
        return total / targets.shape[0] if reduction == "mean" else total

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

    def save_pretrained(self, directory: str, dtype: torch.dtype | None = None) -> None:
        """Write `config.json` + `model.safetensors` (Hugging Face GPT-2 format), optionally cast to `dtype`."""
        save_pretrained(self, directory, dtype=dtype)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """Batched decoding with the KV cache; see `minigpt.generate.generate` for the arguments."""
        return generate(self, input_ids, max_new_tokens, **kwargs)
