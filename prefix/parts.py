"""What the baselines add to a base model (LoRA updates, adapters), told apart from the base's own weights,
and saved and loaded by their names in the model."""
from __future__ import annotations

import torch
from torch import nn

from minigpt.io import CheckpointError
from minigpt.weights import check_keys

from .files import PrefixFileError


class Addition(nn.Module):
    """A module a method adds to a base model: its parameters are the method's, not the base's."""


def added_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters of every `Addition` in `model`, by their names in it."""
    added = {id(p) for m in model.modules() if isinstance(m, Addition) for p in m.parameters()}
    return {n: p for n, p in model.named_parameters() if id(p) in added}


def base_parameter_count(model: nn.Module) -> int:
    """The parameters of `model` that are the base's own: every one outside an `Addition`."""
    added = sum(p.numel() for p in added_parameters(model).values())
    return sum(p.numel() for p in model.parameters()) - added


def added_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a method added, as fp32 tensors by name: what its file keeps."""
    return {n: p.detach().float().contiguous() for n, p in added_parameters(model).items()}


def load_added(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load `state` (from `source`) into the model's additions; PrefixFileError naming every key that does not fit."""
    try:
        check_keys({n: p.shape for n, p in added_parameters(model).items()}, state, source)
    except CheckpointError as e:
        raise PrefixFileError(f"{e}: it was trained for another model shape") from None
    model.load_state_dict(state, strict=False)
    return model
