"""What the baselines add to a base model (LoRA updates, adapters), told apart from the base's own weights."""
from __future__ import annotations

from torch import nn


class Addition(nn.Module):
    """A module a method adds to a base model: its parameters are the method's, not the base's."""


def base_parameter_count(model: nn.Module) -> int:
    """The parameters of `model` that are the base's own: every one outside an `Addition`."""
    added = {id(p) for m in model.modules() if isinstance(m, Addition) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in added)
