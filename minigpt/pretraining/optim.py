"""How pretraining moves the weights: the optimizers and the learning-rate schedule.

Optimizers (`--optimizer`):
- `adamw`: AdamW on every parameter (weight decay on the matrices and embeddings, none on biases and LayerNorms).
- `muon`: `torch.optim.Muon` (momentum, then each update orthogonalized by Newton-Schulz iterations) on the
  blocks' 2-D weight matrices, the attention and MLP projections, at `--muon-lr`; AdamW, as above, on the
  rest: the token and position embeddings (and so the tied output head), LayerNorms and biases. Muon is
  meant for hidden matrices only; embeddings and the output layer stay with AdamW.

Schedules (`--schedule`), a factor on each parameter group's peak learning rate, after a linear warmup:
- `cosine`: from 1 down to `--min-lr-ratio` over the whole budget.
- `wsd` (warmup-stable-decay): 1 until the last `--decay-frac` of the budget, then linear down to
  `--min-lr-ratio`. A longer budget (`--extend`) lengthens the stable phase; the decay moves to the new end.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..fast.optim import adamw

OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")
MUON_MOMENTUM = 0.95
ADAMW_BETAS = (0.9, 0.95)


def lr_scale(step: int, progress: float, warmup_steps: int, min_ratio: float, schedule: str = "cosine",
             decay_frac: float = 0.2) -> float:
    """The factor on the peak learning rate at optimizer step `step` (from 0), `progress` in [0, 1] being
    the fraction of the step or time budget spent: a linear warmup over `warmup_steps` steps, times the
    schedule's shape from 1 down to `min_ratio`."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    if schedule == "cosine":
        shape = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    elif schedule == "wsd":
        shape = wsd_shape(progress, decay_frac)
    else:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    return warm * (min_ratio + (1 - min_ratio) * shape)


def wsd_shape(progress: float, decay_frac: float) -> float:
    """1 in the stable phase, then linear down to 0 over the last `decay_frac` of the budget."""
    return min(1.0, (1 - min(1.0, progress)) / decay_frac)


def decaying(progress: float, schedule: str, decay_frac: float) -> bool:
    """Whether a WSD schedule has left its stable phase at `progress` (never, for other schedules)."""
    return schedule == "wsd" and wsd_shape(progress, decay_frac) < 1.0


def hidden_matrices(model: nn.Module) -> list[str]:
    """Names of the transformer blocks' 2-D weights (attention and MLP projections): what Muon trains."""
    return [n for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.ndim == 2]


def make_optimizers(model: nn.Module, optimizer: str, *, lr: float, weight_decay: float, muon_lr: float,
                    muon_weight_decay: float) -> list[torch.optim.Optimizer]:
    """[AdamW] for `optimizer` "adamw"; [AdamW, Muon] for "muon", Muon taking `hidden_matrices`. Each
    parameter group records its peak learning rate as "peak_lr" (the schedule scales it)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    to_muon = set(hidden_matrices(model)) if optimizer == "muon" else set()
    rest = [(n, p) for n, p in model.named_parameters() if n not in to_muon]
    opts = [adamw([{"params": [p for _, p in rest if p.ndim >= 2], "weight_decay": weight_decay},
                   {"params": [p for _, p in rest if p.ndim < 2], "weight_decay": 0.0}],
                  lr=lr, betas=ADAMW_BETAS)]
    if to_muon:
        matrices = [p for n, p in model.named_parameters() if n in to_muon]  # 2-D: all that Muon takes
        opts.append(torch.optim.Muon(matrices, lr=muon_lr, weight_decay=muon_weight_decay, momentum=MUON_MOMENTUM))
    for opt in opts:
        for group in opt.param_groups:
            group["peak_lr"] = group["lr"]
    return opts


def set_lr(opts: list[torch.optim.Optimizer], scale: float) -> None:
    """Each parameter group's learning rate := its peak learning rate times `scale`."""
    for opt in opts:
        for group in opt.param_groups:
            group["lr"] = group["peak_lr"] * scale
