"""Adapter-tuning (Houlsby et al. 2019), the paper's adapter baseline: a small bottleneck MLP with a residual,
h + up(gelu(down(h))), after each block's attention and after its MLP (before each residual sum), trained
while the base stays frozen. `up` starts at zero, so the adapted model starts as the base model exactly.

The bottleneck width `size` sets the share of parameters: each adapter has 2 * n_embd * size + size + n_embd.
On the shipped 19M model (n_embd 256, 8 layers) size 2 is ~0.1% of the parameters and size 70 ~3%: the
paper's two adapter rows.

    model = add_adapters(GPT.from_pretrained("gpt2"), size=2)   # base frozen, adapters train
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from minigpt.io import atomic_write

from .files import PrefixFileError
from .parts import Addition, added_state, load_added

WEIGHTS = "adapters.safetensors"


def gelu(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.gelu(x, approximate="tanh")


class Adapter(Addition):
    """h + up(gelu(down(h))) for h (..., n_embd); `down` (size, n_embd), `up` (n_embd, size), `up` zero."""

    def __init__(self, n_embd: int, size: int):
        super().__init__()
        self.down = nn.Linear(n_embd, size)
        self.up = nn.Linear(size, n_embd)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(gelu(self.down(h))).to(h.dtype)


class Adapted(nn.Module):
    """A sublayer (`inner`: a block's attention or MLP) whose output goes through an adapter."""

    def __init__(self, inner: nn.Module, adapter: Adapter):
        super().__init__()
        self.inner, self.adapter = inner, adapter

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.adapter(self.inner(*args, **kwargs))


def add_adapters(model: nn.Module, size: int) -> nn.Module:
    """Freeze `model` (a GPT) and put an adapter of bottleneck `size` after each block's attention and MLP;
    returns the model, whose only trainable parameters are then the adapters'."""
    if size < 1:
        raise ValueError(f"an adapter's size (its bottleneck width) must be >= 1, got {size}")
    model.requires_grad_(False)
    device = model.transformer.wte.weight.device
    for block in model.transformer.h:
        block.attn = Adapted(block.attn, Adapter(model.config.n_embd, size).to(device))
        block.mlp = Adapted(block.mlp, Adapter(model.config.n_embd, size).to(device))
    model.adapter_size = size
    return model


def remove_adapters(model: nn.Module) -> nn.Module:
    """Take the adapters out again: the plain base model, its weights untouched; returns it."""
    for block in model.transformer.h:
        block.attn, block.mlp = (m.inner if isinstance(m, Adapted) else m for m in (block.attn, block.mlp))
    return model


def save_adapters(model: nn.Module, directory: str | Path) -> None:
    """Write the adapters' weights (`adapters.safetensors`, their size in its metadata)."""
    state = added_state(model)
    if not state:
        raise ValueError("this model has no adapters to save: call add_adapters first")
    meta = {"format": "pt", "size": str(model.adapter_size)}
    atomic_write(Path(directory) / WEIGHTS, lambda t: save_file(state, t, metadata=meta))


def load_adapters(model: nn.Module, directory: str | Path) -> nn.Module:
    """Give `model` (a GPT of the shape they were trained on) the adapters saved in `directory`."""
    path = Path(directory) / WEIGHTS
    try:
        with safe_open(str(path), "pt") as f:
            size = int(f.metadata()["size"])
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a missing, damaged or foreign file (safetensors raises its own error types)
        raise PrefixFileError(f"{path}: not an adapters file this code can read ({type(e).__name__}: {e}); "
                              "save_adapters writes one") from None
    add_adapters(model, size)
    try:
        return load_added(model, state, str(path))
    except PrefixFileError:
        remove_adapters(model)  # the model is left as it came
        raise
