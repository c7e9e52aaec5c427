"""PrefixTuner: training touches only the prefix; real-token init, depth, materialize and generate."""
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from minigpt import GPT
from prefix import PrefixConfig, PrefixTuner

P = 4
CONFIGS = {
    "table": PrefixConfig(P),
    "mlp": PrefixConfig(P, prefix_projection=True, encoder_hidden_size=16),
    "embedding": PrefixConfig(P, depth="embedding"),
    "layers": PrefixConfig(P, depth=[1]),
}


class Chars:
    """Tiny tokenizer for the 101-token test vocabulary: one id per character."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 101 for c in text]


@pytest.fixture
def base(tiny_dir):
    return GPT.from_pretrained(tiny_dir).eval()


def ids(*shape, seed=0):
    return torch.randint(1, 101, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", CONFIGS)
def test_training_changes_only_the_prefix(base, name):
    torch.manual_seed(0)
    tuner = PrefixTuner(base, CONFIGS[name]).train()
    base_before = {k: v.clone() for k, v in base.state_dict().items()}
    prefix_before = {k: v.clone() for k, v in tuner.encoder.state_dict().items()}
    # every parameter goes to AdamW, with weight decay: a frozen weight would still move if it had a grad
    opt = torch.optim.AdamW(tuner.parameters(), lr=1e-2, weight_decay=0.1)
    x = ids(2, 8)
    for step in range(3):
        logits = tuner(x)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert all(p.grad is None and not p.requires_grad for p in base.parameters())
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tuner.encoder.parameters())
        opt.step()
    assert all(torch.equal(v, base_before[k]) for k, v in base.state_dict().items())
    assert all(not torch.equal(v, prefix_before[k]) for k, v in tuner.encoder.state_dict().items())


@pytest.mark.parametrize("text, used", [("ab", "ababa"), ("table-to-text:", "table")])
def test_text_init_is_exactly_the_models_keys_values_for_the_text(base, text, used):
    tuner = PrefixTuner(base, PrefixConfig(5, init="text", init_text=text), tokenizer=Chars())
    text_ids = torch.tensor([Chars().encode(used)])  # shorter text is repeated, longer truncated
    for (k, v), (k_ref, v_ref) in zip(tuner.prefix_kv(), base.layer_kv(text_ids)):
        assert torch.equal(k, k_ref) and torch.equal(v, v_ref)
    # so the untrained prefix behaves as if the text were written before the input
    x = ids(2, 6)
    after_text = base(torch.cat([text_ids.expand(2, -1), x], 1))[:, 5:]
    torch.testing.assert_close(tuner(x), after_text, atol=1e-5, rtol=0)


def test_vocab_init_is_the_keys_values_of_random_real_tokens(base):
    tuner = PrefixTuner(base, PrefixConfig(P, init="vocab"))
    # layer 0's key at position p depends only on the token there: recover the tokens from it
    every = base.layer_kv(torch.arange(101)[:, None].expand(101, P))[0][0]  # (101, H, P, Dh)
    key0 = tuner.prefix_kv()[0][0]  # (1, H, P, Dh)
    drawn = (every - key0).abs().amax(dim=(1, 3)).argmin(0)  # (P,)
    for (k, v), (k_ref, v_ref) in zip(tuner.prefix_kv(), base.layer_kv(drawn[None])):
        assert torch.equal(k, k_ref) and torch.equal(v, v_ref)


@pytest.mark.parametrize("name", ["mlp", "embedding"])
def test_text_init_of_mlp_and_prompt_starts_from_token_embeddings(base, name):
    cfg = PrefixConfig.from_dict({**CONFIGS[name].to_dict(), "init": "text", "init_text": "abcd"})
    tuner = PrefixTuner(base, cfg, tokenizer=Chars())
    wanted = base.transformer.wte.weight[torch.tensor(Chars().encode("abcd"))]
    assert torch.equal(tuner.encoder.embedding.weight, wanted)


@pytest.mark.parametrize("name", ["table", "mlp"])
def test_zero_init_gives_zero_keys_values(base, name):
    cfg = PrefixConfig.from_dict({**CONFIGS[name].to_dict(), "init": "zero"})
    kv = PrefixTuner(base, cfg).prefix_kv()
    assert all(not k.any() and not v.any() for k, v in kv)


def test_depth_list_gives_other_layers_no_extra_keys(base):
    tuner = PrefixTuner(base, CONFIGS["layers"])
    kv = tuner.prefix_kv()
    assert kv[0] is None and kv[2] is None and kv[1][0].shape == (1, 4, P, 8)
    seen, outputs = {}, {}
    hooks = [block.register_forward_pre_hook(lambda m, a, kw, i=i: seen.__setitem__(i, kw["prefix"]), with_kwargs=True)
             for i, block in enumerate(base.transformer.h)]
    hooks += [block.register_forward_hook(lambda m, a, out, i=i: outputs.setdefault(i, []).append(out))
              for i, block in enumerate(base.transformer.h)]
    x = ids(2, 6)
    tuner(x)
    assert seen[0] is None and seen[2] is None and seen[1] is not None
    base(x, position_offset=P)  # no prefix at all, real tokens at the same positions
    for h in hooks:
        h.remove()
    assert torch.equal(outputs[0][0], outputs[0][1])  # layer 0 computes exactly what it does without a prefix
    assert not torch.allclose(outputs[1][0], outputs[1][1])


def test_materialize_drops_the_mlp_and_keeps_outputs(base):
    tuner = PrefixTuner(base, CONFIGS["mlp"])
    x = ids(2, 6)
    before, gen_before = tuner(x), tuner.generate(x, 4)
    n_before = sum(p.numel() for p in tuner.encoder.parameters())
    tuner.materialize()
    assert tuner.encoder.transform is None and tuner.config.prefix_projection is False
    assert sum(p.numel() for p in tuner.encoder.parameters()) == P * 3 * 2 * 32 < n_before
    assert torch.equal(tuner(x), before)
    assert torch.equal(tuner.generate(x, 4), gen_before)


def test_materialize_under_autocast_keeps_the_table_the_mlp_computes_there(base):
    """A run that scores under bf16 autocast saves the table its MLP computed there, so the saved prefix
    gives exactly its outputs; a float32 table differs (the MLP's bf16 matmuls round differently)."""
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    tuner = PrefixTuner(base, CONFIGS["mlp"])
    with torch.no_grad():
        for p in tuner.encoder.parameters():  # a trained MLP's size of values, not the tiny init
            p.normal_(0, 1)
    x = ids(2, 6)
    with bf16:
        scored = tuner(x)
    fp32_table = PrefixTuner(base, CONFIGS["mlp"])
    fp32_table.load_state_dict(tuner.state_dict())
    fp32_table.materialize()
    with bf16:
        tuner.materialize()
        assert torch.equal(tuner(x), scored)
        assert not torch.equal(fp32_table(x), scored)  # the premise: without it the outputs would differ
    assert tuner.encoder.embedding.weight.dtype == torch.float32  # stored as float32, as a table always is


def test_prompt_tuning_equals_a_prefix_of_its_virtual_tokens_keys_values(base):
    tuner = PrefixTuner(base, CONFIGS["embedding"])
    x = ids(2, 6)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    via_embeds = tuner(x, mask)  # virtual embeddings prepended through inputs_embeds
    via_prefix = base(x, prefix=tuner.prefix_kv(), attention_mask=mask)
    real = mask.bool()  # outputs at padding positions are meaningless in both
    torch.testing.assert_close(via_embeds[real], via_prefix[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_generate_equals_greedy_decoding_with_forward(base, name):
    tuner = PrefixTuner(base, CONFIGS[name]).eval()
    x = ids(2, 5)
    seq = x
    for _ in range(6):
        seq = torch.cat([seq, tuner(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(tuner.generate(x, 6), seq)


def test_hidden_states_feed_the_logits(base):
    tuner = PrefixTuner(base, CONFIGS["embedding"])
    x = ids(2, 5)
    h = tuner.hidden_states(x)
    assert h.shape == (2, 5, 32)
    assert torch.equal(base.lm_head(h), tuner(x))


def test_trainable_summary(base):
    tuner = PrefixTuner(base, CONFIGS["table"])
    n, total = P * 3 * 2 * 32, base.num_parameters() + P * 3 * 2 * 32
    assert tuner.trainable_summary() == (f"trainable params: {n:,} || all params: {total:,} || "
                                         f"trainable%: {100 * n / total:.4f}")


@pytest.mark.parametrize("name", ["table", "embedding"])
def test_one_prefix_row_serves_the_batch_like_a_copy_per_example(base, name):
    """Without active dropout the prefix is one row the model broadcasts; outputs and gradients equal
    those of the same prefix copied to every example."""
    tuner = PrefixTuner(base, CONFIGS[name]).eval()  # the base's own dropout off: exact compare
    x = ids(3, 6)
    if name == "table":
        assert all(k.shape[0] == 1 and v.shape[0] == 1 for k, v in tuner.prefix_kv(3))
    h = tuner.hidden_states(x)
    (grad,) = torch.autograd.grad(h.square().sum(), tuner.encoder.embedding.weight)
    table = tuner.encoder.embedding.weight
    copies = table[None].expand(3, -1, -1).clone()  # (B, P, width): one copy per example
    if name == "table":
        kv = rearrange(copies, "b p (l two h d) -> l two b h p d", l=3, two=2, h=4)  # (L, 2, B, H, P, Dh)
        h_ref = base.hidden_states(x, prefix=[(k, v) for k, v in kv])
    else:
        embeds = torch.cat([copies, base.transformer.wte(x)], 1)
        h_ref = base.hidden_states(inputs_embeds=embeds, position_offset=0)[:, P:]
    (grad_ref,) = torch.autograd.grad(h_ref.square().sum(), table)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, grad_ref, atol=1e-5, rtol=1e-5)


def test_prefix_dropout_draws_a_mask_per_example_in_training_only(base):
    tuner = PrefixTuner(base, PrefixConfig(P, prefix_dropout=0.5)).train()
    k, _ = tuner.prefix_kv(4)[0]
    assert k.shape[0] == 4 and not torch.equal(k[0], k[1])  # (B, H, P, Dh), masks differ per example
    k, _ = tuner.eval().prefix_kv(4)[0]
    assert k.shape[0] == 1  # eval: no dropout, one row for the batch
