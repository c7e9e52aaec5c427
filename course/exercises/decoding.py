"""Exercise for notebook 02 (decoding): beam search with a prefix. Fill in the function marked EXERCISE, then
`make check` (or `python -m course 2.1`)."""
from __future__ import annotations

import torch


@torch.no_grad()
def beam_search(model, ids: torch.Tensor, prefix, num_beams: int, steps: int) -> torch.Tensor:
    """EXERCISE 2.1. Beam search for exactly `steps` new tokens (no end-of-text), one prompt, with a prefix.

        model:   a minigpt GPT; `model(tokens, prefix=prefix)` gives the logits (B, T, vocab), where the
                 prefix (one (key, value) per layer, each (1, H, P, Dh)) is shared by every row
        ids:     (1, T) the prompt
        returns: (1, T + steps): the prompt and the continuation with the highest total log-probability
                 among the `num_beams` kept at each step

    Keep `num_beams` running sequences and their scores (summed log-probabilities). At each step score every
    sequence's every next token, keep the `num_beams` best (sequence, token) pairs over all of them (at the
    first step there is one sequence: the prompt). Running the whole sequence again each step is fine here
    (the KV cache only makes it faster).

    Hint: log_softmax of the last position's logits; add each beam's score as a column; flatten to
    (beams * vocab) and take topk; a flat index i is beam i // vocab, token i % vocab.
    """
    raise NotImplementedError("EXERCISE 2.1: score every (beam, next token) pair by summed log-probability and "
                              "keep the num_beams best, `steps` times")
