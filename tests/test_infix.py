"""Infix-tuning: trainable keys/values between source and target. Checked against the model reading real
tokens there: an infix set to the keys/values (and final state) that real tokens w produce after x must
give exactly the model's outputs on [x; w; y], in training and in decoding."""
import pytest
import torch
from einops import rearrange

from minigpt import GPT
from prefix.infix import InfixTuner

P = 3


def real_token_infix(model, x, w):
    """The infix table and final state that the tokens w produce after x (one row)."""
    xw = torch.cat([x, w], 1)
    kv = model.layer_kv(xw)  # per layer: (1, H, Ts + P, Dh) keys and values
    Ts = x.shape[1]
    table = torch.stack([torch.stack([k[:, :, Ts:], v[:, :, Ts:]]) for k, v in kv])  # (L, 2, 1, H, P, Dh)
    out = model.hidden_states(xw)[0, -1]  # the last w token's final hidden state
    return rearrange(table, "l two 1 h p d -> p (l two h d)"), out


def tuner_with(model, table, out):
    tuner = InfixTuner(model, P, prefix_projection=False)
    with torch.no_grad():
        tuner.encoder.embedding.weight.copy_(table)
        tuner.out.copy_(out)
    return tuner


@torch.no_grad()
def test_an_infix_of_real_activations_equals_the_model_reading_those_tokens(tiny_dir):
    model = GPT.from_pretrained(tiny_dir).eval()
    g = torch.Generator().manual_seed(0)
    x, w, y = (torch.randint(1, 101, (1, n), generator=g) for n in (5, P, 4))
    tuner = tuner_with(model, *real_token_infix(model, x, w))
    h = tuner.target_hidden(x, torch.ones_like(x), y)  # predicts y[0], y[1], ...
    full = model.hidden_states(torch.cat([x, w, y], 1))[:, x.shape[1] + P - 1:-1]
    torch.testing.assert_close(h, full, atol=1e-5, rtol=1e-5)
    # decoding: the continuation of [x; w], greedy and with beams
    for beams in (1, 3):
        ours = tuner.generate(x, 6, num_beams=beams)
        theirs = model.generate(torch.cat([x, w], 1), 6, num_beams=beams)
        assert torch.equal(ours[:, x.shape[1]:], theirs[:, x.shape[1] + P:])


@torch.no_grad()
def test_a_padded_batch_equals_its_rows_one_by_one(tiny_dir):
    model = GPT.from_pretrained(tiny_dir).eval()
    torch.manual_seed(0)
    tuner = InfixTuner(model, P, prefix_projection=True, encoder_hidden_size=16)
    with torch.no_grad():
        tuner.out.normal_()
    g = torch.Generator().manual_seed(1)
    xs = [torch.randint(1, 101, (n,), generator=g) for n in (6, 3)]
    ys = [torch.randint(1, 101, (n,), generator=g) for n in (2, 5)]
    source = torch.zeros(2, 6, dtype=torch.long)
    source_mask = torch.zeros(2, 6, dtype=torch.long)
    target = torch.zeros(2, 5, dtype=torch.long)
    for i, (x, y) in enumerate(zip(xs, ys)):  # sources left-padded, targets right-padded
        source[i, 6 - len(x):], source_mask[i, 6 - len(x):], target[i, :len(y)] = x, 1, y
    batch = tuner.target_hidden(source, source_mask, target)
    for i, (x, y) in enumerate(zip(xs, ys)):
        alone = tuner.target_hidden(x[None], torch.ones(1, len(x), dtype=torch.long), y[None])
        torch.testing.assert_close(batch[i, :len(y)], alone[0], atol=1e-5, rtol=1e-5)
    generated = tuner.generate(source, 4, attention_mask=source_mask)
    for i, x in enumerate(xs):
        assert torch.equal(generated[i, 6:], tuner.generate(x[None], 4)[0, len(x):])


def test_only_the_infix_trains(tiny_dir):
    model = GPT.from_pretrained(tiny_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuner = InfixTuner(model, P, prefix_projection=True, encoder_hidden_size=16)
    x, y = torch.randint(1, 101, (2, 4)), torch.randint(1, 101, (2, 5))
    labels = y.clone()
    labels[1, 3:] = -100
    opt = torch.optim.AdamW([p for p in tuner.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = tuner.loss(x, torch.ones_like(x), y, labels)
        loss.backward()
        assert tuner.out.grad is not None and all(p.grad is not None for p in tuner.encoder.parameters())
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        h = tuner.target_hidden(x, torch.ones_like(x), y)
        tuner.materialize()  # the MLP's table, the same outputs
        torch.testing.assert_close(tuner.target_hidden(x, torch.ones_like(x), y), h, atol=1e-6, rtol=1e-6)
