"""Decoding with a static KV cache and a one-token step that compiles (one CUDA graph per step on a GPU).

`minigpt.generate` grows its view of the cache every step and asks the host every step whether to stop;
on a GPU a small model's decoding step is then bound by kernel launches and host syncs, not arithmetic.
Here every tensor a step touches keeps its shape and its address for the whole call:

- `StaticCache`: per layer, keys and values (R, H, S, Dh) with S = P + T + max_new_tokens slots (P the
  longest prefix: a layer's prefix sits right-aligned in the first P slots, the prompt from slot P, decoded
  tokens after it), and which slots each layer's queries may see, (L, R, S) bool; unused slots hold zeros.
- `OneToken`: an `nn.Module` whose forward runs one token per row (R, 1) at the position ids `pos` (R,):
  each block's attention writes its keys/values at the cache's `slot` (a (1,) buffer) with `index_copy_`
  and attends over all S slots under the mask; it returns the logits (R, V) in fp32. No value in it is
  read on the host, so `torch.compile(mode="reduce-overhead")` captures it whole (the cache is registered
  buffers: static addresses). The slot and positions advance after it, on the device.

The prompt runs once, eagerly, through the ordinary cache (`generate.Stepper`, infix included), and is
then copied into the static layout, one copy per beam. `StaticStepper` stands in for the eager stepper in
`minigpt.generate`'s own loops, which then ask the host whether to stop only every `check_every` steps; a
step after every row has ended changes nothing that is returned (greedy: ended rows emit padding and the
output is cut where a check at every step stops; beam search: a settled row's new candidates score below
every entry of its finished pool, which is what lets `drop_settled=False` run settled rows on), so the
tokens are those of the eager decoder (tests/test_static_decode.py). Attention
over the masked slots only adds exact zeros, but its sums group differently: in fp32 the logits agree to
~1e-6 and the tokens are the same; in bf16 such a difference can turn a near-tie (bench/RESULTS.md counts
how often on E2E). The cache and the compiled step are kept per model (`release` frees them) and grow to
the largest call seen, so a decoding run compiles once or twice, not once per batch.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

from .. import generate as eager
from ..attention import KVCache


class StaticCache(nn.Module):
    """Fixed-size keys/values and visibility masks for R rows and S slots (see the module docstring). To the
    attention layers it is a cache like `KVCache`: `append` writes a step's keys/values at the slot `slot`
    and returns all S slots, and `visible(layer)` is the mask over them."""

    def __init__(self, layers: int, heads: int, head_dim: int, rows: int, size: int, dtype, device):
        super().__init__()
        self.layers, self.rows, self.size = layers, rows, size
        self.prefix_len = [0] * layers  # (read by the attention layers only where there is no mask)
        for i in range(layers):  # zeros, not garbage: a masked slot's weight 0 times NaN is NaN
            self.register_buffer(f"k{i}", torch.zeros(rows, heads, size, head_dim, dtype=dtype, device=device),
                                 persistent=False)
            self.register_buffer(f"v{i}", torch.zeros_like(self.k0), persistent=False)
        self.register_buffer("seen", torch.zeros(layers, rows, size, dtype=torch.bool, device=device),
                             persistent=False)  # (L, R, S)
        self.register_buffer("slot", torch.zeros(1, dtype=torch.long, device=device), persistent=False)

    def fits(self, cache: KVCache, rows: int, slots: int) -> bool:
        k = cache.k[0]
        return (self.layers == len(cache.k) and self.rows >= rows and self.size >= max(cache.prefix_len) + slots
                and (self.k0.shape[1], self.k0.shape[3], self.k0.dtype, self.k0.device) == (k.shape[1], k.shape[3],
                                                                                           k.dtype, k.device))

    @torch.no_grad()
    def load(self, cache: KVCache, mask: torch.Tensor | None, rows_per_row: int) -> None:
        """Copy a filled `KVCache` (B rows: prefix + prompt) into the first B * `rows_per_row` rows, each
        row repeated for its beams; `mask` (B, T) is the prompt's attention mask (1 = real). A layer's
        prefix sits right-aligned in the first P slots (P: the longest), the prompt from slot P."""
        B, T, P = cache.k[0].shape[0], cache.tokens, max(cache.prefix_len)
        R = B * rows_per_row
        self.seen.zero_()
        for i, (k, v, p) in enumerate(zip(cache.k, cache.v, cache.prefix_len)):
            for mine, theirs in zip(self.kv(i), (k, v)):
                mine.zero_()
                mine[:R, :, P - p:P + T] = theirs[:, :, :p + T].repeat_interleave(rows_per_row, 0)
            self.seen[i, :R, P - p:P] = True
        self.seen[:, :R, P:P + T] = True if mask is None else mask.bool().repeat_interleave(rows_per_row, 0)[None]
        self.slot.fill_(P + T)

    def kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"k{layer}"), getattr(self, f"v{layer}")

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one step's keys/values (R, H, 1, Dh) at the slot; return the layer's S slots."""
        keys, values = self.kv(layer)
        keys.index_copy_(2, self.slot, k.to(keys.dtype))
        values.index_copy_(2, self.slot, v.to(values.dtype))
        return keys, values

    def visible(self, layer: int) -> torch.Tensor:
        """(R, 1, 1, S) bool: the slots the layer's query may see (its prefix, the real prompt, the decoded)."""
        return self.seen[layer, :, None, None, :]

    @torch.no_grad()
    def select(self, index: torch.Tensor) -> None:
        """Row r becomes old row index[r] (beam reordering; `index` (R,)), in place: addresses stay. A row's
        beams share its prompt's padding, so the masks need no reordering."""
        for i in range(self.layers):
            for t in self.kv(i):
                t.copy_(t.index_select(0, index))


class OneToken(nn.Module):
    """One decoding step of `model` over a `StaticCache`: forward(tokens (R, 1), pos (R,)) -> next-token
    logits (R, V) in fp32, the token written at the cache's slot. The blocks run their own forward (so
    adapters or LoRA in them run too); only the embedding and position lookup are done here."""

    def __init__(self, model: nn.Module, cache: StaticCache):
        super().__init__()
        self.model, self.cache = model, cache

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        tr, cache = self.model.transformer, self.cache
        cache.seen.index_fill_(2, cache.slot, True)
        x = tr.wte(tokens) + tr.wpe(pos[:, None])  # (R, 1, C)
        for block in tr.h:
            x = block(x, cache=cache)
        return self.model.lm_head(tr.ln_f(x)[:, -1]).float()


SLOTS = 64  # a new cache's slots are rounded up to a multiple of this (fewer shapes: fewer compilations)
_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {compiled?: (cache, step)}


def step_for(model: nn.Module, cache: KVCache, rows: int, slots: int, compiled: bool) -> tuple[StaticCache, nn.Module]:
    """The model's static cache and one-token step, kept between calls (a compiled step is compiled once
    per model and cache shape); a new, larger pair when the kept one is too small for `rows` x `slots`."""
    kept = _KEPT.setdefault(model, {})
    if compiled in kept and kept[compiled][0].fits(cache, rows, slots):
        return kept[compiled]
    old = kept.pop(compiled, (None,))[0]
    k = cache.k[0]
    size = -(-(max(cache.prefix_len) + slots) // SLOTS) * SLOTS
    if old is not None:  # grow, never shrink: decoding batches of rising lengths compile once or twice
        rows, size = max(rows, old.rows), max(size, old.size)
    static = StaticCache(len(cache.k), k.shape[1], k.shape[3], rows, size, k.dtype, k.device)
    step = OneToken(model, static)
    if compiled:
        graphed = k.device.type == "cuda"
        step = torch.compile(step, fullgraph=True, mode="reduce-overhead" if graphed else None)
    kept[compiled] = (static, step)
    return kept[compiled]


def release(model: nn.Module) -> None:
    """Free the static caches (and compiled steps) kept for `model`."""
    _KEPT.pop(model, None)


class StaticStepper:
    """`generate.Stepper`'s interface (`logits`, `select`) over a `StaticCache`; the slot and position
    counters live on the device and advance without the host. The cache may have more rows than the call
    (a kept cache): the extra rows run along and are never read."""

    def __init__(self, stepper: eager.Stepper, rows_per_row: int, new_tokens: int, compiled: bool):
        cache = stepper.cache
        B, device = cache.k[0].shape[0], cache.k[0].device
        self.rows, self.rows_per_row = B * rows_per_row, rows_per_row
        self.cache, self.step = step_for(stepper.model, cache, self.rows, cache.tokens + new_tokens, compiled)
        self.cache.load(cache, stepper.mask, rows_per_row)
        offset = max(cache.prefix_len) if stepper.position_offset is None else stepper.position_offset
        real = (stepper.mask.long().sum(1) if stepper.mask is not None
                else torch.full((B,), cache.tokens, device=device))
        self.pos = torch.zeros(self.cache.rows, dtype=torch.long, device=device)  # (R,) the next token's position
        self.pos[:self.rows] = (real + offset).repeat_interleave(rows_per_row)
        self.spare = torch.arange(self.rows, self.cache.rows, device=device)  # the rows this call does not use
        self.tokens = torch.zeros(self.cache.rows, 1, dtype=torch.long, device=device)
        self.graphed = compiled and device.type == "cuda"

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens[:self.rows] = tokens
        out = self.step(self.tokens, self.pos)[:self.rows]
        if self.graphed:
            out = out.clone()  # a CUDA graph's output is overwritten by its next replay
        self.cache.slot += 1
        self.pos += 1
        return out

    def select(self, index: torch.Tensor) -> None:
        self.cache.select(torch.cat([index, self.spare]) if self.spare.numel() else index)

    def repeat_rows(self, n: int) -> None:
        """Beam search's first step: the cache was loaded with each row's beams already (`rows_per_row`)."""
        if n != self.rows_per_row:
            raise ValueError(f"this static cache holds {self.rows_per_row} rows per prompt, not {n}")
