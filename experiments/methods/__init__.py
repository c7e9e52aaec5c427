"""The methods a run can train, as a registry: prefix-tuning and its variants, fine-tuning, and what comes next.

Each method is one `Method`, registered under its name. Its protocol, what `experiments.run` asks of it:

- `build(cfg, base, enc)`: the trainable network made from the base model, with `hidden_states(ids)` and
  `generate(...)` as `GPT` has them; only the parameters it trains have `requires_grad=True`.
- `objective(net, base)`: what training minimises (default: next-token loss on the targets, `LMObjective`).
- `keep(net, cfg, run_dir, scored_bf16)`: save what a deployed run needs under `run_dir` (after the test set
  is scored, with bf16 autocast or not) and return how many numbers it keeps (a prefix: its table once the
  MLP is dropped; fine-tuning: every weight).
- `check(cfg)`: a one-line reason the settings cannot be used by this method, or None.
- `frozen_base`: whether the base's weights stay bit-identical (then it may be held in bfloat16).
- `positions(cfg)`: the context positions the method takes before the input (a prefix: its length).
- `name_core(cfg)`: the method's part of the run's name (`prefix-len10-all-mlp`, `finetune`).

The `method` setting names an entry; a variant (`infix`, `embedding`) is the entry of its `method` whose
`when` settings all hold (position=infix, depth=embedding), so that runs keep their settings and names.
A new method is one module defining its `Method` plus one line in `MODULES`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..registry import Registry

MODULES = ("experiments.methods.prefix", "experiments.methods.finetune",  # each registers its methods
           "experiments.methods.lora", "experiments.methods.adapter")


def trainable_count(net) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@dataclass(frozen=True)
class Method:
    name: str  # how reports and the registry call it
    label: str  # how a figure's legend names it
    build: Callable  # (cfg, base, enc) -> the trainable network
    name_core: Callable  # cfg -> its part of the run name
    method: str = ""  # the value of the `method` setting that selects it ("" : its name)
    when: dict = field(default_factory=dict)  # the settings that select this variant of `method`
    frozen_base: bool = True
    objective: Callable | None = None  # (net, base) -> Objective; None: next-token loss on the targets
    keep: Callable = lambda net, cfg, run_dir, scored_bf16: trainable_count(net)  # noqa: E731
    check: Callable = lambda cfg: None  # noqa: E731
    positions: Callable = lambda cfg: 0  # noqa: E731

    @property
    def setting(self) -> str:
        return self.method or self.name


REGISTRY = Registry("method", MODULES)
register, load = REGISTRY.register, REGISTRY.load


def settings_values() -> tuple[str, ...]:
    """The values the `method` setting takes."""
    return tuple(dict.fromkeys(m.setting for m in load().values()))


def method_for(cfg) -> Method:
    """The registered method a run's settings select: the variant of `cfg.method` whose `when` settings all
    hold (the one with the most of them), else the method itself."""
    entries = [m for m in load().values() if m.setting == cfg.method
               and all(getattr(cfg, k) == v for k, v in m.when.items())]
    if not entries:
        raise ValueError(f"no method {cfg.method!r}; the methods: {', '.join(settings_values())}")
    return max(entries, key=lambda m: len(m.when))


def label(name: str) -> str:
    """A method's (or an arm's) label in reports: the registered method's, else the name itself."""
    method = load().get(name)
    return method.label if method else name
