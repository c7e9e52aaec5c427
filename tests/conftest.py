"""Shared fixtures: tiny random GPT-2 checkpoints written by the reference implementation itself."""
from __future__ import annotations

import pytest
import torch

ONEDNN = torch.backends.mkldnn.is_available()  # CPU builds of PyTorch have it: frozen linears use it
TINY = dict(vocab_size=101, n_positions=64, n_embd=32, n_layer=3, n_head=4)


def hf_model(seed: int = 0, **shape):
    """A random `transformers.GPT2LMHeadModel` in eval mode (dropout off)."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**{**TINY, **shape}, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Directory holding a tiny random GPT-2 saved by transformers (config.json + model.safetensors)."""
    d = tmp_path_factory.mktemp("tiny-gpt2")
    hf_model().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_pair(tiny_dir):
    """(ours, reference) loaded from the same files, both in eval mode."""
    import transformers

    from minigpt import GPT
    return GPT.from_pretrained(tiny_dir).eval(), transformers.GPT2LMHeadModel.from_pretrained(tiny_dir).eval()
