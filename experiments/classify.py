"""Sentence classification with a decoder (SST-2): the prefix (or fine-tuned model) reads a template
and the class is read off the last real token, in one of two ways:

- `verbalizer`: the next-token logits of the label words (" negative", " positive") after
  `TEMPLATE`; no parameters beyond the prefix.
- `linear`: a linear layer on the last real token's hidden state (as `GPT2ForSequenceClassification`
  does; its weights are trainable and counted).

Training batches are right-padded (each row read at its own last token); prediction batches are
left-padded with an attention mask, so every row ends at the last column.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minigpt import EOT
from minigpt.runtime import evaluating

TEMPLATE = " Review: {sentence} Sentiment:"
LABEL_WORDS = (" negative", " positive")  # label 0, 1
HEADS = ("verbalizer", "linear")


def encode_example(enc, sentence: str) -> list[int]:
    return enc.encode_ordinary(TEMPLATE.format(sentence=sentence))


class Classifier(nn.Module):
    """`net` (a PrefixTuner or a GPT) plus a head mapping the last real token's hidden state to 2 logits."""

    def __init__(self, net: nn.Module, lm_head: nn.Linear, head: str, enc, n_embd: int):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
        self.net = net
        self.head_kind = head
        if head == "linear":
            self.head = nn.Linear(n_embd, 2, bias=False).to(lm_head.weight.device)
            nn.init.normal_(self.head.weight, std=0.02)
        else:
            ids = [enc.encode_ordinary(w) for w in LABEL_WORDS]
            if any(len(i) != 1 for i in ids):
                raise ValueError(f"label words {LABEL_WORDS} must be single tokens, got {ids}")
            self.lm_head = lm_head  # shared with the model (frozen unless fine-tuning)
            self.register_buffer("label_ids", torch.tensor([i[0] for i in ids], device=lm_head.weight.device))

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net.hidden_states(input_ids, attention_mask=attention_mask)

    def logits(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """(N, C) hidden states of the last real tokens -> (N, 2) class logits."""
        if self.head_kind == "linear":
            return self.head(last_hidden.to(self.head.weight.dtype))
        return last_hidden @ self.lm_head.weight[self.label_ids].T  # the label words' next-token logits

    @torch.no_grad()
    def predict(self, sequences: list[list[int]], batch_size: int = 64) -> torch.Tensor:
        """(N, 2) class probabilities; left-padded batches, the same as one by one."""
        device = self.label_ids.device if self.head_kind == "verbalizer" else self.head.weight.device
        out = []
        with evaluating(self):
            for start in range(0, len(sequences), batch_size):
                chunk = sequences[start:start + batch_size]
                T = max(len(s) for s in chunk)
                ids = torch.full((len(chunk), T), EOT, dtype=torch.long)
                mask = torch.zeros(len(chunk), T, dtype=torch.long)
                for r, s in enumerate(chunk):
                    ids[r, T - len(s):], mask[r, T - len(s):] = torch.tensor(s), 1
                h = self.hidden_states(ids.to(device), attention_mask=mask.to(device))[:, -1]  # (B, C)
                out.append(self.logits(h).float().softmax(-1).cpu())
        return torch.cat(out)


class ClassificationObjective:
    """Cross-entropy of the 2-way logits of (token ids, label) items (right-padded batches)."""

    def __init__(self, classifier: Classifier):
        self.classifier = classifier

    @staticmethod
    def length(item) -> int:
        return len(item[0])

    @staticmethod
    def count(items) -> int:
        return len(items)

    def loss(self, hidden, items, device) -> torch.Tensor:
        T = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), T), EOT, dtype=torch.long)
        for r, (x, _) in enumerate(items):
            ids[r, :len(x)] = torch.tensor(x)
        last = torch.tensor([len(x) - 1 for x, _ in items], device=device)
        h = hidden(ids.to(device))  # (B, T, C)
        logits = self.classifier.logits(h[torch.arange(len(items), device=device), last])  # (B, 2)
        labels = torch.tensor([y for _, y in items], device=device)
        return F.cross_entropy(logits.float(), labels, reduction="sum")


def accuracy_f1(pred: list[int], gold: list[int]) -> dict[str, float]:
    """Accuracy and macro-F1 (both 0-100) of binary predictions."""
    acc = sum(p == g for p, g in zip(pred, gold)) / len(gold)
    f1s = []
    for c in (0, 1):
        tp = sum(p == c and g == c for p, g in zip(pred, gold))
        fp = sum(p == c and g != c for p, g in zip(pred, gold))
        fn = sum(p != c and g == c for p, g in zip(pred, gold))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"accuracy": 100 * acc, "macro_f1": 100 * sum(f1s) / 2}
