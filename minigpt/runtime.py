"""Four small things every training and evaluation loop needs, defined once: bf16 autocast as a
context factory, eval mode that restores the module's mode afterwards, this process's place
among torchrun's processes, and Ctrl-C that lets the current step finish."""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

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


class GracefulInterrupt:
    """While active, Ctrl-C (SIGINT) or SIGTERM (`kill`, `timeout`, a job scheduler) only sets `requested`, so
    that the loop can end its step, save the training state and stop (`stop_if_requested`); a second signal
    interrupts at once. Signals reach only the main thread, and under torchrun every process must stop
    together, so it is off elsewhere."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False

    def __enter__(self) -> "GracefulInterrupt":
        if self.enabled:
            previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
            # None: set from outside Python
            self.previous = {s: signal.SIG_DFL if p is None else p for s, p in previous.items()}
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self._restore()

    def _restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._restore()

    def stop_if_requested(self, log, state_file: Path) -> None:
        if self.requested:
            log(f"interrupted: the training state is saved in {state_file}; rerun the same command to resume")
            raise KeyboardInterrupt
