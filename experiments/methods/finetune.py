"""Fine-tuning: every weight of the base trains (fp32 master weights), and the whole model is kept; or only
the top blocks and the final LayerNorm train (the paper's FT-top2), and a deployed run keeps those."""
from __future__ import annotations

from safetensors.torch import save_file

from minigpt.io import atomic_write

from . import Method, register, trainable_count


def build(cfg, base, enc):
    return base.requires_grad_(True)


def build_top(cfg, base, enc):
    """Only the top `cfg.top_layers` blocks and ln_f train; the rest stays bit-identical."""
    blocks = base.transformer.h
    if cfg.top_layers > len(blocks):
        raise SystemExit(f"error: top_layers={cfg.top_layers} but {cfg.model} has {len(blocks)} blocks; "
                         f"use --top_layers=1..{len(blocks)} (or method=finetune to train them all)")
    base.requires_grad_(False)
    for block in blocks[len(blocks) - cfg.top_layers:]:
        block.requires_grad_(True)
    base.transformer.ln_f.requires_grad_(True)
    return base


def keep_top(net, cfg, run_dir, scored_bf16: bool) -> int:
    """Save the weights that trained (`run_dir/trained.safetensors`, by their names in the model)."""
    state = {n: p.detach().contiguous() for n, p in net.named_parameters() if p.requires_grad}
    atomic_write(run_dir / "trained.safetensors", lambda t: save_file(state, t, metadata={"format": "pt"}))
    return trainable_count(net)


FINETUNE = register(Method("finetune", "full fine-tuning", build, name_core=lambda cfg: "finetune",
                           frozen_base=False))
FTTOP = register(Method("fttop", "top-layer fine-tuning", build_top, name_core=lambda cfg: f"fttop{cfg.top_layers}",
                        frozen_base=False, keep=keep_top))
