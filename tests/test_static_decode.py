"""The static-cache decoder (`decoder="static"` / `"compiled"`, minigpt/fast/decode.py) gives the tokens of
the eager decoder and of transformers' `generate`, with every decoding feature: prefixes of different lengths
per layer, left padding, end-of-text at different steps per row, banned tokens, sampling, infixes, prompt
tuning's embeddings, and models whose blocks carry adapters or LoRA."""
from __future__ import annotations

import pytest
import torch

from minigpt import GPT
from minigpt.fast import decode as static
from prefix import PrefixConfig, PrefixTuner
from prefix.adapter import add_adapters
from prefix.infix import InfixTuner
from prefix.lora import add_lora
from tests.conftest import hf_model

EOS = 7


@pytest.fixture(scope="module")
def ending(tmp_path_factory):
    """(ours, reference): a random model whose end-of-text is likely, so that rows end at different steps."""
    hf = hf_model(seed=3)
    with torch.no_grad():
        hf.transformer.wte.weight[EOS] *= 5
    d = tmp_path_factory.mktemp("ending")
    hf.save_pretrained(d)
    return GPT.from_pretrained(d).eval(), hf.eval()


def padded(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, T - n:], mask[i, T - n:] = torch.randint(8, 101, (n,), generator=g), 1
    return ids, mask


def uneven_prefix(model, seed=0):
    """Per layer a prefix of another length, one layer without."""
    g = torch.Generator().manual_seed(seed)
    c = model.config
    shape = lambda p: (1, c.n_head, p, c.head_dim)  # noqa: E731
    return [(torch.randn(shape(p), generator=g), torch.randn(shape(p), generator=g)) if p else None
            for p in (3, 0, 5)]


def both(model, *args, **kw):
    """The eager result and the static one (asserted equal); returns the eager one."""
    eager = model.generate(*args, **kw)
    got = model.generate(*args, decoder="static", **kw)
    assert torch.equal(got, eager), (got, eager)
    return eager


@pytest.mark.parametrize("num_beams", [1, 3, 5])
def test_static_equals_eager_with_prefixes_padding_and_endings(ending, num_beams):
    ours, _ = ending
    ids, mask = padded([3, 7, 5, 6])
    ended = []
    for prefix in (None, uneven_prefix(ours)):
        for offset in (None, 0):
            out = both(ours, ids, 20, prefix=prefix, attention_mask=mask, position_offset=offset,
                       num_beams=num_beams, eos_token_id=EOS, bad_token_ids=[9], min_new_tokens=2)
            ended += [EOS in row for row in out[:, ids.shape[1]:].tolist()]
    assert any(ended) and not all(ended)  # some rows ended before the limit, others ran to it


def test_static_beam_search_equals_transformers(ending):
    ours, hf = ending
    x = torch.randint(8, 101, (6, 5), generator=torch.Generator().manual_seed(1))
    for lp in (1.0, 0.6):
        got = ours.generate(x, 16, num_beams=4, eos_token_id=EOS, length_penalty=lp, decoder="static")
        ref = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16, num_beams=4, do_sample=False,
                          eos_token_id=EOS, pad_token_id=EOS, length_penalty=lp)
        assert torch.equal(got, ref[:, :got.shape[1]]) and (ref[:, got.shape[1]:] == EOS).all()


@pytest.mark.parametrize("check_every", [1, 3, 100])
def test_how_often_the_host_looks_changes_nothing(ending, check_every):
    ours, _ = ending
    ids, mask = padded([4, 6, 2])
    for n in (1, 4):
        eager = ours.generate(ids, 24, attention_mask=mask, num_beams=n, eos_token_id=EOS)
        got = ours.generate(ids, 24, attention_mask=mask, num_beams=n, eos_token_id=EOS, decoder="static",
                            check_every=check_every)
        assert torch.equal(got, eager)


def test_sampling_draws_the_same_tokens(ending):
    ours, _ = ending
    ids, mask = padded([5, 3])
    kw = dict(attention_mask=mask, do_sample=True, top_p=0.9, temperature=1.3, eos_token_id=EOS)
    a = ours.generate(ids, 12, generator=torch.Generator().manual_seed(4), **kw)
    b = ours.generate(ids, 12, generator=torch.Generator().manual_seed(4), decoder="static", **kw)
    assert torch.equal(a, b)


def test_the_static_step_gives_the_eager_logits(ending):
    """Step by step, the logits of the static cache equal those of the growing cache (to rounding:
    the masked slots add exact zeros, the sums may group differently)."""
    from minigpt import generate as eager
    from minigpt.attention import KVCache
    ours, _ = ending
    ids, mask = padded([4, 6])
    prefix = uneven_prefix(ours)
    with torch.no_grad():
        grow = eager.Stepper(ours, KVCache(ours.config, 2, 6 + 5, prefix=prefix), mask, None)
        first = grow.logits(ids)
        fixed = eager.Stepper(ours, KVCache(ours.config, 2, 6, prefix=prefix), mask, None)
        fixed.logits(ids)
        steps = static.StaticStepper(fixed, 1, 5, compiled=False)
        nxt = first.argmax(-1)
        for _ in range(5):
            a, b = grow.logits(nxt[:, None]), steps.logits(nxt[:, None])
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
            nxt = a.argmax(-1)


def test_infix_and_prompt_tuning_decode_the_same(tiny_dir):
    torch.manual_seed(0)
    model = GPT.from_pretrained(tiny_dir).eval()
    ids, mask = padded([3, 6, 4])
    infix = InfixTuner(model, 3, prefix_projection=False).eval()
    assert torch.equal(infix.generate(ids, 10, attention_mask=mask, num_beams=3),
                       infix.generate(ids, 10, attention_mask=mask, num_beams=3, decoder="static"))
    prompt = PrefixTuner(model, PrefixConfig(num_virtual_tokens=4, depth="embedding")).eval()
    for n in (1, 3):
        assert torch.equal(prompt.generate(ids, 10, attention_mask=mask, num_beams=n),
                           prompt.generate(ids, 10, attention_mask=mask, num_beams=n, decoder="static"))


@pytest.mark.parametrize("method", ["adapters", "lora"])
def test_blocks_with_adapters_or_lora_run_their_own_forward(tiny_dir, method):
    """The static step calls each block: a model with adapters (trained away from zero) or LoRA decodes as
    eagerly, and differently from the plain base (so the additions did run)."""
    torch.manual_seed(0)
    base = GPT.from_pretrained(tiny_dir).eval()
    model = add_adapters(GPT.from_pretrained(tiny_dir), 4) if method == "adapters" else \
        add_lora(GPT.from_pretrained(tiny_dir), rank=2, alpha=4.0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    model.eval()
    ids, mask = padded([4, 6])
    for n in (1, 3):
        got = both(model, ids, 10, attention_mask=mask, num_beams=n)
        assert not torch.equal(got, base.generate(ids, 10, attention_mask=mask, num_beams=n))


def test_the_compiled_step_decodes_the_same(ending):
    """torch.compile of the one-token step (inductor on the CPU here; one CUDA graph a step on a GPU)."""
    ours, _ = ending
    ids, mask = padded([4, 6, 5])
    prefix = uneven_prefix(ours)
    for n in (1, 4):
        eager = ours.generate(ids, 14, prefix=prefix, attention_mask=mask, num_beams=n, eos_token_id=EOS)
        got = ours.generate(ids, 14, prefix=prefix, attention_mask=mask, num_beams=n, eos_token_id=EOS,
                            decoder="compiled")
        assert torch.equal(got, eager)


def test_the_compiled_step_is_kept_and_compiled_once(tiny_dir):
    """Calls with fewer rows, other prompt lengths and beam widths reuse the model's kept cache and its
    compiled step: one graph for all of them; a larger call grows the cache; `release` frees it."""
    from torch._dynamo.utils import counters
    model = GPT.from_pretrained(tiny_dir).eval()
    g = torch.Generator().manual_seed(0)
    graphs = []
    for B, T, n in [(4, 6, 3), (2, 3, 3), (4, 9, 1), (3, 5, 2)]:
        ids = torch.randint(8, 101, (B, T), generator=g)
        got = model.generate(ids, 12, num_beams=n, decoder="compiled")
        assert torch.equal(got, model.generate(ids, 12, num_beams=n))
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] >= 1 and set(graphs) == {graphs[0]}  # (a graph of an earlier model of this shape may serve)
    kept = static._KEPT[model][True][0]
    assert (kept.rows, kept.size) == (12, 64)  # 4 rows x 3 beams; 6 + 12 slots rounded up to 64
    ids = torch.randint(8, 101, (5, 4), generator=g)
    model.generate(ids, 12, num_beams=3, decoder="static")  # more rows: a larger cache (eager step here)
    assert static._KEPT[model][False][0].rows == 15
    static.release(model)
    assert model not in static._KEPT


def test_bad_decoder_arguments_are_refused(ending):
    ours, _ = ending
    x = torch.randint(8, 101, (1, 3))
    with pytest.raises(ValueError, match="decoder='fast'; use 'eager', 'static' or 'compiled'"):
        ours.generate(x, 4, decoder="fast")
    with pytest.raises(ValueError, match="check_every must be an integer >= 1"):
        ours.generate(x, 4, decoder="static", check_every=0)
    with pytest.raises(ValueError, match="max_new_tokens=70 cannot fit"):
        ours.generate(x, 70, decoder="static")
    ours.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            ours.generate(x, 4, decoder="static")
    finally:
        ours.eval()
