"""The fused CPU kernels (minigpt/fast/kernels.py) compute what their definitions say, checked against fp64,
and the model trains the same prefix with them as without them (bench/ measures speed; no timings here)."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from minigpt import GPT, GPTConfig, fast
from minigpt.fast import kernels
from minigpt.attention import causal_mask
from prefix import PrefixConfig, PrefixTuner

DTYPES = [torch.float32, torch.bfloat16]


def tol(dtype):  # one rounding to bf16 is a relative error of 2^-9
    return dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-3, rtol=2 ** -8)


@pytest.fixture
def compiled():
    """Kernels on (as by default) and known to compile here: a test that needs them fails, not skips."""
    assert kernels.ENABLED and not kernels._broken, "fused kernels are off (MINIGPT_COMPILE=0 or no compiler)"
    yield
    assert not kernels._broken, "compiling a kernel failed during the test"


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_and_its_gradient_match_fp64(compiled, dtype):
    g = torch.Generator().manual_seed(0)
    h = (3 * torch.randn(64, 600, generator=g)).to(dtype).requires_grad_()  # 38,400 >= MIN_NUMEL
    assert kernels.applies(h)
    dy = torch.randn(64, 600, generator=g).to(dtype)
    y = kernels.gelu(h)
    (dh,) = torch.autograd.grad(y, h, dy)
    hd = h.detach().double().requires_grad_()
    ref = F.gelu(hd, approximate="tanh")  # GPT-2's formula, in fp64
    (ref_dh,) = torch.autograd.grad(ref, hd, dy.double())
    assert y.dtype == dh.dtype == dtype and y.shape == h.shape
    torch.testing.assert_close(y.double(), ref, **tol(dtype))
    torch.testing.assert_close(dh.double(), ref_dh, **tol(dtype) if dtype == torch.float32 else
                               dict(atol=2e-2, rtol=2 ** -7))  # bf16: derivative and product each rounded
    with torch.no_grad():  # inference stays eager: no compiler involved
        assert torch.equal(kernels.gelu(h), F.gelu(h, approximate="tanh"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padded", [False, True])
def test_attention_softmax_and_its_gradient_match_fp64(compiled, dtype, padded):
    g = torch.Generator().manual_seed(0)
    tq, tk = 40, 50  # 10 prefix keys: the causal diagonal sits bottom-right
    mask = causal_mask(tq, tk)
    if padded:  # second row: its first 12 keys are padding
        mask = mask & torch.tensor([[True] * tk, [False] * 12 + [True] * (tk - 12)])[:, None, None]
        mask = mask | ~mask.any(-1, keepdim=True)
    bias = torch.zeros(mask.shape).masked_fill(~mask, float("-inf")).view(-1, 1, tq, tk)
    scores = (4 * torch.randn(2, 12, tq, tk, generator=g)).to(dtype).requires_grad_()
    assert kernels.applies(scores)
    dp = torch.randn(2, 12, tq, tk, generator=g).to(dtype)
    p = kernels.softmax(scores, bias, 0.125)
    (ds,) = torch.autograd.grad(p, scores, dp)
    sd = scores.detach().double().requires_grad_()
    ref = torch.softmax(sd * 0.125 + bias.double(), -1)
    (ref_ds,) = torch.autograd.grad(ref, sd, dp.double())
    assert p.dtype == ds.dtype == dtype
    torch.testing.assert_close(p.double(), ref, **tol(dtype))
    torch.testing.assert_close(ds.double(), ref_ds, **tol(dtype))
    assert (p.masked_select(~mask.expand_as(p)) == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_chunk_and_its_gradient_match_fp64(compiled, dtype):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(7, 5003, generator=g)).to(dtype)
    t = torch.tensor([0, 5002, 17, 17, 4000, 1, 2500])
    assert kernels.applies(logits)
    grad = torch.full_like(logits, float("nan"))
    loss = kernels.cross_entropy(logits, t, grad)
    logp = torch.log_softmax(logits.double(), -1)
    ref = -logp.gather(1, t[:, None]).squeeze(1)
    ref_grad = logp.exp()
    ref_grad[torch.arange(7), t] -= 1
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-6)  # fp32 from the logits as given
    torch.testing.assert_close(grad.double(), ref_grad, **tol(dtype))


def test_small_or_disabled_inputs_run_eager(monkeypatch):
    h = torch.randn(4, 96)  # a decoding step's size: below MIN_NUMEL
    assert not kernels.applies(h) and torch.equal(kernels.gelu(h), F.gelu(h, approximate="tanh"))
    small = torch.randn(3, 11)
    assert kernels.cross_entropy(small, torch.tensor([1, 2, 3]), torch.empty_like(small)) is None  # caller's eager code
    big = torch.randn(64, 600)
    monkeypatch.setattr(kernels, "ENABLED", False)  # MINIGPT_COMPILE=0
    assert not kernels.applies(big) and torch.equal(kernels.gelu(big), F.gelu(big, approximate="tanh"))


def test_a_failed_compile_warns_once_and_falls_back(monkeypatch):
    def broken(fn, **kw):
        def call(*args):
            raise RuntimeError("no C++ compiler")
        return call

    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_broken", False)
    monkeypatch.setattr(torch, "compile", broken)
    h = torch.randn(64, 600, requires_grad=True)
    with pytest.warns(UserWarning, match="no C[+][+] compiler"):
        y = kernels.gelu(h)
    assert kernels._broken
    torch.testing.assert_close(y, F.gelu(h, approximate="tanh"), atol=0, rtol=0)
    (dh,) = torch.autograd.grad(y.sum(), h)
    (ref,) = torch.autograd.grad(F.gelu(h, approximate="tanh").sum(), h)
    torch.testing.assert_close(dh, ref, atol=0, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: eager from now on
        s = torch.randn(2, 4, 64, 80, requires_grad=True)
        torch.testing.assert_close(kernels.softmax(s, None, 0.5), torch.softmax(s * 0.5, -1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("depth, padded", [("all", False), ("all", True), ("embedding", True)])
def test_prefix_trains_the_same_with_and_without_kernels(compiled, monkeypatch, tiny_dir, dtype, depth, padded):
    """Loss and prefix gradient of a tiny model with every kernel forced on equal the eager ones: prefix
    or prompt, whole or left-padded batches (a per-example attention mask)."""
    monkeypatch.setattr(kernels, "MIN_NUMEL", 0)  # the tiny model's tensors are small
    x = torch.randint(1, 101, (3, 12))
    mask = torch.ones_like(x)
    if padded:
        mask[1, :5] = mask[2, :2] = 0
    target = x[:, 1:][mask[:, 1:].bool()]
    results = []
    for enabled in (False, True):
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        torch.manual_seed(0)
        tuner = PrefixTuner(fast.enable(GPT.from_pretrained(tiny_dir, dtype=dtype)), PrefixConfig(4, depth=depth))
        h = tuner.hidden_states(x, attention_mask=mask if padded else None)
        loss = tuner.model.loss(h[:, :-1][mask[:, 1:].bool()], target)
        loss.backward()
        results.append((loss.detach(), tuner.encoder.embedding.weight.grad))
    (l0, g0), (l1, g1) = results
    if dtype == torch.float32:
        torch.testing.assert_close(l1, l0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g1, g0, atol=1e-6, rtol=1e-4)
    else:  # a bf16 base: both sides round differently, by about bf16's 2^-9 per operation
        torch.testing.assert_close(l1, l0, atol=0, rtol=1e-2)
        assert (g1 - g0).norm() < 0.05 * g0.norm()


def test_a_compiled_model_traces_the_plain_operations(compiled, monkeypatch):
    """Inside a model that is itself compiled, the kernels step aside; loss and gradients are unchanged."""
    monkeypatch.setattr(kernels, "MIN_NUMEL", 0)
    torch.manual_seed(0)
    model = fast.enable(GPT(GPTConfig(vocab_size=101, n_positions=64, n_embd=32, n_layer=2, n_head=4, dropout=0.0)))
    x = torch.randint(0, 101, (2, 16))

    def loss(x):
        return model.loss(model.hidden_states(x)[:, :-1].flatten(0, 1), x[:, 1:].flatten())

    calls = []
    run = kernels._run
    monkeypatch.setattr(kernels, "_run", lambda fn, *args: calls.append(fn) or run(fn, *args))
    results = []
    for fn in (loss, torch.compile(loss)):
        calls.clear()
        model.zero_grad()
        value = fn(x)
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in model.parameters()], len(calls)))
    (l0, g0, eager_calls), (l1, g1, compiled_calls) = results
    assert eager_calls > 0 and compiled_calls == 0
    torch.testing.assert_close(l1, l0, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
