"""Exercise for notebooks 03 and 05: the training loop of prefix-tuning, written out. Fill in the function
marked EXERCISE, then `make check` (or `python -m course 3.3`)."""
from __future__ import annotations

import torch


def train_prefix(tuner, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int, lr: float) -> list[float]:
    """EXERCISE 3.3. Train the prefix of `tuner` (a `prefix.PrefixTuner`: the base model inside it is frozen)
    for `steps` optimizer steps and return each step's loss as a float.

        batches: (input_ids (B, T), labels (B, T)) pairs, used in turn (batch `step % len(batches)`);
                 labels are -100 where there is no target
        lr:      AdamW's learning rate

    Each step: the loss `tuner(input_ids, labels=labels).loss`, its gradients, one AdamW step. Only the
    parameters with requires_grad=True go to the optimizer; the grader checks that the base model's
    weights are bit-identical afterwards and that the loss fell.

    Hint: zero the gradients every step (opt.zero_grad()), or they add up across steps.
    """
    raise NotImplementedError("EXERCISE 3.3: an AdamW over the trainable parameters, then for each step: "
                              "loss, zero_grad, backward, step")
