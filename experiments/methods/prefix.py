"""Prefix-tuning (Li & Liang 2021) and the variants the paper compares: trainable keys and values at every
layer (or at chosen ones) before the input; only at the embeddings (prompt tuning); or between the source and
the target (infix). The base stays frozen; a deployed run keeps the prefix's table (`materialize()` drops
the MLP)."""
from __future__ import annotations

from minigpt import EOT
from minigpt.runtime import autocast
from prefix import PrefixConfig, PrefixTuner
from prefix.infix import InfixTuner

from . import Method, register, trainable_count


def build(cfg, base, enc):
    pcfg = PrefixConfig(num_virtual_tokens=cfg.prefix_len, prefix_projection=cfg.reparam == "mlp",
                        encoder_hidden_size=cfg.encoder_hidden_size, depth=cfg.depth, init=cfg.init,
                        init_text=cfg.init_text if cfg.init == "text" else None,
                        prefix_dropout=cfg.prefix_dropout)
    return PrefixTuner(base, pcfg, tokenizer=enc)


def build_infix(cfg, base, enc):
    return InfixTuner(base, cfg.prefix_len, prefix_projection=cfg.reparam == "mlp",
                      encoder_hidden_size=cfg.encoder_hidden_size)


def infix_objective(net, base):
    from ..train import InfixObjective
    return InfixObjective(net, EOT)


def keep(net, cfg, run_dir, scored_bf16: bool) -> int:
    """Drop the MLP (under the autocast the test set was scored with, so that the saved table reproduces its
    predictions exactly), save the table in `run_dir/<position>/`, and count what a deployed run keeps: the
    table, and a classifier's head if it trains one."""
    from ..classify import Classifier
    tuner = net.net if isinstance(net, Classifier) else net
    kept = trainable_count(net) - sum(p.numel() for p in tuner.encoder.parameters())
    with autocast(next(tuner.parameters()).device, scored_bf16)():
        tuner.materialize()
    tuner.save(run_dir / cfg.position, base_model_name_or_path=cfg.model)
    return kept + sum(p.numel() for p in tuner.encoder.parameters())


def name_core(cfg) -> str:
    depth = cfg.depth if isinstance(cfg.depth, str) else "layers" + "-".join(map(str, cfg.depth))
    core = f"{cfg.position}-len{cfg.prefix_len}-{depth}-{cfg.reparam}"
    return core + (f"-init{cfg.init}" if cfg.init != "random" else "")


def check(cfg) -> str | None:
    if cfg.init == "text" and not cfg.init_text:
        return 'init=text needs init_text, e.g. --init_text="table-to-text:"'
    return None


def check_infix(cfg) -> str | None:
    from .. import tasks
    if cfg.depth != "all" or tasks.get(cfg.task).kind != "generation" or cfg.init != "random" or cfg.prefix_dropout:
        return ("position=infix (trainable activations between the table and the text) is built for "
                "table-to-text (e2e, webnlg) with depth=all, init=random and no prefix_dropout")
    return check(cfg)


PREFIX = register(Method("prefix", "prefix (length 10, MLP)", build, name_core, keep=keep, check=check,
                         positions=lambda cfg: cfg.prefix_len))
EMBEDDING = register(Method("embedding", "embedding-only prompt", build, name_core, method="prefix",
                            when={"depth": "embedding", "position": "prefix"}, keep=keep, check=check,
                            positions=lambda cfg: cfg.prefix_len))
INFIX = register(Method("infix", "infix", build_infix, name_core, method="prefix", when={"position": "infix"},
                        objective=infix_objective, keep=keep, check=check_infix,
                        positions=lambda cfg: cfg.prefix_len))
