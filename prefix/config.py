"""What a prefix is: its length, where it enters the model, how it is parameterized and initialized.

Field names follow PEFT's `PrefixTuningConfig` where the concept is the same (`num_virtual_tokens`,
`prefix_projection`, `encoder_hidden_size`), and its defaults too (`prefix_projection=False`), except
`encoder_hidden_size`, which defaults to the paper's 512 (PEFT: the model width).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

INITS = ("random", "zero", "vocab", "text")


@dataclass
class PrefixConfig:
    """Settings of one prefix.

    num_virtual_tokens: prefix length P.
    prefix_projection: False = the per-layer keys/values are a free table (P, n_layer·2·d_model);
        True = the paper's reparameterization MLP(P') with P' a (P, d_model) table and
        MLP = Linear(d_model, encoder_hidden_size) -> tanh -> Linear(encoder_hidden_size, n_layer·2·d_model).
    depth: "all" = every layer gets prefix keys/values; a list of layer indices = only those layers;
        "embedding" = P virtual token embeddings before the input (prompt tuning, the paper's EMB-n):
        deeper layers compute their keys/values from them. PEFT's prompt tuning has no MLP; here one may
        compute the prompt (prefix_projection=True, width d_model), to separate depth from reparameterization.
    init: "random" (PEFT's: N(0, 1) table, default-initialized MLP), "zero" (table or the MLP's last
        layer zero, as PEFT's init_weights="zero"), "vocab" (random real tokens), "text" (`init_text`).
        For "vocab"/"text" the direct table starts as the keys/values the model computes for those
        tokens; the MLP's input table and the "embedding" prompt start as their token embeddings.
        Text shorter than P is repeated, longer is truncated (as PEFT's prompt tuning does).
    prefix_dropout: dropout on the prefix table (keys/values, or the embedding prompt) in training.
    """

    num_virtual_tokens: int = 10
    prefix_projection: bool = False
    encoder_hidden_size: int = 512
    depth: str | list[int] = "all"
    init: str = "random"
    init_text: str | None = None
    prefix_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens <= 0:
            raise ValueError(f"num_virtual_tokens must be a positive integer, got {self.num_virtual_tokens!r}")
        if self.encoder_hidden_size <= 0:
            raise ValueError(f"encoder_hidden_size must be positive, got {self.encoder_hidden_size}")
        if not 0.0 <= self.prefix_dropout < 1.0:
            raise ValueError(f"prefix_dropout must be in [0, 1), got {self.prefix_dropout}")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r}; choose one of {', '.join(INITS)}")
        if self.init == "text" and not self.init_text:
            raise ValueError('init="text" needs init_text, e.g. init_text="table-to-text:"')
        if self.init != "text" and self.init_text is not None:
            raise ValueError(f'init_text is only used with init="text" (init is {self.init!r}); drop one of them')
        if isinstance(self.depth, str):
            if self.depth not in ("all", "embedding"):
                raise ValueError(f'depth={self.depth!r}; use "all", "embedding" or a list of layer indices')
        else:
            layers = list(self.depth)
            if not layers or not all(isinstance(i, int) and i >= 0 for i in layers):
                raise ValueError(f"depth as a list must hold one or more layer indices >= 0, got {self.depth!r}")
            if len(set(layers)) != len(layers):
                raise ValueError(f"depth lists a layer twice: {self.depth!r}")
            self.depth = sorted(layers)

    def layers(self, n_layer: int) -> list[int]:
        """Indices of the layers that receive prefix keys/values from the table ([] for "embedding")."""
        if self.depth == "all":
            return list(range(n_layer))
        if self.depth == "embedding":
            return []
        if max(self.depth) >= n_layer:
            raise ValueError(f"depth={self.depth} names layers that do not exist: the model has {n_layer} "
                             f"layers (0..{n_layer - 1})")
        return list(self.depth)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PrefixConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown PrefixConfig fields: {', '.join(unknown)}")
        return cls(**d)
