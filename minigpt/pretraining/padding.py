"""Vocabulary padding for speed (`--pad-vocab N`): while training, the tied embedding / output matrix has a
multiple of N rows (50,257 -> 50,304 for N = 64), a shape that GPU matrix kernels tile evenly. The extra rows
never get probability: the logits are cut to the real vocabulary before the loss (so the rows get no
gradient either), and they are cut off when the model is saved, so checkpoints keep the tokenizer's size."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..config import GPTConfig
from ..model import GPT


def padded_size(vocab: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that holds `vocab` rows."""
    return -(-vocab // multiple) * multiple


def pad_vocab(model: GPT, multiple: int) -> GPT:
    """Give `model`'s tied embedding / output matrix zero rows up to a multiple of `multiple` (its config
    follows); the real rows are kept as they are. Returns the model."""
    wte = model.transformer.wte
    extra = padded_size(wte.num_embeddings, multiple) - wte.num_embeddings
    if extra == 0:
        return model
    wte.weight = nn.Parameter(torch.cat([wte.weight.detach(), wte.weight.new_zeros(extra, wte.embedding_dim)]))
    wte.num_embeddings = model.lm_head.out_features = wte.weight.shape[0]
    model.lm_head.weight = wte.weight  # tied again
    model.config = replace(model.config, vocab_size=wte.num_embeddings)
    return model


def unpadded(model: GPT, vocab: int) -> tuple[dict[str, torch.Tensor], GPTConfig]:
    """`model`'s state dict and config with the embedding / output matrix cut back to `vocab` rows."""
    sd = model.state_dict()
    for k in ("transformer.wte.weight", "lm_head.weight"):
        sd[k] = sd[k][:vocab]
    return sd, replace(model.config, vocab_size=vocab)
