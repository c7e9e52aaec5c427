"""prefix: prefix-tuning (Li & Liang 2021) for `minigpt.GPT`, with PEFT-compatible files.

`minigpt` never imports this package: the model takes prefix keys/values as an argument.
"""
from .bank import PrefixBank
from .config import PrefixConfig
from .files import BaseModelWarning, PrefixFileError
from .tuner import PrefixTuner

__all__ = ["PrefixBank", "PrefixConfig", "PrefixTuner", "PrefixFileError", "BaseModelWarning"]
