"""The compiled training loss (`minigpt.fast.step.CompiledLoss`, `compile=on`) equals the eager loss: the
same summed loss and gradients on padded buckets, one compiled graph per bucket, and the training loop
following the same trajectory."""
from __future__ import annotations

import pytest
import torch

from minigpt import GPT, IGNORE
from minigpt.fast.step import LENGTH, TARGETS, CompiledLoss
from prefix import PrefixConfig, PrefixTuner
from test_experiment_run import gpt2_vocab_dir, tiny  # noqa: F401 (a fixture)


def batch(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 101, (B, T), generator=g)
    labels = ids.clone()
    labels[:, :T // 3] = IGNORE  # the source part
    labels[0, T - 2:] = IGNORE  # a shorter row: right padding
    return ids, labels


def grads(net):
    return [p.grad.clone() for p in net.parameters() if p.requires_grad]


@pytest.mark.parametrize("method", ["prefix", "finetune"])
def test_compiled_loss_and_gradients_equal_the_eager_ones(tiny_dir, method):
    torch.manual_seed(0)
    base = GPT.from_pretrained(tiny_dir)
    net = PrefixTuner(base, PrefixConfig(num_virtual_tokens=3)) if method == "prefix" else base
    compiled = CompiledLoss(net.hidden_states, base, rows=4)
    for B, T in ((4, 11), (3, 7)):  # a full batch and a last, smaller one
        ids, labels = batch(B, T)
        eager = base.target_loss(net.hidden_states(ids), labels, reduction="sum")
        eager.backward()
        want = grads(net)
        net.zero_grad()
        got = compiled(ids, labels)
        got.backward()
        torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)
        for a, b in zip(grads(net), want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        net.zero_grad()


def test_batches_pad_into_few_buckets(tiny_dir):
    """Rows to the batch size, lengths to a multiple of LENGTH, targets to a multiple of TARGETS: batches
    of similar length share a bucket (one compiled graph); the targets and their positions are kept."""
    base = GPT.from_pretrained(tiny_dir)
    loss = CompiledLoss(base.hidden_states, base, rows=4)
    ids, labels = batch(3, 9)
    padded, index, targets = loss.bucket(ids, labels)
    assert padded.shape == (4, LENGTH) and index.shape == targets.shape == (TARGETS,)
    assert torch.equal(padded[:3, :9], ids)
    real = (labels[:, 1:] != IGNORE).sum()
    assert (targets != IGNORE).sum() == real and torch.equal(targets[:real], labels[:, 1:][labels[:, 1:] != IGNORE])
    rows, cols = index[:real] // (LENGTH - 1), index[:real] % (LENGTH - 1)  # flat over (rows, LENGTH - 1)
    assert torch.equal(labels[rows, cols + 1], targets[:real])
    for B, T in ((4, 12), (2, 30), (4, 32)):
        loss.bucket(*batch(B, T))
    assert loss.shapes == {(4, LENGTH, TARGETS)}
    with pytest.raises(ValueError, match="a batch of 5 rows does not fit CompiledLoss"):
        loss.bucket(*batch(5, 9))
    ids, labels = batch(2, 9)
    ids[1, 3] = 101  # outside the tiny vocabulary: refused on the host, before the device sees it
    with pytest.raises(ValueError, match=r"input_ids hold ids outside the vocabulary \[0, 101\)"):
        loss.bucket(ids, labels)
    ids, labels = batch(2, 9)
    labels[0, 5] = -3
    with pytest.raises(ValueError, match="labels .other than IGNORE = -100. hold ids outside"):
        loss.bucket(ids, labels)


def test_training_with_compile_on_follows_the_eager_trajectory(tmp_path, gpt2_vocab_dir):
    """The same tiny E2E run with compile=on and off: dev losses equal to rounding."""
    from experiments.run import main as run

    dev = {mode: run(tiny(tmp_path / mode, gpt2_vocab_dir, f"--compile={mode}", "--max_test=2",
                          "--epochs=2", "--patience=0"))["dev_loss"] for mode in ("off", "on")}
    assert len(dev["on"]) == len(dev["off"]) >= 1
    for a, b in zip(dev["on"], dev["off"]):
        assert abs(a - b) < 1e-3 * abs(b), dev
