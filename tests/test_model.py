"""minigpt.GPT against transformers.GPT2LMHeadModel: logits, prefixes as past key/values, invariants."""
from __future__ import annotations

import pytest
import torch
import transformers
from transformers import DynamicCache

from minigpt import GPT, GPTConfig, fast
from minigpt.fast.linear import applies
from conftest import ONEDNN, hf_model


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "bin-bare-keys"])
def test_logits_match_reference_tiny(tmp_path, fmt):
    hf = hf_model(seed=1)
    hf.save_pretrained(tmp_path)
    if fmt != "safetensors":  # the .bin layout of older transformers / OpenAI's conversion
        (tmp_path / "model.safetensors").unlink()
        sd = hf.state_dict()
        if fmt == "bin-bare-keys":  # original `gpt2` files: no `transformer.` and mask buffers
            sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
            sd["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        torch.save(sd, tmp_path / "pytorch_model.bin")
    ours = GPT.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 101, (3, 17))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max() <= 1e-4


@pytest.mark.parametrize("frozen", [False, True])  # frozen + the speed layer: oneDNN linear layers (minigpt/fast)
def test_logits_match_reference_gpt2_small_shape(tmp_path, frozen):
    hf = hf_model(seed=2, vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    hf.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(tmp_path).eval().requires_grad_(not frozen)
    if frozen:
        fast.enable(ours)
    assert applies(torch.zeros(1, 768), ours.lm_head.weight) == (frozen and ONEDNN)
    assert ours.config == GPTConfig.from_name("gpt2", dropout=ours.config.dropout)
    x = torch.randint(0, 50257, (2, 24))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max() <= 1e-4


def test_save_pretrained_loads_in_transformers(tmp_path, tiny_pair):
    ours, hf = tiny_pair
    ours.save_pretrained(tmp_path)
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        assert torch.equal(back(x).logits, hf(x).logits)


def random_prefix(model, batch, P, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    return [(torch.randn(batch, c.n_head, P, c.head_dim, generator=g),
             torch.randn(batch, c.n_head, P, c.head_dim, generator=g)) for _ in range(c.n_layer)]


def test_prefix_matches_reference_past_key_values(tiny_pair):
    ours, hf = tiny_pair
    B, P, T = 3, 5, 8
    prefix = random_prefix(ours, B, P)
    x = torch.randint(0, 101, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, :3] = 0  # left padding in one row
    # reference: the prefix as a cache, positions starting at P, mask covering prefix + tokens
    cache = DynamicCache(ddp_cache_data=[(k.clone(), v.clone()) for k, v in prefix])
    pos = (mask.cumsum(-1) - 1).clamp(min=0) + P
    ref = hf(x, past_key_values=cache, attention_mask=torch.cat([torch.ones(B, P, dtype=torch.long), mask], 1),
             position_ids=pos).logits
    with torch.no_grad():
        got = ours(x, prefix=prefix, attention_mask=mask)
    real = mask.bool()
    assert (got - ref)[real].abs().max() <= 1e-5


def test_batch_one_prefix_broadcasts(tiny_pair):
    ours, _ = tiny_pair
    prefix = random_prefix(ours, 1, 4)
    x = torch.randint(0, 101, (3, 6))
    with torch.no_grad():
        shared = ours(x, prefix=prefix)
        copied = ours(x, prefix=[(k.expand(3, -1, -1, -1), v.expand(3, -1, -1, -1)) for k, v in prefix])
    assert torch.equal(shared, copied)


def test_tokens_as_prefix_reproduce_the_continuation(tiny_pair):
    """A's per-layer K/V used as the prefix for B give B's logits from running A+B."""
    ours, _ = tiny_pair
    a, b = torch.randint(0, 101, (2, 7)), torch.randint(0, 101, (2, 5))
    with torch.no_grad():
        full = ours(torch.cat([a, b], 1))[:, 7:]
        split = ours(b, prefix=ours.layer_kv(a), position_offset=7)
    assert (full - split).abs().max() <= 1e-5


def test_layers_without_prefix_see_no_extra_keys(tiny_pair):
    ours, _ = tiny_pair
    x = torch.randint(0, 101, (2, 6))
    with torch.no_grad():
        none = ours(x, prefix=[None] * ours.config.n_layer, position_offset=0)
        plain = ours(x)
    assert torch.equal(none, plain)


def test_cached_decoding_equals_uncached(tiny_pair):
    ours, _ = tiny_pair
    prefix = random_prefix(ours, 1, 3)
    x = torch.randint(0, 101, (2, 5))
    with torch.no_grad():
        out = ours.generate(x, 10, prefix=prefix)
        seq = x
        for _ in range(10):  # no cache: rerun the whole sequence each step
            nxt = ours(seq, prefix=prefix)[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


@pytest.mark.parametrize("frozen", [False, True])
def test_greedy_and_beam_match_reference_generate(tiny_pair, tiny_dir, frozen):
    ours, hf = tiny_pair
    if frozen:
        ours = GPT.from_pretrained(tiny_dir).eval().requires_grad_(False)
    x = torch.randint(0, 101, (3, 6))
    with torch.no_grad():
        greedy = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
        assert torch.equal(ours.generate(x, 12), greedy)
        eos = int(greedy[0, 8])  # a token the model actually produces, so beams do end
        for lp in (1.0, 0.6):
            ref = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, num_beams=5,
                              do_sample=False, eos_token_id=eos, pad_token_id=eos, length_penalty=lp,
                              bad_words_ids=[[7]], min_new_tokens=2)
            got = ours.generate(x, 12, num_beams=5, eos_token_id=eos, length_penalty=lp, bad_token_ids=[7],
                                min_new_tokens=2)
            assert torch.equal(got, ref), (got, ref)


@pytest.mark.parametrize("num_beams", [1, 5])
def test_left_padded_batch_equals_one_by_one(tiny_pair, num_beams):
    ours, _ = tiny_pair
    prompts = [torch.randint(1, 101, (n,)) for n in (3, 7, 5)]
    T = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):], mask[i, T - len(p):] = p, 1
    prefix = random_prefix(ours, 1, 2)
    batched = ours.generate(ids, 8, prefix=prefix, attention_mask=mask, num_beams=num_beams, eos_token_id=None)
    for i, p in enumerate(prompts):
        alone = ours.generate(p[None], 8, prefix=prefix, num_beams=num_beams, eos_token_id=None)
        assert torch.equal(batched[i, T:], alone[0, len(p):])


def test_settled_rows_leave_the_beam_batch_without_changing_any_output(tmp_path, monkeypatch):
    """Rows end at different steps: each row's beams equal the reference's, decoded alone or in the batch,
    while the batch shrinks as rows settle."""
    from minigpt import generate as gen
    eos, hf = 7, hf_model(seed=3)
    with torch.no_grad():
        hf.transformer.wte.weight[eos] *= 5  # end-of-text likely in some contexts: rows end at different steps
    hf.save_pretrained(tmp_path)
    hf, ours = hf.eval(), GPT.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 101, (8, 5), generator=torch.Generator().manual_seed(1))
    rows = []
    real = gen.Stepper.select
    monkeypatch.setattr(gen.Stepper, "select", lambda self, index: rows.append(index.shape[0]) or real(self, index))
    with torch.no_grad():
        batched = ours.generate(x, 16, num_beams=4, eos_token_id=eos)
        ref = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16, num_beams=4, do_sample=False,
                          eos_token_id=eos, pad_token_id=eos)
        assert torch.equal(batched, ref[:, :batched.shape[1]]) and (ref[:, batched.shape[1]:] == eos).all()
        assert rows[0] == 8 * 4 and min(rows) < 8 * 4 and rows == sorted(rows, reverse=True)  # it did shrink
        rows.clear()
        assert torch.equal(ours.generate(x, 16, num_beams=4, eos_token_id=eos, drop_settled=False), batched)
        assert set(rows) == {8 * 4}  # without dropping, every row runs to the end
        for i in range(len(x)):
            alone = ours.generate(x[i:i + 1], 16, num_beams=4, eos_token_id=eos)
            n = alone.shape[1]
            assert torch.equal(batched[i, :n], alone[0]) and (batched[i, n:] == eos).all()


def test_sampling_is_seeded_and_respects_top_k(tiny_pair):
    ours, _ = tiny_pair
    x = torch.randint(0, 101, (2, 4))
    a = ours.generate(x, 6, do_sample=True, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, ours.generate(x, 6))  # top_k=1 sampling is greedy
    s1 = ours.generate(x, 6, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(3))
    s2 = ours.generate(x, 6, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2)


def test_labels_give_transformers_loss_and_gradient(tiny_pair):
    """`model(ids, labels=...)`: transformers' shifted, -100-ignoring mean loss, and its gradient."""
    ours, ref = tiny_pair
    ids = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, :4] = -100
    out = ours(ids, labels=labels, return_logits=True)
    theirs = ref(input_ids=ids, labels=labels)
    assert abs(out.loss.item() - theirs.loss.item()) <= 1e-5
    assert (out.logits - theirs.logits).abs().max().item() <= 1e-5
    out.loss.backward()
    theirs.loss.backward()
    hf_grad = ref.transformer.h[0].attn.c_attn.weight.grad.t()  # Conv1D stores (in, out)
    diff = (ours.transformer.h[0].attn.c_attn.weight.grad - hf_grad).abs().max()
    ours.zero_grad()
    ref.zero_grad()
    assert diff.item() <= 1e-5
    assert ours(ids, labels=labels, return_logits=False).logits is None


@pytest.mark.parametrize("bad, message", [((2, 8), "labels are"), ("out of vocab", "outside the vocabulary")])
def test_bad_labels_are_refused(tiny_pair, bad, message):
    ours, _ = tiny_pair
    ids = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(bad, dtype=torch.long) if isinstance(bad, tuple) else ids.clone().index_fill_(1, torch.tensor([5]), 101)
    with pytest.raises(ValueError, match=message):
        ours(ids, labels=labels)
