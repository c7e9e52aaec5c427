"""Infix-tuning (the paper's ablation of where the trainable activations sit): `[x; INFIX; y]`.

A prefix sits before the input, so it can shape the activations of the input and of the output; an infix
sits between them and shapes the output only. Here, as for the prefix, the infix is trainable keys and
values at every layer, P positions after the source and before the target (the target's position ids
start after them), plus the final hidden state of the infix's last position, from which the first
target token is predicted (the activations of those positions are trainable at every layer, the last
one included). The source never sees the infix, so it runs once without gradients; the infix is written
into the KV cache after it, and the target runs on top (`GPT.hidden_states` with a cache).
"""
from __future__ import annotations

import json

import torch
from einops import rearrange
from torch import nn

from minigpt import GPT, IGNORE, KVCache
from minigpt.attention import PrefixKV

from .encoder import PrefixEncoder


class InfixTuner(nn.Module):
    """A frozen GPT plus a trainable infix of `num_virtual_tokens` positions in every layer, given as a
    table or through the paper's MLP (`prefix_projection`), as `PrefixConfig` describes for prefixes."""

    def __init__(self, model: GPT, num_virtual_tokens: int, *, prefix_projection: bool = True,
                 encoder_hidden_size: int = 512):
        super().__init__()
        cfg = model.config
        self.model = model.requires_grad_(False)
        self.num_virtual_tokens = num_virtual_tokens
        device = model.transformer.wte.weight.device
        hidden = encoder_hidden_size if prefix_projection else None
        self.encoder = PrefixEncoder(num_virtual_tokens, cfg.n_layer * 2 * cfg.n_embd, token_dim=cfg.n_embd,
                                     hidden=hidden).to(device)
        # the last infix position's final hidden state (what the LM head reads); zero: a uniform first guess
        self.out = nn.Parameter(torch.zeros(cfg.n_embd, device=device))

    def hidden_states(self, *args, **kwargs):
        raise TypeError("an infix sits between the source and the target: use target_hidden(source, "
                        "source_mask, target), or InfixObjective in experiments.train")

    def infix_kv(self) -> list[PrefixKV]:
        """Per layer (key, value), each (1, H, P, Dh)."""
        kv = rearrange(self.encoder()[None], "b p (l two h d) -> l two b h p d", l=self.model.config.n_layer,
                       two=2, h=self.model.config.n_head)
        return [tuple(layer.unbind(0)) for layer in kv.unbind(0)]

    def target_hidden(self, source: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The hidden states that predict each target token, (B, Ty, C): the infix's final state for the first,
        then the target's own states. source (B, Ts) left-padded (source_mask: 1 = real token), target
        (B, Ty) right-padded."""
        B, Ts = source.shape
        P, Ty = self.num_virtual_tokens, target.shape[1]
        base = self.model
        dtype = base.transformer.wte.weight.dtype
        cache = KVCache(base.config, B, Ts + P + Ty, dtype=dtype, device=source.device)
        with torch.no_grad():  # the source never sees the infix: nothing to differentiate
            base.hidden_states(source, attention_mask=source_mask, cache=cache)
        for layer, (k, v) in enumerate(self.infix_kv()):
            cache.append(layer, k.to(dtype).expand(B, -1, -1, -1), v.to(dtype).expand(B, -1, -1, -1))
        mask = torch.cat([source_mask, source_mask.new_ones(B, P + Ty)], dim=1)  # (B, Ts + P + Ty)
        h = base.hidden_states(target, attention_mask=mask, cache=cache)  # (B, Ty, C)
        first = self.out.to(h.dtype).expand(B, 1, -1)
        return torch.cat([first, h[:, :-1]], dim=1)

    def loss(self, source: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor,
             labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of the target tokens (labels (B, Ty): the target ids, IGNORE on padding)."""
        h = self.target_hidden(source, source_mask, target)
        keep = labels != IGNORE
        return self.model.loss(h[keep], labels[keep], reduction=reduction)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """`GPT.generate` with this infix after the prompt (all its arguments but `infix`)."""
        return self.model.generate(input_ids, max_new_tokens, infix=(self.infix_kv(), self.out), **kwargs)

    @torch.no_grad()
    def materialize(self) -> "InfixTuner":
        """Replace the MLP by the table it computes; outputs are unchanged (under autocast: see
        `PrefixTuner.materialize`)."""
        if self.encoder.transform is not None:
            self.encoder = PrefixEncoder.table(self.encoder().float())
        return self

    def save(self, path, base_model_name_or_path: str | None = None) -> None:
        """Write `path/infix.safetensors` (the table, or the MLP's tensors, and the final state) and
        `path/infix_config.json`."""
        from pathlib import Path

        from safetensors.torch import save_file

        from minigpt.io import atomic_write
        tensors = {f"encoder.{k}": v.detach().contiguous() for k, v in self.encoder.state_dict().items()}
        tensors["out"] = self.out.detach().contiguous()
        atomic_write(Path(path) / "infix.safetensors", lambda t: save_file(tensors, t))
        config = {"num_virtual_tokens": self.num_virtual_tokens, "materialized": self.encoder.transform is None,
                  "base_model": {"n_layer": self.model.config.n_layer, "n_embd": self.model.config.n_embd,
                                 "name_or_path": base_model_name_or_path}}
        atomic_write(Path(path) / "infix_config.json", lambda t: Path(t).write_text(json.dumps(config, indent=1)))
