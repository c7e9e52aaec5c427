"""Many tasks, one frozen model: a batch where each example uses its own task's prefix.

Each row gets its task's keys/values, stacked into per-example prefixes (B, H, P, Dh); prompt-tuning
tasks contribute the keys/values their virtual tokens produce in every layer (`PrefixTuner.prefix_kv`).
All tasks must have the same prefix length P and the same prefixed layers. Unequal lengths would need
two things `minigpt` does not take today: a mask over prefix keys (its attention always sees every
prefix position) and a per-row position offset (real tokens start at P, one P for the whole batch).
Padding a shorter prefix with extra keys would change its rows, so the bank refuses instead.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from minigpt.attention import PrefixKV

from .tuner import PrefixTuner


class PrefixBank(nn.Module):
    """Task name -> `PrefixTuner`, all on the same base model object; `bank(ids, tasks)` runs row b with
    the prefix of `tasks[b]`, and equals running that row alone with its tuner."""

    def __init__(self, tuners: Mapping[str, PrefixTuner]):
        super().__init__()
        if not tuners:
            raise ValueError("PrefixBank needs at least one task")
        self.tuners = nn.ModuleDict(tuners)
        first_name, first = next(iter(tuners.items()))
        self.model = first.model
        for name, t in tuners.items():
            if t.model is not self.model:
                raise ValueError(f"task {name!r} wraps another model object than task {first_name!r}; "
                                 "a bank runs every task on one shared base model")
            if t.config.num_virtual_tokens != first.config.num_virtual_tokens:
                raise ValueError(f"task {name!r} has prefix length {t.config.num_virtual_tokens}, task "
                                 f"{first_name!r} {first.config.num_virtual_tokens}: a bank needs equal lengths")
            if self._prefixed(t) != self._prefixed(first):
                raise ValueError(f"task {name!r} puts prefixes in layers {self._prefixed(t)}, task "
                                 f"{first_name!r} in {self._prefixed(first)}: a bank needs the same layers")

    def _prefixed(self, tuner: PrefixTuner) -> list[int]:
        return list(range(self.model.config.n_layer)) if tuner.config.depth == "embedding" else tuner.layers

    def prefix_kv(self, tasks: Sequence[str]) -> list[PrefixKV | None]:
        """Per-layer (key, value), each (len(tasks), H, P, Dh): row b from task tasks[b]; None where no
        task has a prefix."""
        unknown = sorted(set(tasks) - set(self.tuners))
        if unknown:
            raise KeyError(f"unknown tasks {unknown}; the bank has {list(self.tuners)}")
        names = list(self.tuners)
        index = torch.tensor([names.index(t) for t in tasks], device=self.model.transformer.wte.weight.device)
        per_task = [self.tuners[n].prefix_kv() for n in names]  # n_tasks x n_layer x 2 x (1, H, P, Dh)
        out: list[PrefixKV | None] = []
        for layer in zip(*per_task):
            if layer[0] is None:
                out.append(None)
                continue
            k = torch.cat([kv[0] for kv in layer])[index]  # (B, H, P, Dh)
            v = torch.cat([kv[1] for kv in layer])[index]
            out.append((k, v))
        return out

    def forward(self, input_ids: torch.Tensor, tasks: Sequence[str],
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) of the real tokens; input_ids (B, T), one task name per row."""
        self._check_rows(input_ids, tasks)
        return self.model(input_ids, prefix=self.prefix_kv(tasks), attention_mask=attention_mask)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, tasks: Sequence[str], max_new_tokens: int,
                 **kwargs) -> torch.Tensor:
        """`GPT.generate` (all its arguments but `prefix`) with one task per row; (B, T + new) ids."""
        self._check_rows(input_ids, tasks)
        return self.model.generate(input_ids, max_new_tokens, prefix=self.prefix_kv(tasks), **kwargs)

    @staticmethod
    def _check_rows(input_ids: torch.Tensor, tasks: Sequence[str]) -> None:
        if isinstance(tasks, str) or len(tasks) != input_ids.shape[0]:
            raise ValueError(f"pass one task name per row: {input_ids.shape[0]} rows, tasks={tasks!r}")
