"""Pretraining a GPT-2-shaped model on a mixture of corpora, and its model card: training code, kept out of
the model itself (`minigpt.GPT` imports nothing from here).

    python -m minigpt.pretraining --out runs/my-gpt --max-seconds 600      (make pretrain ARGS=...)
    python -m minigpt.pretraining.model_card runs/my-gpt --command "..." --hardware "..."
"""
from .mixture import Mixture, Source
from .train import DEFAULT_MIXTURE, main, slice_loss

__all__ = ["DEFAULT_MIXTURE", "Mixture", "Source", "main", "slice_loss"]
