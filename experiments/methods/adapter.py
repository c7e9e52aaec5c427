"""Adapter-tuning: a bottleneck MLP after each block's attention and MLP, the base frozen (prefix/adapter.py);
a deployed run keeps the adapters (`run_dir/adapters/`)."""
from __future__ import annotations

from prefix.adapter import add_adapters, save_adapters

from . import Method, register, trainable_count


def build(cfg, base, enc):
    return add_adapters(base, cfg.adapter_size)


def keep(net, cfg, run_dir, scored_bf16: bool) -> int:
    save_adapters(net, run_dir / "adapters")
    return trainable_count(net)


ADAPTER = register(Method("adapter", "adapter", build, name_core=lambda cfg: f"adapter{cfg.adapter_size}",
                          keep=keep))
