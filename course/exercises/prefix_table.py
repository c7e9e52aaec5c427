"""Exercises for notebook 03 (prefix-tuning): from the trainable table to each layer's keys and values, and
the paper's MLP reparameterization. Fill in each function marked EXERCISE, then `make check` (or
`python -m course 3.1 3.2`)."""
from __future__ import annotations

import torch


def prefix_kv(table: torch.Tensor, n_layer: int, n_head: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """EXERCISE 3.1. Split the prefix table into each layer's (key, value).

        table:   (P, n_layer * 2 * d_model), each row laid out as (layer, key/value, head, head_dim),
                 PEFT's layout: row p holds layer 0's key, layer 0's value, layer 1's key, ...
        returns: n_layer pairs (key, value), each (1, n_head, P, head_dim), ready for
                 `model(ids, prefix=...)`

    Hint: einops' rearrange with the pattern "p (l two h d) -> l two h p d" does the work; then add the
    batch axis of size 1.
    """
    raise NotImplementedError("EXERCISE 3.1: rearrange the table to (layer, key/value, head, P, head_dim)")


def reparameterize(p_small: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                   b2: torch.Tensor) -> torch.Tensor:
    """EXERCISE 3.2. The paper's reparameterization P = MLP(P'): a linear layer, tanh, a linear layer.

        p_small: (P, token_dim)  P', the small trainable matrix
        w1, b1:  (hidden, token_dim), (hidden,)   the first layer, as nn.Linear stores it
        w2, b2:  (width, hidden), (width,)        the second layer
        returns: (P, width)

    Hint: nn.Linear computes x @ W.T + b.
    """
    raise NotImplementedError("EXERCISE 3.2: two linear layers with a tanh between them (x @ W.T + b)")
