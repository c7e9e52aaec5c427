"""Three small things every training and evaluation loop needs, defined once: bf16 autocast as a
context factory, eval mode that restores the module's mode afterwards, and this process's place
among torchrun's processes."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn


def autocast(device: torch.device | str, bf16: bool) -> Callable[[], AbstractContextManager]:
    """A factory of fresh contexts: bf16 autocast on `device` when `bf16`, else nothing."""
    if not bf16:
        return nullcontext
    kind = torch.device(device).type
    return lambda: torch.autocast(device_type=kind, dtype=torch.bfloat16)


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode (dropout off) for the block; its previous mode comes back after, even on error."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes): (0, 1) unless a torch.distributed group is running."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
