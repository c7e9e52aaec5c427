"""What each exercise must do, checked against the project's own implementation on random inputs."""
from __future__ import annotations

import torch
from einops import rearrange

from minigpt import GPT, GPTConfig
from minigpt.datadir import PROJECT_ROOT
from minigpt.attention import attend
from minigpt.attention import causal_mask as reference_mask
from prefix import PrefixConfig, PrefixTuner
from prefix.encoder import PrefixEncoder

from .grader import Exercise, Wrong, close


def check_causal_mask(causal_mask) -> None:
    for tq, tk in ((1, 1), (4, 4), (3, 7), (1, 5), (5, 9)):
        close(reference_mask(tq, tk), causal_mask(tq, tk), f"causal_mask({tq}, {tk})")


def check_attention(attention_with_prefix) -> None:
    for B, H, P, T, D in ((1, 1, 0, 3, 4), (2, 3, 4, 5, 8), (1, 2, 6, 1, 4)):
        q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
        pk, pv = torch.randn(B, H, P, D), torch.randn(B, H, P, D)
        expected = attend(q, torch.cat([pk, k], 2), torch.cat([pv, v], 2))  # minigpt's, bottom-right causal
        close(expected, attention_with_prefix(q, k, v, pk, pv), f"with P={P} prefix and T={T} tokens")


def random_model(vocab_size: int, n_embd: int, std: float) -> GPT:
    """A tiny 2-layer GPT whose matrices are drawn with `std` (seeded), in eval mode."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, n_positions=32, n_layer=2, n_head=2, n_embd=n_embd)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, std)
    return model


def check_beam_search(beam_search) -> None:
    # larger weights than GPT-2's initialization: beams that differ, scores that do not tie
    model = random_model(vocab_size=40, n_embd=16, std=0.3)
    k = torch.randn(1, 2, 3, 8)
    prefix = [(k, -k)] * 2
    for num_beams, steps in ((1, 4), (3, 5), (5, 3)):
        ids = torch.randint(0, 40, (1, 4))
        expected = model.generate(ids, steps, num_beams=num_beams, prefix=prefix, length_penalty=0.0)
        close(expected, beam_search(model, ids, prefix, num_beams, steps),
              f"{num_beams} beams, {steps} steps", atol=0)


def check_prefix_kv(prefix_kv) -> None:
    L, H, P, D = 3, 2, 4, 5
    table = torch.randn(P, L * 2 * H * D)
    kv = rearrange(table[None], "b p (l two h d) -> l two b h p d", l=L, two=2, h=H)  # as PrefixTuner does
    got = prefix_kv(table, L, H)
    if not isinstance(got, (list, tuple)) or len(got) != L:
        raise Wrong(f"expected a list of {L} (key, value) pairs, one per layer, got {type(got).__name__}"
                    + (f" of {len(got)}" if isinstance(got, (list, tuple)) else ""))
    for layer, pair in enumerate(got):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise Wrong(f"layer {layer}: expected a (key, value) pair")
        close(kv[layer, 0], pair[0], f"layer {layer}'s key", atol=0)
        close(kv[layer, 1], pair[1], f"layer {layer}'s value", atol=0)


def check_reparameterize(reparameterize) -> None:
    encoder = PrefixEncoder(5, 24, token_dim=8, hidden=16)
    first, second = encoder.transform[0], encoder.transform[2]
    with torch.no_grad():
        got = reparameterize(encoder.embedding.weight, first.weight, first.bias, second.weight, second.bias)
        close(encoder(), got, "MLP(P') for a 5 x 8 P', 16 hidden units, 24 outputs")


def check_training(train_prefix) -> None:
    model = random_model(vocab_size=50, n_embd=32, std=0.1)  # a prefix moves its outputs quickly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuner = PrefixTuner(model, PrefixConfig(num_virtual_tokens=4, prefix_projection=True, encoder_hidden_size=32))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (4, 8), generator=g)  # a tiny task to memorize: the same 4 rows each step
    labels = ids.clone()
    labels[:, :3] = -100  # no target on the first tokens (as the table in table-to-text)
    losses = train_prefix(tuner, [(ids, labels)], 60, 1e-2)
    if not isinstance(losses, (list, tuple)) or len(losses) != 60 or not all(isinstance(x, float) for x in losses):
        raise Wrong("expected a list of 60 floats (each step's loss.item())")
    if any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items()):
        raise Wrong("the base model's weights changed: only the prefix's parameters may train")
    if not losses[-1] < 0.6 * losses[0]:
        raise Wrong(f"the loss went from {losses[0]:.3f} to {losses[-1]:.3f} in 60 steps at lr 1e-2; it should "
                    "fall below 60% of where it started")


E2E_STEPS, E2E_TARGET = 60, 3.6  # the solution reaches a dev loss of about 3.2 (6.7 without a prefix)


def check_training_e2e(train_prefix) -> None:
    from contextlib import nullcontext

    from experiments.data import encode_pair, load_e2e
    from experiments.train import LMObjective, collate, dev_loss
    from minigpt import EOT, fast, load_tokenizer
    enc = load_tokenizer()
    model = fast.enable(GPT.from_pretrained(PROJECT_ROOT / "checkpoints" / "minigpt-gutenberg")).eval()
    train = [encode_pair(enc, t, x) for t, x in load_e2e("train")[:E2E_STEPS * 10]]
    dev = [encode_pair(enc, t, x) for t, x in load_e2e("dev")[:100]]
    tuner = PrefixTuner(model, PrefixConfig(num_virtual_tokens=10, prefix_projection=True))
    train_prefix(tuner, [collate(train[i:i + 10], EOT) for i in range(0, len(train), 10)], E2E_STEPS, 1e-3)
    objective = LMObjective(model, pad_id=EOT)
    loss = dev_loss(tuner, objective, dev, 20, nullcontext)
    if not loss < E2E_TARGET:
        bare = dev_loss(model, objective, dev, 20, nullcontext)
        raise Wrong(f"after {E2E_STEPS} steps on {len(train)} E2E pairs at lr 1e-3 the dev loss is {loss:.2f}; it "
                    f"should be below {E2E_TARGET} (without a prefix: {bare:.2f})")


def answer(value, kind: type, what: str):
    """A question's answer, checked for its kind; NotImplementedError while it is still None."""
    if value is None:
        raise NotImplementedError(f"not answered yet: {what}")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise Wrong(f"expected an integer, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise Wrong(f"expected a word, got {value!r}")
    return value


def expect(value, expected, what: str) -> None:
    if value != expected:
        raise Wrong(f"{value!r} is not right ({what})")


def check_q01(value) -> None:
    expect(answer(value, int, "count the True entries of the first row of the causal mask"),
           int(reference_mask(5, 15)[0].sum()), "the first token sees every prefix position, and itself")


def check_q02(value) -> None:
    with torch.device("meta"):
        expected = GPT(GPTConfig.from_name("gpt2")).num_parameters()
    expect(answer(value, int, "build the model and count"), expected, "count them on a model on the meta device")


def check_q03(value) -> None:
    from minigpt.weights import load_config
    c = load_config(PROJECT_ROOT / "checkpoints" / "minigpt-gutenberg")
    expect(answer(value, int, "what the table holds, per layer and position"), 2 * c.n_layer * 10 * c.n_embd,
           "a key and a value per layer and position, each n_embd numbers")


def check_q04(value) -> None:
    from experiments.reports.findings import Plan, compare
    plan = Plan("lowdata", PROJECT_ROOT)
    a, b = plan.arm("e2e", "prefix-n500"), plan.arm("e2e", "finetune-n500")
    d, se = compare(a, b)
    expected = "ahead" if d > 2 * se else "behind" if d < -2 * se else "level"
    expect(answer(value, str, "compare the means with their standard error"), expected,
           "the difference of the means against 2 standard errors")


def check_q05(value) -> None:
    from minigpt import load_tokenizer
    model = GPT.from_pretrained(PROJECT_ROOT / "checkpoints" / "minigpt-gutenberg").eval()
    config = PrefixConfig(10, init="text", init_text="table-to-text:")
    keys = PrefixTuner(model, config, tokenizer=load_tokenizer()).prefix_kv()[0][0]  # layer 0: (1, heads, 10, head_dim)
    expected = len(torch.unique(rearrange(keys, "b h p d -> (b p) (h d)"), dim=0))
    expect(answer(value, int, "build the prefix and count its distinct keys"), expected,
           "a repeated token is not a repeated key")


EXERCISES = [
    Exercise("1.1", "attention", "causal_mask", check_causal_mask,
             "query i may see key j when j <= i + (tk - tq): with a prefix, the diagonal is bottom-right"),
    Exercise("1.2", "attention", "attention_with_prefix", check_attention,
             "scores are q @ K^T / sqrt(Dh) over the P + T keys; -inf where causal_mask(T, P + T) is False"),
    Exercise("2.1", "decoding", "beam_search", check_beam_search,
             "scores add up log-probabilities; keep the best num_beams of all (beam, token) pairs, not per beam"),
    Exercise("3.1", "prefix_table", "prefix_kv", check_prefix_kv,
             "each row holds layer 0's key, layer 0's value, layer 1's key, ...; heads inside each"),
    Exercise("3.2", "prefix_table", "reparameterize", check_reparameterize,
             "tanh(P' @ w1.T + b1) @ w2.T + b2"),
    Exercise("3.3", "training", "train_prefix", check_training,
             "optimize only [p for p in tuner.parameters() if p.requires_grad]; zero_grad every step"),
    Exercise("3.4", "training", "train_prefix", check_training_e2e,
             "the loop of 3.3, unchanged: it should pass once 3.3 does (a few minutes on a CPU)"),
    Exercise("1.q", "questions", "Q01", check_q01, "keys = [prefix; tokens]; the diagonal sits bottom-right"),
    Exercise("2.q", "questions", "Q02", check_q02, "model.num_parameters() counts a shared tensor once"),
    Exercise("3.q", "questions", "Q03", check_q03, "prefix_kv: per layer a key and a value of P x n_embd"),
    Exercise("4.q", "questions", "Q04", check_q04, "a difference counts when it is more than 2 se = "
             "2 sqrt(sd_a^2 / n_a + sd_b^2 / n_b)"),
    Exercise("5.q", "questions", "Q05", check_q05, "each position's key is computed at its own position, after what "
             "precedes it: position embeddings differ"),
]
