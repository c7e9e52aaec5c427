"""The model's input checks: each bad input is refused with a message that names it and the fix.
(Kept apart so that model.py reads as the model.) Also `positive`, the command lines' check of sizes."""
from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import torch

from .attention import KVCache, PrefixKV
from .config import GPTConfig


def token_ids(ids: torch.Tensor, vocab_size: int, what: str = "input_ids") -> None:
    """Ids outside [0, vocab_size) are refused; not inside a graph being compiled (reading the answer would
    stop the graph and wait for the device: `fast.step.CompiledLoss` checks its batches on the host first)."""
    if torch.compiler.is_compiling():
        return
    if ids.numel() and bool(((ids < 0) | (ids >= vocab_size)).any()):
        raise ValueError(f"{what} hold ids outside the vocabulary [0, {vocab_size}): min {int(ids.min())}, "
                         f"max {int(ids.max())}; encode text with this model's tokenizer")


def inputs(config: GPTConfig, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None,
           prefix: Sequence[PrefixKV | None] | None, cache: KVCache | None) -> None:
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None and (cache is None or cache.tokens == 0):  # user input, not a decoded token
        token_ids(input_ids, config.vocab_size)
    if cache is not None and prefix is not None:
        raise ValueError("with a cache, the prefix lives in the cache (KVCache(..., prefix=...))")


def prefix_length(config: GPTConfig, prefix: Sequence[PrefixKV | None] | None, batch: int) -> int:
    """The longest layer's prefix length P (0 without a prefix), after checking every layer's shapes."""
    if prefix is None:
        return 0
    if len(prefix) != config.n_layer:
        raise ValueError(f"prefix has {len(prefix)} entries but the model has {config.n_layer} layers; "
                         "pass one (key, value) pair or None per layer")
    lengths = set()
    for i, kv in enumerate(prefix):
        if kv is None:
            continue
        k, v = kv
        if k.ndim != 4 or k.shape[1] != config.n_head or k.shape[3] != config.head_dim or k.shape != v.shape:
            raise ValueError(f"prefix[{i}] keys {tuple(k.shape)} / values {tuple(v.shape)} must both be "
                             f"(B or 1, n_head={config.n_head}, P, head_dim={config.head_dim})")
        if k.shape[0] not in (1, batch):
            raise ValueError(f"prefix[{i}] is for a batch of {k.shape[0]} but the input has {batch} rows; "
                             "pass one prefix row (shared) or one per input row")
        lengths.add(k.shape[2])
    return max(lengths, default=0)


def fits(config: GPTConfig, offset: int, tokens: int, n_prefix: int) -> None:
    if offset + tokens > config.n_positions:
        raise ValueError(f"sequence too long: {tokens} tokens at position offset {offset} (prefix length "
                         f"{n_prefix}) exceed the model's context of {config.n_positions} positions; "
                         "shorten the input or the prefix")


def attention_mask(mask: torch.Tensor, shape: tuple[int, int]) -> None:
    if mask.shape != shape:
        raise ValueError(f"attention_mask is {tuple(mask.shape)}, expected (B, past + T) = {shape}")
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")


def labels_shape(labels: torch.Tensor, hidden: torch.Tensor) -> None:
    if labels.shape != hidden.shape[:2]:
        raise ValueError(f"labels are {tuple(labels.shape)} but the input is {tuple(hidden.shape[:2])}; "
                         "pass one label per input token (IGNORE = -100 where there is none)")


def positive(kind):
    """argparse type: a finite number > 0 of `kind` (int or float)."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
        return v
    return parse
