"""LoRA (Hu et al. 2021), the baseline researchers ask about first: a frozen weight W gets a trainable
low-rank update, y = W x + (alpha / r) * B A x, with A (r, in) random and B (out, r) zero at the start, so
training starts from the base model exactly.

GPT-2 computes query, key and value with one fused projection, `c_attn` (out = 3 * n_embd). The LoRA paper
adapts the query and the value only, each with its own A and B (its `MergedLinear`); PEFT, given
`target_modules=["c_attn"]`, puts one A and B on the whole fused projection. Both are targets here:

    q, k, v        a part of c_attn, each with its own update (the LoRA paper on E2E: q and v, r = 4)
    c_attn         the whole fused projection, one update (as PEFT does for GPT-2)
    attn.c_proj    the attention's output projection
    mlp.c_fc       the MLP's first layer
    mlp.c_proj     the MLP's second layer

    model = add_lora(GPT.from_pretrained("gpt2"), rank=4, alpha=32, targets=("q", "v"))  # base frozen
    ...train...
    merged = merge_lora(model)       # a plain GPT again: W + (alpha / r) B A folded into each weight
    merged.save_pretrained("out/")   # transformers' GPT2LMHeadModel loads it, same logits

`save_lora` / `load_lora` keep only the updates (a few thousand numbers), with the settings that made them.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from minigpt.io import atomic_write

from .files import PrefixFileError
from .parts import Addition, added_state, load_added

PARTS = {"q": 0, "k": 1, "v": 2}  # the thirds of c_attn's output
TARGETS = (*PARTS, "c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
CONFIG, WEIGHTS = "lora_config.json", "lora.safetensors"


class LowRank(Addition):
    """The update (alpha / r) * B A x of one weight (or of one part of it): `lora_A` (r, in), `lora_B` (out, r),
    named as in PEFT. A starts as PEFT's (Kaiming-uniform), B at zero."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__()
        self.lora_A = nn.Linear(in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_features, bias=False)
        self.scale = alpha / rank
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_B(self.lora_A(x)) * self.scale  # (..., out)

    def delta(self) -> torch.Tensor:
        """The weight this update adds, (out, in), in fp32."""
        return self.lora_B.weight.float() @ self.lora_A.weight.float() * self.scale


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` (`base`) plus low-rank updates on some equal parts of its output (`parts` of them;
    `which` says which parts have an update: c_attn with q and v is parts=3, which=(0, 2))."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, parts: int = 1, which: Sequence[int] = (0,)):
        super().__init__()
        self.base, self.parts, self.which = base, parts, tuple(which)
        out = base.out_features // parts
        self.updates = nn.ModuleList(LowRank(base.in_features, out, rank, alpha) for _ in self.which)
        self.updates.to(base.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., out)
        if self.parts == 1:
            return y + self.updates[0](x).to(y.dtype)
        chunks = list(y.chunk(self.parts, dim=-1))  # each (..., out / parts)
        for i, update in zip(self.which, self.updates):
            chunks[i] = chunks[i] + update(x).to(y.dtype)
        return torch.cat(chunks, dim=-1)

    def merged(self) -> nn.Linear:
        """A plain `nn.Linear` computing the same function: each update folded into its rows (in fp32, then
        the base's dtype)."""
        weight = self.base.weight.detach().float().clone()  # (out, in)
        rows = weight.shape[0] // self.parts
        for i, update in zip(self.which, self.updates):
            weight[i * rows:(i + 1) * rows] += update.delta()
        linear = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        linear.to(device=weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if self.base.bias is not None:
                linear.bias.copy_(self.base.bias)
        return linear.requires_grad_(False)


def check_targets(targets: Sequence[str]) -> tuple[str, ...]:
    """The targets, checked: known names, none twice, and not c_attn together with one of its parts."""
    targets = tuple(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets or len(set(targets)) != len(targets):
        raise ValueError(f"LoRA targets {list(targets)}: give distinct names from {', '.join(TARGETS)}")
    if "c_attn" in targets and set(PARTS) & set(targets):
        raise ValueError("LoRA targets: c_attn (the whole fused q/k/v projection) and its parts q, k, v exclude "
                         "each other; give one or the other")
    return targets


def add_lora(model: nn.Module, rank: int, alpha: float, targets: Sequence[str] = ("q", "v")) -> nn.Module:
    """Freeze `model` (a GPT) and give each block's target projections a LoRA update; returns the model, whose
    only trainable parameters are then the updates."""
    if rank < 1 or alpha <= 0:
        raise ValueError(f"LoRA needs rank >= 1 and alpha > 0, got rank={rank}, alpha={alpha}")
    targets = check_targets(targets)
    model.requires_grad_(False)
    parts = sorted(PARTS[t] for t in targets if t in PARTS)
    for block in model.transformer.h:
        if parts:
            block.attn.c_attn = LoRALinear(block.attn.c_attn, rank, alpha, parts=3, which=parts)
        for name in (t for t in targets if t not in PARTS):
            owner, attr = (block.attn, name) if name == "c_attn" else (getattr(block, name.split(".")[0]),
                                                                       name.split(".")[1])
            setattr(owner, attr, LoRALinear(getattr(owner, attr), rank, alpha))
    model.lora_settings = {"rank": rank, "alpha": alpha, "targets": list(targets)}
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its weight, in place: the model is a plain GPT again (its state dict has
    the base's keys), computing what the adapted model computed; returns it."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    if hasattr(model, "lora_settings"):
        del model.lora_settings
    return model


def save_lora(model: nn.Module, directory: str | Path) -> None:
    """Write the updates (`lora.safetensors`) and the settings that made them (`lora_config.json`)."""
    directory = Path(directory)
    state = added_state(model)
    if not state:
        raise ValueError("this model has no LoRA updates to save: call add_lora first")
    text = json.dumps(model.lora_settings, indent=2)
    atomic_write(directory / WEIGHTS, lambda t: save_file(state, t, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG, lambda t: Path(t).write_text(text))


def load_lora(model: nn.Module, directory: str | Path) -> nn.Module:
    """Give `model` (a GPT of the shape the updates were trained on) the LoRA updates saved in `directory`."""
    directory = Path(directory)
    try:
        settings = json.loads((directory / CONFIG).read_text())
        state = load_file(str(directory / WEIGHTS))
        add_lora(model, settings["rank"], settings["alpha"], settings["targets"])
    except Exception as e:  # a missing, damaged or foreign file (safetensors raises its own error types)
        raise PrefixFileError(f"{directory}: not a LoRA folder this code can read ({type(e).__name__}: {e}); it "
                              f"needs {CONFIG} and {WEIGHTS} as save_lora writes them") from None
    return load_added(model, state, str(directory / WEIGHTS))


def main(argv: list[str] | None = None) -> None:
    """`python -m prefix.lora --base MODEL --lora RUN/lora --out DIR`: a run's LoRA folded into a checkpoint
    that `GPT.from_pretrained` and transformers' `GPT2LMHeadModel` load as a plain GPT-2."""
    import argparse

    from minigpt import GPT
    from minigpt.io import CheckpointError
    p = argparse.ArgumentParser(prog="python -m prefix.lora", description=main.__doc__)
    p.add_argument("--base", required=True, help="the base model the LoRA was trained on (a folder or hub id)")
    p.add_argument("--lora", required=True, help="the folder save_lora wrote (a run's runs/<run>/lora/)")
    p.add_argument("--out", required=True, help="where the merged checkpoint goes (must not hold one)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if (out / "config.json").exists():
        raise SystemExit(f"error: {out} already holds a checkpoint; give another --out")
    try:
        model = load_lora(GPT.from_pretrained(args.base), args.lora)
    except (CheckpointError, PrefixFileError) as e:
        raise SystemExit(f"error: {e}") from None
    merge_lora(model).save_pretrained(str(out))
    print(f"merged {args.lora} into {args.base}: {out}/ (config.json, model.safetensors)")


if __name__ == "__main__":
    main()
