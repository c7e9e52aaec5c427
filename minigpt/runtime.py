"""Small things every training and evaluation loop needs, defined once: bf16 autocast as a context
factory, eval mode that restores the module's mode afterwards, this process's place among torchrun's
processes, Ctrl-C that lets the current step finish, and the device's measured matmul peak (the
denominator of model-FLOP utilization)."""
from __future__ import annotations

import signal
import statistics
import threading
import time
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


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU, where work is done when a call returns)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, device: torch.device | str, n: int | None = None) -> float:
    """Measured GFLOP/s of an n x n by n x n matmul (median of 5 after 2 warm-ups; n 8192 on a GPU, 4096 on
    a CPU); on the CPU the faster of PyTorch's two matmul libraries: MKL (`a @ b`) and oneDNN
    (`minigpt.fast.linear.linear`, b frozen)."""
    from .fast.linear import linear
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 4096)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    best = 0.0
    for f in [lambda: a @ b] + ([lambda: linear(a, b)] if device.type == "cpu" else []):
        ts = []
        for _ in range(7):
            sync(device)
            t0 = time.perf_counter()
            f()
            sync(device)
            ts.append(time.perf_counter() - t0)
        best = max(best, 2 * n**3 / statistics.median(ts[2:]) / 1e9)
    return best
