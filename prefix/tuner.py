"""Prefix-tuning around a frozen `minigpt.GPT`: the model stays untouched, the prefix is an argument.

The tuner passes its keys/values through the model's `prefix=` argument (one entry per layer, `None`
where `depth` leaves a layer out); prompt tuning (`depth="embedding"`) prepends its virtual token
embeddings through `inputs_embeds`. In both cases the virtual tokens occupy positions 0..P-1 and real
tokens start at P, as in the reference code and PEFT.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from einops import rearrange
from torch import nn

from minigpt import GPT, LMOutput
from minigpt.attention import PrefixKV

from .config import PrefixConfig
from .encoder import PrefixEncoder
from .files import load_prefix, save_prefix
from .init import Tokenizer, initialize
from .peft_io import load_peft, save_peft


class PrefixTuner(nn.Module):
    """A frozen GPT plus one trainable prefix (see `PrefixConfig`); call it like the model.

    Only `encoder` (the prefix) has `requires_grad=True`; the base model's parameters are frozen here.
    """

    def __init__(self, model: GPT, config: PrefixConfig, *, tokenizer: Tokenizer | None = None,
                 initialize_weights: bool = True):
        """tokenizer: used for `init="text"` (default: GPT-2's BPE). initialize_weights=False leaves the
        torch defaults, for loaders that overwrite the weights anyway."""
        super().__init__()
        cfg = model.config
        self.model = model.requires_grad_(False)
        self.config = config
        self.layers = config.layers(cfg.n_layer)  # validates the indices against the model
        width = cfg.n_embd if config.depth == "embedding" else len(self.layers) * 2 * cfg.n_embd
        hidden = config.encoder_hidden_size if config.prefix_projection else None
        self.encoder = PrefixEncoder(config.num_virtual_tokens, width, token_dim=cfg.n_embd,
                                     hidden=hidden).to(model.transformer.wte.weight.device)
        self.dropout = nn.Dropout(config.prefix_dropout)
        if initialize_weights:
            initialize(self.encoder, model, config, self.layers, tokenizer)

    def _table(self, batch_size: int) -> torch.Tensor:
        """The prefix table, (1, P, width), shared by the batch; with dropout active, (B, P, width), since
        dropout masks differ per example."""
        table = self.encoder()[None]
        if self.training and self.dropout.p > 0:
            table = self.dropout(table.expand(batch_size, -1, -1))
        return table

    def prefix_kv(self, batch_size: int = 1) -> list[PrefixKV | None]:
        """Per-layer (key, value), each (1, H, P, Dh), or (batch_size, H, P, Dh) while prefix dropout is
        active; None for layers `depth` leaves out. The model broadcasts a single row over the batch.

        For `depth="embedding"`: the keys/values every layer computes for the virtual tokens (running
        the real tokens after them is the same as running them with this prefix).
        """
        table = self._table(batch_size)  # (1 or B, P, width)
        if self.config.depth == "embedding":
            return self.model.layer_kv(inputs_embeds=table.to(self.model.transformer.wte.weight.dtype))
        kv = rearrange(table, "b p (l two h d) -> l two b h p d", l=len(self.layers), two=2,
                       h=self.model.config.n_head)
        out: list[PrefixKV | None] = [None] * self.model.config.n_layer
        # unbind, not indexing: the gradient of an index is a zero-filled copy of the whole table per use
        for i, layer in zip(self.layers, kv.unbind(0)):
            out[i] = tuple(layer.unbind(0))
        return out

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states of the real tokens, (B, T, C). attention_mask: (B, T), 1 = real token."""
        B = input_ids.shape[0]
        if self.config.depth != "embedding":
            return self.model.hidden_states(input_ids, prefix=self.prefix_kv(B), attention_mask=attention_mask)
        wte = self.model.transformer.wte
        prompt = self._table(B).to(wte.weight.dtype).expand(B, -1, -1)  # (B, P, C)
        P = prompt.shape[1]
        embeds = torch.cat([prompt, wte(input_ids)], dim=1)  # (B, P + T, C)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask.new_ones(B, P), attention_mask], dim=1)  # (B, P + T)
        h = self.model.hidden_states(inputs_embeds=embeds, attention_mask=attention_mask, position_offset=0)
        return h[:, P:]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                labels: torch.Tensor | None = None, return_logits: bool = False) -> torch.Tensor | LMOutput:
        """Next-token logits of the real tokens, (B, T, vocab); with `labels` (B, T) (IGNORE = -100: no
        target), an `LMOutput` whose loss is computed at the target positions only (see `GPT.forward`)."""
        h = self.hidden_states(input_ids, attention_mask)
        if labels is None:
            return self.model.lm_head(h)
        return LMOutput(self.model.target_loss(h, labels), self.model.lm_head(h) if return_logits else None)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """`GPT.generate` with this prefix (all its arguments but `prefix`); returns (B, T + new) ids."""
        return self.model.generate(input_ids, max_new_tokens, prefix=self.prefix_kv(), **kwargs)

    @torch.no_grad()
    def materialize(self) -> "PrefixTuner":
        """Replace the MLP by the table it computes (the paper's inference form); outputs are unchanged.

        Under bf16 autocast the table is the one the MLP computes there (stored as float32): a run that decoded
        under autocast saves exactly the prefix its predictions came from."""
        if self.encoder.transform is not None:
            self.encoder = PrefixEncoder.table(self.encoder().float())
            self.config = replace(self.config, prefix_projection=False)
        return self

    def trainable_summary(self) -> str:
        """One line like PEFT's `print_trainable_parameters`."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return (f"trainable params: {trainable:,} || all params: {total:,} || "
                f"trainable%: {100 * trainable / total:.4f}")

    def save(self, path, base_model_name_or_path: str | None = None) -> None:
        """Write `path/prefix_config.json` + `path/prefix.safetensors` (see `prefix.files`)."""
        save_prefix(self, path, base_model_name_or_path)

    @classmethod
    def load(cls, path, model: GPT) -> "PrefixTuner":
        """Read a prefix written by `save` onto `model` (refuses a model of another shape)."""
        return load_prefix(cls, path, model)

    def save_peft(self, directory, base_model_name_or_path: str | None = None) -> None:
        """Write a PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`)."""
        save_peft(self, directory, base_model_name_or_path)

    @classmethod
    def from_peft(cls, directory, model: GPT) -> "PrefixTuner":
        """Read a PEFT prefix-tuning or prompt-tuning adapter directory onto `model`."""
        return load_peft(cls, directory, model)
