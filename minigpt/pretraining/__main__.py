"""`python -m minigpt.pretraining ...`: see minigpt/pretraining/train.py."""
from ..fast.allocator import keep_freed_memory
from .train import main

keep_freed_memory()  # a training process: reuse freed memory across steps (minigpt/fast/allocator.py)
main()
