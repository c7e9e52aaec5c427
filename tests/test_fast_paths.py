"""The fast paths compute what the plain ones do: bf16 CPU attention, the chunked loss, the in-place beam
reorder, a bf16 base under an fp32 prefix, frozen linear layers on oneDNN (bench/ measures their speed;
no timings here)."""
import pytest
import torch
import torch.nn.functional as F

from conftest import ONEDNN
from minigpt import GPT, fast
from minigpt.attention import KVCache, causal_mask
from minigpt.fast.attention import attend
from minigpt.fast.linear import applies, clear_packed, linear, matmul
from minigpt.fast.loss import chunked_cross_entropy
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
    got = chunked_cross_entropy(h, model.lm_head.weight, t, reduction, chunk=5)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-6)
    for a, b in zip(torch.autograd.grad(got, [h, model.lm_head.weight]), grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # what GPT.loss computes once the speed layer is on
        assert torch.allclose(fast.enable(model).loss(h, t, reduction=reduction), ref, atol=1e-5, rtol=1e-6)


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
    tuner = PrefixTuner(fast.enable(GPT.from_pretrained(tiny_dir, dtype=torch.bfloat16)),
                        PrefixConfig(4, prefix_projection=True, encoder_hidden_size=16))
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 24), (2, 3, 24)])
def test_frozen_linear_equals_f_linear_with_input_gradient(dtype, shape):
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(40, 24, generator=g).to(dtype), torch.randn(40, generator=g).to(dtype)
    x = torch.randn(*shape, generator=g).to(dtype).requires_grad_()
    assert applies(x, w, b) == ONEDNN
    dy = torch.randn(*shape[:-1], 40, generator=g).to(dtype)
    got = linear(x, w, b)
    (gx,) = torch.autograd.grad(got, x, dy)
    ref = F.linear(x.double(), w.double(), b.double())  # the exact answer; both sides round to dtype
    (rx,) = torch.autograd.grad(ref, x, dy.double())
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.1, rtol=2e-2)
    assert got.dtype == dtype and gx.dtype == dtype
    torch.testing.assert_close(got.double(), ref, **tol)
    torch.testing.assert_close(gx.double(), rx.double(), **tol)
    torch.testing.assert_close(matmul(dy, w).double(), dy.double() @ w.double(), **tol)
    dy_tracked = dy.clone().requires_grad_()  # outside a backward: differentiable, the plain product
    out = torch.randn(*shape, generator=g).to(dtype)
    (gdy,) = torch.autograd.grad(matmul(dy_tracked, w), dy_tracked, out)
    torch.testing.assert_close(gdy.double(), out.double() @ w.double().t(), **tol)


def test_packed_weight_follows_in_place_changes():
    w = torch.randn(16, 8).bfloat16()
    x = torch.randn(3, 8).bfloat16()
    before = linear(x, w)
    with torch.no_grad():
        w.mul_(2)  # bumps the version counter: repacked
    torch.testing.assert_close(linear(x, w), 2 * before)
    w.data.zero_()  # invisible to the version counter: documented, clear_packed() needed
    clear_packed()
    assert torch.equal(linear(x, w), torch.zeros(3, 16, dtype=torch.bfloat16))


def test_trainable_autocast_and_disabled_take_f_linear():
    w = torch.nn.Parameter(torch.randn(16, 8))
    x = torch.randn(3, 8)
    assert not applies(x, w)  # a weight that trains: F.linear, with its weight gradient
    linear(x, w).sum().backward()
    assert w.grad is not None
    w.requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not applies(x, w) and linear(x, w).dtype == torch.bfloat16  # autocast's bf16, as F.linear
    assert applies(x, w) == ONEDNN
    with fast.switches(onednn=False):  # as MINIGPT_ONEDNN=0
        assert not applies(x, w)
    assert applies(x, w) == ONEDNN  # switched back after the block


def test_frozen_model_trains_a_prefix_like_the_trainable_one(tiny_dir):
    """The prefix gradient through frozen oneDNN layers equals the one through F.linear layers."""
    grads = []
    for frozen in (False, True):
        torch.manual_seed(0)
        tuner = PrefixTuner(fast.enable(GPT.from_pretrained(tiny_dir)), PrefixConfig(4))
        tuner.model.requires_grad_(not frozen)
        assert applies(torch.zeros(1, 32), tuner.model.lm_head.weight) == (frozen and ONEDNN)
        x = torch.randint(1, 101, (2, 7))
        h = tuner.hidden_states(x)
        tuner.model.loss(h[:, :-1].flatten(0, 1), x[:, 1:].flatten()).backward()
        grads.append([p.grad for p in tuner.encoder.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("frozen", [False, True])
def test_chunked_loss_under_autocast_equals_cross_entropy(tiny_dir, frozen):
    """Under bf16 autocast with fp32 weights (PEFT's recipe), the loss is that of autocast's bf16 logits."""
    model = fast.enable(GPT.from_pretrained(tiny_dir).requires_grad_(not frozen))
    h = torch.randn(13, model.config.n_embd, requires_grad=True)
    t = torch.randint(0, model.config.vocab_size, (13,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy(model.lm_head(h).float(), t)
        got = chunked_cross_entropy(h, model.lm_head.weight, t, chunk=5)
    (rg,) = torch.autograd.grad(ref, h)
    (gg,) = torch.autograd.grad(got, h)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gg, rg, atol=2e-3, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_speed_layer_changes_nothing_but_rounding(tiny_dir, dtype):
    """fast.enable(model) against the plain model: logits, a labels= loss and its prefix gradient, and beam
    search tokens (fp32); disable puts the plain parts back."""
    plain = GPT.from_pretrained(tiny_dir, dtype=dtype).eval()
    quick = fast.enable(GPT.from_pretrained(tiny_dir, dtype=dtype).eval())
    assert fast.enabled(quick) and not fast.enabled(plain)
    assert quick.lm_head.weight is quick.transformer.wte.weight  # still tied
    x = torch.randint(1, 101, (3, 12), generator=torch.Generator().manual_seed(0))
    labels = x.clone()
    labels[:, :4] = -100
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.1, rtol=0.05)
    with torch.no_grad():
        torch.testing.assert_close(quick(x).float(), plain(x).float(), **tol)
    grads, losses = [], []
    for model in (plain, quick):
        torch.manual_seed(0)
        tuner = PrefixTuner(model, PrefixConfig(4, prefix_projection=True, encoder_hidden_size=16))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = tuner(x, labels=labels).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in tuner.encoder.parameters()])
    torch.testing.assert_close(losses[1], losses[0], **tol)
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, atol=1e-5 if dtype == torch.float32 else 2e-2, rtol=2e-2)
    if dtype == torch.float32:
        assert torch.equal(quick.generate(x, 6, num_beams=3), plain.generate(x, 6, num_beams=3))
    fast.disable(quick)
    assert not fast.enabled(quick) and type(quick.lm_head) is torch.nn.Linear
