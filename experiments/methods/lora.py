"""LoRA: a trainable low-rank update on chosen projections of the frozen base (prefix/lora.py); a deployed run
keeps the updates (`run_dir/lora/`), which `prefix.lora.merge_lora` folds into the weights."""
from __future__ import annotations

from prefix.lora import add_lora, save_lora

from . import Method, register, trainable_count
from ..config import lora_targets


def build(cfg, base, enc):
    return add_lora(base, cfg.lora_rank, cfg.lora_alpha, lora_targets(cfg.lora_targets))


def keep(net, cfg, run_dir, scored_bf16: bool) -> int:
    save_lora(net, run_dir / "lora")
    return trainable_count(net)


def name_core(cfg) -> str:
    alpha = f"{cfg.lora_alpha:g}"
    return f"lora-r{cfg.lora_rank}-alpha{alpha}-" + "+".join(lora_targets(cfg.lora_targets))


LORA = register(Method("lora", "LoRA", build, name_core, keep=keep))
