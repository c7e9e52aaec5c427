"""GPT-2 model shapes: one dataclass, presets for the released sizes, and Hugging Face config.json I/O."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# The released GPT-2 family (Radford et al. 2019) and DistilGPT2, as (n_layer, n_head, n_embd).
PRESETS: dict[str, tuple[int, int, int]] = {
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
    "distilgpt2": (6, 12, 768),
}


@dataclass
class GPTConfig:
    """Shape and numerics of a GPT-2 decoder. Defaults are GPT-2 small (124M)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.0  # embedding, attention and residual dropout (HF: embd/attn/resid_pdrop)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_name(cls, name: str, **overrides) -> "GPTConfig":
        """Shape of a released checkpoint: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', 'distilgpt2'."""
        if name not in PRESETS:
            raise ValueError(f"unknown model name {name!r}; known: {', '.join(PRESETS)}")
        n_layer, n_head, n_embd = PRESETS[name]
        return cls(n_layer=n_layer, n_head=n_head, n_embd=n_embd, **overrides)

    @classmethod
    def from_hf(cls, cfg: dict) -> "GPTConfig":
        """Read a Hugging Face GPT-2 `config.json` (as a dict)."""
        model_type = cfg.get("model_type", "gpt2")
        if model_type != "gpt2":
            raise ValueError(f"config.json has model_type={model_type!r}; only 'gpt2' checkpoints are supported")
        act = cfg.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"activation_function={act!r} is not GPT-2's tanh GELU ('gelu_new')")
        if cfg.get("n_inner") not in (None, 4 * cfg.get("n_embd", 768)):
            raise ValueError(f"n_inner={cfg['n_inner']} is not 4 * n_embd; not supported")
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if cfg.get(flag):
                raise ValueError(f"config.json sets {flag}=True, which this GPT-2 does not implement")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in cfg.items() if k in known}
        kwargs["dropout"] = float(cfg.get("resid_pdrop", 0.0))
        return cls(**kwargs)

    def to_hf(self) -> dict:
        """A `config.json` dict that `transformers.GPT2Config` reads back to the same shape."""
        d = asdict(self)
        p = d.pop("dropout")
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            **d,
            "n_ctx": self.n_positions,
            "n_inner": None,
            "activation_function": "gelu_new",
            "resid_pdrop": p,
            "embd_pdrop": p,
            "attn_pdrop": p,
            "initializer_range": 0.02,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
            "tie_word_embeddings": True,
        }
