"""PEFT adapter files (`adapter_config.json` + `adapter_model.safetensors`) for prefix and prompt tuning.

PEFT 0.21 stores one tensor, `prompt_embeddings`. For PREFIX_TUNING it is the (P, n_layer·2·d_model)
key/value table *after* the MLP (the MLP is not saved, whatever `prefix_projection` says); PEFT views
each row as (n_layer·2, n_head, head_dim) and gives layer l the key 2l and the value 2l+1: the layout
of our `PrefixEncoder`, so the table is copied as it is. Reading a `prefix_projection=True` adapter
therefore gives a direct (materialized) table. For PROMPT_TUNING it is the (P, d_model) virtual token
embeddings. Writing mirrors what PEFT writes for the same settings. Neither direction imports peft.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from minigpt.io import atomic_write

from .config import PrefixConfig
from .files import PrefixFileError

CONFIG_FILE, WEIGHTS_FILE, KEY = "adapter_config.json", "adapter_model.safetensors", "prompt_embeddings"


@torch.no_grad()
def save_peft(tuner, directory, base_model_name_or_path: str | None = None) -> None:
    cfg, mc = tuner.config, tuner.model.config
    if cfg.depth == "embedding":
        kind = {"peft_type": "PROMPT_TUNING", "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None,
                "tokenizer_name_or_path": None, "tokenizer_kwargs": None}
    elif tuner.layers == list(range(mc.n_layer)):
        kind = {"peft_type": "PREFIX_TUNING", "prefix_projection": cfg.prefix_projection,
                "encoder_hidden_size": cfg.encoder_hidden_size, "init_weights": None}
    else:
        raise ValueError(f"PEFT prefixes cover every layer: depth={cfg.depth} cannot be written as a PEFT adapter")
    adapter = {**kind, "task_type": "CAUSAL_LM", "num_virtual_tokens": cfg.num_virtual_tokens,
               "token_dim": mc.n_embd, "num_layers": mc.n_layer, "num_attention_heads": mc.n_head,
               "num_transformer_submodules": 1, "inference_mode": True,
               "base_model_name_or_path": base_model_name_or_path, "revision": None,
               "modules_to_save": None, "auto_mapping": None}
    tensors = {KEY: tuner.encoder().detach().cpu().contiguous()}  # (P, width)
    directory = Path(directory)
    atomic_write(directory / WEIGHTS_FILE, lambda t: save_file(tensors, t, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_FILE, lambda t: Path(t).write_text(json.dumps(adapter, indent=2) + "\n"))


def load_peft(cls, directory, model):
    directory = Path(directory)
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / f).exists():
            raise FileNotFoundError(f"{directory} has no {f} (only safetensors PEFT adapters are read)")
    try:
        pc = json.loads((directory / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrefixFileError(f"{directory / CONFIG_FILE} is not valid JSON ({e}); the adapter is damaged") from None
    kind = pc.get("peft_type") if isinstance(pc, dict) else None
    if kind not in ("PREFIX_TUNING", "PROMPT_TUNING"):
        raise ValueError(f"{directory} holds a {kind} adapter; only PREFIX_TUNING and PROMPT_TUNING are read")
    if not isinstance(pc.get("num_virtual_tokens"), int):
        raise PrefixFileError(f"{directory / CONFIG_FILE} is not a PEFT adapter config: a {kind} adapter needs an "
                              "integer num_virtual_tokens")
    if pc.get("num_transformer_submodules", 1) != 1:
        raise ValueError(f"{directory} is an encoder-decoder adapter (num_transformer_submodules="
                         f"{pc['num_transformer_submodules']}); GPT-2 has one transformer")
    mc = model.config
    ours = {"num_layers": mc.n_layer, "num_attention_heads": mc.n_head, "token_dim": mc.n_embd}
    diffs = [f"{k}={pc.get(k)} (this model: {v})" for k, v in ours.items() if pc.get(k) != v]
    if diffs:
        raise ValueError(f"{directory} was made for a model of another shape: {', '.join(diffs)}")
    config = PrefixConfig(num_virtual_tokens=pc["num_virtual_tokens"],
                          depth="embedding" if kind == "PROMPT_TUNING" else "all")
    tuner = cls(model, config, initialize_weights=False)
    try:
        tensors = load_file(directory / WEIGHTS_FILE, device=str(model.transformer.wte.weight.device))
    except Exception as e:  # safetensors' own error for a cut or damaged file, or OSError
        raise PrefixFileError(f"{directory / WEIGHTS_FILE} cannot be read ({type(e).__name__}: {e}); the adapter "
                              "file is cut short or damaged") from None
    weight = tuner.encoder.embedding.weight
    if set(tensors) != {KEY} or tensors[KEY].shape != weight.shape:
        raise ValueError(f"{directory / WEIGHTS_FILE} should hold only {KEY!r} shaped {tuple(weight.shape)}; "
                         f"it holds {({k: tuple(v.shape) for k, v in tensors.items()})}")
    with torch.no_grad():
        weight.copy_(tensors[KEY])
    return tuner
