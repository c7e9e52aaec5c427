"""minigpt: a small, exact GPT-2 whose attention takes prefix keys/values natively."""
from .attention import KVCache, causal_mask
from .config import GPTConfig
from .model import GPT, IGNORE, LMOutput
from .tokenizer import EOT, load_tokenizer
from .weights import CheckpointError

__all__ = ["GPT", "GPTConfig", "IGNORE", "LMOutput", "KVCache", "CheckpointError", "EOT", "causal_mask",
           "load_tokenizer", "fast"]

from . import fast  # noqa: E402  (the speed layer: fast.enable(model))
