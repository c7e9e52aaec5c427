"""Exercises for notebook 01 (attention with a prefix). Fill in each function marked EXERCISE, then run
`make check` (or `python -m course 1.1 1.2`) to grade it. Shapes are written beside each argument.

The rules the grader checks are the ones minigpt/attention.py follows: keys are laid out as
[prefix; tokens]; every query sees all P prefix positions and, causally, the tokens up to its own.
"""
from __future__ import annotations

import torch


def causal_mask(tq: int, tk: int) -> torch.Tensor:
    """EXERCISE 1.1. The boolean (tq, tk) mask, True where query i may attend to key j, for tk >= tq keys
    of which the last tq are the queries' own tokens: query i sees key j exactly when j <= i + (tk - tq).
    (The diagonal sits bottom-right, behind the prefix. `torch.ones(...).tril()` alone puts it top-left.)

    Hint: compare a column of query indices with a row of key indices (`torch.arange`) and broadcast.
    """
    raise NotImplementedError("EXERCISE 1.1: build the mask from two torch.arange's, shifted by tk - tq")


def attention_with_prefix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          prefix_k: torch.Tensor, prefix_v: torch.Tensor) -> torch.Tensor:
    """EXERCISE 1.2. Causal attention over [prefix; tokens], written out (no scaled_dot_product_attention):

        q, k, v:            (B, H, T, Dh)  the tokens' queries, keys and values
        prefix_k, prefix_v: (B, H, P, Dh)  the prefix's keys and values
        returns:            (B, H, T, Dh)  softmax(q K^T / sqrt(Dh), masked) V with K, V = [prefix; tokens]

    Hint: concatenate along the position axis (dim=2), use causal_mask(T, P + T), fill the masked scores
    with -inf before the softmax.
    """
    raise NotImplementedError("EXERCISE 1.2: concatenate the prefix before the keys and values, then mask "
                              "the scores with causal_mask(T, P + T)")
