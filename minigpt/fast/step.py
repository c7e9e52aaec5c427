"""A compiled training loss: one graph per shape bucket, the same loss as the eager path.

On a GPU a small model's training step is bound by kernel launches and Python, not arithmetic. Compiling
the whole forward and backward (the prefix, the frozen or trainable blocks and the target-only loss) fuses
the elementwise work and, with `mode="reduce-overhead"`, replays each step as CUDA graphs. Graphs need
static shapes, so `CompiledLoss` pads every batch into a bucket before calling its compiled function:

- rows up to the batch size (the last, smaller batch of an epoch gets rows with no target);
- the length up to a multiple of LENGTH (right padding: a causal model's real tokens never see it);
- the targets, gathered to a flat list (the logits are computed only there, as `GPT.target_loss` does),
  up to a multiple of TARGETS, the added ones ignored (label IGNORE).

The bucket sizes and the target positions are worked out on the host from the batch (which the data loader
made on the host anyway; the ids are checked there too), so the step itself never waits for the device.
The compiler makes one graph for the first bucket and, at the second, one with symbolic lengths that serves
most others (two or three compilations a run); on a GPU each bucket then records its own CUDA graph, which
is cheap. The loss is the sum over targets, as `GPT.target_loss(..., reduction="sum")`
(tests/test_compiled_step.py compares the two, loss and gradients).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import checks
from ..model import IGNORE

LENGTH = 32  # sequence lengths are padded up to a multiple of this
TARGETS = 256  # target counts are padded up to a multiple of this
BUCKETS = 64  # compiled graphs the compiler may keep per function (its default limit is 8)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class CompiledLoss:
    """`loss(ids, labels)` -> the summed next-token loss over the target positions, like
    `model.target_loss(hidden(ids), labels, reduction="sum")`, computed by a compiled function.

    hidden: maps input ids (B, T) to final hidden states (B, T, C) (a `PrefixTuner`'s or a `GPT`'s
    `hidden_states`); model: the `GPT` whose (tied) output layer scores them; rows: the batch size every
    batch is padded to; mode: `torch.compile`'s mode (default: "reduce-overhead" on a GPU, CUDA graphs)."""

    def __init__(self, hidden: Callable[[torch.Tensor], torch.Tensor], model: torch.nn.Module, rows: int,
                 mode: str | None = None, pad_id: int = 0):
        self.hidden, self.model, self.rows, self.pad_id = hidden, model, rows, pad_id
        self.device = model.lm_head.weight.device
        if mode is None and self.device.type == "cuda":
            mode = "reduce-overhead"
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, name, max(getattr(config, name), BUCKETS))
        self.fn = torch.compile(self._loss, mode=mode)  # a second shape makes the lengths dynamic: two compilations
        self.shapes: set[tuple[int, int, int]] = set()  # the buckets seen (rows, length, targets)

    def _loss(self, ids: torch.Tensor, index: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = self.hidden(ids)  # (B, T, C)
        h = h[:, :-1].reshape(-1, h.shape[-1]).index_select(0, index)  # (N, C): the positions with a target
        logits = F.linear(h, self.model.lm_head.weight).float()
        return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")

    def bucket(self, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids (R, T'), target positions (N',), their targets (N',)) padded into the batch's bucket."""
        B, T = ids.shape
        vocab = self.model.config.vocab_size
        checks.token_ids(ids, vocab)
        checks.token_ids(labels[labels != IGNORE], vocab, "labels (other than IGNORE = -100)")
        if B > self.rows:
            raise ValueError(f"a batch of {B} rows does not fit CompiledLoss(rows={self.rows})")
        R, L = self.rows, round_up(T, LENGTH)
        padded = torch.full((R, L), self.pad_id, dtype=ids.dtype)
        scored = torch.full((R, L), IGNORE, dtype=labels.dtype)
        padded[:B, :T], scored[:B, :T] = ids.cpu(), labels.cpu()
        target = scored[:, 1:]  # position t predicts labels[:, t + 1]
        keep = (target != IGNORE).flatten()
        index = keep.nonzero().squeeze(1)
        N = round_up(max(index.numel(), 1), TARGETS)
        index = torch.cat([index, index.new_zeros(N - index.numel())])
        targets = torch.cat([target.flatten()[keep], target.new_full((N - int(keep.sum()),), IGNORE)])
        self.shapes.add((R, L, N))
        return padded, index, targets

    def __call__(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ids, index, targets = (t.to(self.device, non_blocking=True) for t in self.bucket(ids, labels))
        return self.fn(ids, index, targets)
