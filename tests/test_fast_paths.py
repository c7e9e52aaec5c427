"""The fast paths compute what the plain ones do: bf16 CPU attention, the chunked loss, the in-place beam
reorder, a bf16 base under an fp32 prefix (bench/ measures their speed; no timings here)."""
import pytest
import torch
import torch.nn.functional as F

from minigpt import GPT
from minigpt.attention import KVCache, attend, causal_mask
from prefix import PrefixConfig, PrefixTuner


@pytest.mark.parametrize("tq, tk, padded", [(6, 6, False), (6, 9, False), (1, 9, False), (6, 9, True)])
def test_bf16_cpu_attention_matches_fp32_sdpa_bottom_right(tq, tk, padded):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, t, 8, generator=g) for t in (tq, tk, tk))
    mask = causal_mask(tq, tk)  # the reference gets the bottom-right causal rule as a plain mask
    if padded:
        mask = mask & torch.tensor([[True] * tk, [False] * 2 + [True] * (tk - 2)])[:, None, None]
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    for fp32 in (True, False):
        x = (q, k, v) if fp32 else (q.bfloat16(), k.bfloat16(), v.bfloat16())
        got = attend(*x, mask if padded else None)
        torch.testing.assert_close(got.float(), ref, atol=1e-6 if fp32 else 3e-2, rtol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_chunked_loss_equals_cross_entropy_of_the_logits(tiny_pair, reduction):
    model, _ = tiny_pair
    model = GPT(model.config)  # trainable: the tied head/embedding gets a gradient too
    h = torch.randn(13, model.config.n_embd, requires_grad=True)
    t = torch.randint(0, model.config.vocab_size, (13,))
    ref = F.cross_entropy(model.lm_head(h), t, reduction=reduction)
    grads = torch.autograd.grad(ref, [h, model.lm_head.weight])
    got = model.loss(h, t, reduction=reduction, chunk=5)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-6)
    for a, b in zip(torch.autograd.grad(got, [h, model.lm_head.weight]), grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model.loss(h, t, reduction=reduction), ref, atol=1e-5, rtol=1e-6)


def test_beam_reorder_in_place_equals_index_select(tiny_pair):
    model, _ = tiny_pair
    cache = KVCache(model.config, 2, 6, prefix=[(torch.randn(1, 4, 3, 8),) * 2] * model.config.n_layer)
    for layer in range(model.config.n_layer):
        cache.append(layer, torch.randn(2, 4, 2, 8), torch.randn(2, 4, 2, 8))
    for index in (torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([3, 0, 1, 3, 5, 4])):  # grow, then shuffle
        want = [k[index, :, :5].clone() for k in cache.k]
        cache.reorder(index)
        assert all(torch.equal(k[:, :, :5], w) for k, w in zip(cache.k, want))


def test_bf16_base_trains_an_fp32_prefix(tiny_dir):
    tuner = PrefixTuner(GPT.from_pretrained(tiny_dir, dtype=torch.bfloat16), PrefixConfig(4, prefix_projection=True,
                                                                                         encoder_hidden_size=16))
    ref = PrefixTuner(GPT.from_pretrained(tiny_dir), PrefixConfig(4, prefix_projection=True, encoder_hidden_size=16))
    ref.encoder.load_state_dict(tuner.encoder.state_dict())
    assert all(p.dtype == torch.float32 for p in tuner.encoder.parameters())
    x = torch.randint(1, 101, (2, 7))
    h = tuner.hidden_states(x)
    assert h.dtype == torch.bfloat16
    torch.testing.assert_close(h.float(), ref.hidden_states(x), atol=0.1, rtol=0.05)
    tuner.model.loss(h[:, :-1].flatten(0, 1), x[:, 1:].flatten()).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in tuner.encoder.parameters())
    assert all(p.grad is None for p in tuner.model.parameters())
