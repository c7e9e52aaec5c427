"""The trainable part: a (P, width) table, given directly or computed by the paper's MLP.

Module and parameter names are PEFT's `PrefixEncoder` (`embedding`, `transform.0`, `transform.2`), so
state dicts map one to one. For prefixes `width = n_prefix_layers · 2 · d_model`, laid out per row as
`(layer, key/value, head, head_dim)` exactly like PEFT's `past_key_values`; for prompt tuning
`width = d_model`.
"""
from __future__ import annotations

import torch
from torch import nn


class PrefixEncoder(nn.Module):
    """Produces the (P, width) prefix table.

    Direct (`hidden=None`): `embedding.weight` is the table. Reparameterized (`hidden` set, the paper's
    method): `transform(embedding.weight)` with `embedding` (P, token_dim) and
    `transform` = Linear(token_dim, hidden) -> Tanh -> Linear(hidden, width).
    """

    def __init__(self, num_virtual_tokens: int, width: int, *, token_dim: int, hidden: int | None = None):
        super().__init__()
        if hidden is None:
            self.embedding = nn.Embedding(num_virtual_tokens, width)
            self.transform = None
        else:
            self.embedding = nn.Embedding(num_virtual_tokens, token_dim)
            self.transform = nn.Sequential(nn.Linear(token_dim, hidden), nn.Tanh(), nn.Linear(hidden, width))

    def forward(self) -> torch.Tensor:
        """The prefix table, (P, width)."""
        x = self.embedding.weight  # (P, width) or (P, token_dim)
        return x if self.transform is None else self.transform(x)

    @classmethod
    def table(cls, values: torch.Tensor) -> "PrefixEncoder":
        """A direct encoder holding `values` (P, width) as its table (what `materialize` keeps)."""
        enc = cls(values.shape[0], values.shape[1], token_dim=values.shape[1])
        enc.embedding.weight = nn.Parameter(values.detach().clone())
        return enc
