"""Starting values of a prefix: random, zero, or the activations of real tokens (random ones or a text).

Real-token init ("vocab", "text") follows the paper: the direct table starts as exactly the per-layer
keys/values the frozen model computes for those tokens at positions 0..P-1 (`GPT.layer_kv`), so the
untrained prefix behaves as if the tokens were written before the input. The MLP cannot be inverted,
so for `prefix_projection=True` its input table P' starts as the tokens' embeddings instead (the MLP
then maps them); prompt tuning (`depth="embedding"`) starts from the token embeddings, as in PEFT.
"""
from __future__ import annotations

import math
from typing import Protocol

import torch
from einops import rearrange

from .config import PrefixConfig
from .encoder import PrefixEncoder


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


def init_token_ids(config: PrefixConfig, vocab_size: int, tokenizer: Tokenizer | None) -> torch.Tensor:
    """The P token ids a "vocab" / "text" prefix starts from, (P,); text is repeated or truncated to P."""
    P = config.num_virtual_tokens
    if config.init == "vocab":
        return torch.randint(0, vocab_size, (P,))
    if tokenizer is None:
        from minigpt import load_tokenizer
        tokenizer = load_tokenizer()
    ids = list(tokenizer.encode(config.init_text))
    if not ids or max(ids) >= vocab_size:
        raise ValueError(f"init_text {config.init_text!r} tokenizes to {ids}: need one or more ids below the "
                         f"model's vocab_size={vocab_size} (pass the model's own tokenizer)")
    return torch.tensor((ids * math.ceil(P / len(ids)))[:P])


@torch.no_grad()
def initialize(encoder: PrefixEncoder, model, config: PrefixConfig, layers: list[int],
               tokenizer: Tokenizer | None = None) -> None:
    """Set `encoder`'s starting values in place according to `config.init`."""
    if config.init == "random":  # PEFT's: the torch defaults of nn.Embedding / nn.Linear
        return
    if config.init == "zero":
        last = encoder.embedding if encoder.transform is None else encoder.transform[-1]
        for p in last.parameters():
            p.zero_()
        return
    wte = model.transformer.wte.weight
    ids = init_token_ids(config, wte.shape[0], tokenizer).to(wte.device)  # (P,)
    if encoder.transform is not None or config.depth == "embedding":
        encoder.embedding.weight.copy_(wte[ids])
        return
    kv = model.layer_kv(ids[None], position_offset=0)  # per layer: 2 x (1, H, P, Dh)
    chosen = torch.stack([torch.stack(kv[i]) for i in layers])  # (L', 2, 1, H, P, Dh)
    encoder.embedding.weight.copy_(rearrange(chosen, "l two 1 h p d -> p (l two h d)"))
