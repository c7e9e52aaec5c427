"""Full fine-tuning: every weight of the base trains (fp32 master weights), and the whole model is kept."""
from __future__ import annotations

from . import Method, register


def build(cfg, base, enc):
    return base.requires_grad_(True)


FINETUNE = register(Method("finetune", "full fine-tuning", build, name_core=lambda cfg: "finetune",
                           frozen_base=False))
