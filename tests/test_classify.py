"""SST-2 with a decoder: data counts, both heads, and left padding that changes no prediction."""
from __future__ import annotations

import pytest
import torch

from minigpt import GPT, load_tokenizer
from prefix import PrefixConfig, PrefixTuner

from experiments.classify import ClassificationObjective, Classifier, accuracy_f1, encode_example
from experiments.data import load_sst2


@pytest.mark.parametrize("split,n,positives", [("train", 6920, 3610), ("dev", 872, 444), ("test", 1821, 909)])
def test_sst2_counts(split, n, positives):
    rows = load_sst2(split)
    assert len(rows) == n and sum(label for label, _ in rows) == positives


@pytest.fixture(scope="module")
def enc():
    return load_tokenizer()


@pytest.mark.parametrize("head", ["verbalizer", "linear"])
def test_left_padded_batch_predicts_as_one_by_one(tmp_path, enc, head):
    from conftest import hf_model
    hf_model(seed=4, vocab_size=50257, n_positions=128).save_pretrained(tmp_path)  # GPT-2's vocabulary
    model = GPT.from_pretrained(tmp_path)
    torch.manual_seed(0)
    tuner = PrefixTuner(model, PrefixConfig(num_virtual_tokens=4, prefix_projection=True, encoder_hidden_size=8))
    clf = Classifier(tuner, model.lm_head, head, enc, model.config.n_embd).eval()  # no dropout: exact compare
    seqs = [encode_example(enc, s) for s in ("a gem .", "dull , overlong and joyless .", "fine")]
    batched = clf.predict(seqs)
    alone = torch.cat([clf.predict([s]) for s in seqs])
    assert torch.allclose(batched, alone, atol=1e-6)
    # the training objective reads the same last-token logits on right-padded batches
    items = [(s, i % 2) for i, s in enumerate(seqs)]
    loss = ClassificationObjective(clf).loss(clf.hidden_states, items, "cpu")
    expected = -sum(torch.log(alone[i, y]) for i, (_, y) in enumerate(items))
    assert torch.allclose(loss, expected, atol=1e-5)
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert any(n.startswith("net.encoder") for n in trainable)
    assert ("head.weight" in trainable) == (head == "linear")


def test_accuracy_and_macro_f1_by_hand():
    m = accuracy_f1([1, 1, 0, 0], [1, 0, 0, 0])
    assert m["accuracy"] == 75.0
    # class 0: tp 2, fp 0, fn 1 -> F1 0.8; class 1: tp 1, fp 1, fn 0 -> F1 2/3
    assert m["macro_f1"] == pytest.approx(100 * (0.8 + 2 / 3) / 2)
