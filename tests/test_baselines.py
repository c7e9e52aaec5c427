"""The paper's baselines beside prefix-tuning: LoRA matches peft's LoRA (logits, loss, gradients) and merges
into a checkpoint transformers loads with the same logits; zero-initialized adapters leave the base's outputs
unchanged; FT-top2 trains only the top two blocks and ln_f, everything else stays bit-identical."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from experiments.config import parse_cli
from experiments.methods import method_for
from experiments.run import main as run
from minigpt import GPT, GPTConfig
from minigpt.weights import read_state_dict
from prefix.adapter import add_adapters, load_adapters, remove_adapters, save_adapters
from prefix.files import PrefixFileError
from prefix.lora import LoRALinear, add_lora, load_lora, merge_lora, save_lora
from prefix.parts import base_parameter_count
from test_experiment_run import gpt2_vocab_dir, tiny  # noqa: F401 (a fixture)

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

IDS = torch.randint(1, 101, (3, 9), generator=torch.Generator().manual_seed(0))


def peft_lora(tiny_dir, rank, alpha, targets):
    hf = transformers.GPT2LMHeadModel.from_pretrained(tiny_dir).eval()
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, fan_in_fan_out=True)
    torch.manual_seed(1)
    model = peft.get_peft_model(hf, cfg)
    for name, p in model.named_parameters():  # B starts at zero: make the updates count
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return model


def peft_updates(model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'h.0.attn.c_attn': (A, B)} of a peft LoRA model."""
    found = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            key = name.split("transformer.", 1)[1]
            found[key] = (module.lora_A["default"].weight, module.lora_B["default"].weight)
    return found


def loss_and_grads(logits_of, params: dict[str, torch.Tensor]):
    logits = logits_of(IDS)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), IDS[:, 1:].reshape(-1))
    grads = torch.autograd.grad(loss, list(params.values()))
    return logits.detach(), loss.detach(), dict(zip(params, grads))


def check_same(ours, theirs, what):
    (lo, so, go), (lt, st, gt) = ours, theirs
    assert (lo - lt).abs().max() <= 1e-5, f"{what}: logits differ"
    assert abs(so - st) <= 1e-6, f"{what}: loss differs"
    for name in go:
        assert torch.allclose(go[name], gt[name], atol=1e-6, rtol=1e-4), f"{what}: gradient of {name} differs"


@pytest.mark.parametrize("targets", [["c_attn"], ["c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]])
def test_lora_on_whole_projections_matches_peft(tiny_dir, targets):
    theirs = peft_lora(tiny_dir, 4, 8, targets)
    ours = add_lora(GPT.from_pretrained(tiny_dir).eval(), 4, 8, targets)
    mine, peers = {}, {}
    for key, (A, B) in peft_updates(theirs).items():
        update = ours.transformer.get_submodule(key).updates[0]
        with torch.no_grad():
            update.lora_A.weight.copy_(A)
            update.lora_B.weight.copy_(B)
        mine.update({f"{key}.A": update.lora_A.weight, f"{key}.B": update.lora_B.weight})
        peers.update({f"{key}.A": A, f"{key}.B": B})
    assert len(mine) == 2 * 3 * len(targets)  # every target of every one of the 3 blocks
    check_same(loss_and_grads(ours, mine), loss_and_grads(lambda ids: theirs(input_ids=ids).logits, peers),
               "whole projections")


def test_lora_on_query_and_value_is_peft_on_c_attn_with_block_updates(tiny_dir):
    """The LoRA paper's q and v updates (rank r each) are one c_attn update of rank 2r whose B is zero on the
    key's rows: peft computes that one, and the two must agree in logits, loss and gradients."""
    r, alpha = 2, 8
    theirs = peft_lora(tiny_dir, 2 * r, 2 * alpha, ["c_attn"])  # same scale: 2 alpha / 2r
    ours = add_lora(GPT.from_pretrained(tiny_dir).eval(), r, alpha, ["q", "v"])
    n = ours.config.n_embd
    mine, peers = {}, {}
    for key, (A, B) in peft_updates(theirs).items():
        with torch.no_grad():
            B[n:2 * n] = 0  # no update on the key's rows
            B[:n, r:] = 0  # the query's rows use the first r ranks, the value's the last r
            B[2 * n:, :r] = 0
        q, v = ours.transformer.get_submodule(key).updates
        with torch.no_grad():
            q.lora_A.weight.copy_(A[:r]), v.lora_A.weight.copy_(A[r:])
            q.lora_B.weight.copy_(B[:n, :r]), v.lora_B.weight.copy_(B[2 * n:, r:])
        mine.update({f"{key}.q": q.lora_A.weight, f"{key}.v": v.lora_A.weight})
        peers[key] = A  # its first r rows are the query's A, its last r the value's
    lo, so, go = loss_and_grads(ours, mine)
    lt, st, gt = loss_and_grads(lambda ids: theirs(input_ids=ids).logits, peers)
    assert (lo - lt).abs().max() <= 1e-5 and abs(so - st) <= 1e-6
    for key in peers:
        assert torch.allclose(go[f"{key}.q"], gt[key][:r], atol=1e-6, rtol=1e-4)
        assert torch.allclose(go[f"{key}.v"], gt[key][r:], atol=1e-6, rtol=1e-4)


def test_lora_starts_as_the_base_and_trains_only_its_updates(tiny_dir):
    base = GPT.from_pretrained(tiny_dir).eval()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with torch.no_grad():
        expected = base(IDS)
    model = add_lora(base, 4, 32, ["q", "v", "mlp.c_fc"])
    with torch.no_grad():
        assert torch.equal(model(IDS), expected)  # B = 0: exactly the base
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".updates." in n for n in trainable)
    assert base_parameter_count(model) == sum(v.numel() for k, v in before.items() if k != "lm_head.weight")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(IDS, labels=IDS).loss.backward()
    opt.step()
    merge_lora(model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"transformer.h.{i}.{w}.weight" for i in range(3) for w in ("attn.c_attn", "mlp.c_fc")}


def test_merged_lora_saves_a_checkpoint_transformers_loads_with_the_same_logits(tiny_dir, tmp_path):
    model = add_lora(GPT.from_pretrained(tiny_dir).eval(), 4, 32, ["q", "v", "attn.c_proj"])
    torch.manual_seed(2)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            for update in m.updates:
                torch.nn.init.normal_(update.lora_B.weight, std=0.05)
    with torch.no_grad():
        adapted = model(IDS)
    merged = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    with torch.no_grad():
        assert (merged(IDS) - adapted).abs().max() <= 1e-5
    merged.save_pretrained(tmp_path / "merged")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert (hf(IDS).logits - adapted).abs().max() <= 1e-5


def saved_lora(tiny_dir, folder, rank, alpha, targets):
    """A LoRA model whose updates are all non-zero, saved in `folder`."""
    model = add_lora(GPT.from_pretrained(tiny_dir).eval(), rank, alpha, targets)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    save_lora(model, folder)
    return model


def test_lora_files_round_trip_and_a_wrong_shape_is_refused(tiny_dir, tmp_path):
    model = saved_lora(tiny_dir, tmp_path / "lora", 2, 16, ["k", "mlp.c_proj"])
    loaded = load_lora(GPT.from_pretrained(tiny_dir).eval(), tmp_path / "lora")
    with torch.no_grad():
        assert torch.equal(loaded(IDS), model(IDS))
    other = GPT(GPTConfig(vocab_size=101, n_positions=64, n_embd=16, n_layer=3, n_head=4))
    with pytest.raises(PrefixFileError, match="another model shape"):
        load_lora(other, tmp_path / "lora")
    (tmp_path / "lora" / "lora.safetensors").write_bytes(b"not a file")
    with pytest.raises(PrefixFileError, match="lora.safetensors"):
        load_lora(GPT.from_pretrained(tiny_dir), tmp_path / "lora")


@pytest.mark.parametrize("targets", [["q", "c_attn"], ["q", "q"], ["query"], []])
def test_lora_targets_that_cannot_be_used_are_refused(tiny_dir, targets):
    with pytest.raises(ValueError, match="LoRA targets"):
        add_lora(GPT.from_pretrained(tiny_dir), 4, 32, targets)


def test_zero_initialized_adapters_leave_the_base_unchanged_and_only_they_train(tiny_dir, tmp_path):
    base = GPT.from_pretrained(tiny_dir).eval()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with torch.no_grad():
        expected = base(IDS)
    model = add_adapters(base, 3)
    with torch.no_grad():
        assert torch.equal(model(IDS), expected)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # the first step moves `up` off zero; the second moves `down` too
        model(IDS, labels=IDS).loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        trained = model(IDS)
    assert not torch.allclose(trained, expected)
    save_adapters(model, tmp_path)
    remove_adapters(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the base bit-identical
    loaded = load_adapters(GPT.from_pretrained(tiny_dir).eval(), tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(IDS), trained)


@pytest.mark.parametrize("size, share", [(2, 0.1), (70, 3.0)])
def test_adapter_sizes_give_the_papers_shares_on_the_shipped_shape(size, share):
    with torch.device("meta"):
        model = add_adapters(GPT(GPTConfig(vocab_size=50257, n_positions=512, n_embd=256, n_layer=8, n_head=4)), size)
    added = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert added == 8 * 2 * (2 * 256 * size + size + 256)
    assert abs(100 * added / base_parameter_count(model) - share) <= 0.1 * share


def test_fttop_trains_the_top_two_blocks_and_ln_f_and_nothing_else(tiny_dir):
    model = GPT.from_pretrained(tiny_dir).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method_for(parse_cli(["--method=fttop"])).build(parse_cli(["--method=fttop"]), model, None)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(IDS, labels=IDS).loss.backward()
    opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    top = {k for k in before if k.startswith(("transformer.h.1.", "transformer.h.2.", "transformer.ln_f."))}
    assert changed == top  # 3 blocks: the top two (1 and 2) and ln_f changed; embeddings, block 0: bit-identical


@pytest.mark.parametrize("extra, kept_file", [
    (["--method=lora", "--lora_targets=q,v,mlp.c_fc"], "lora/lora.safetensors"),
    (["--method=adapter", "--adapter_size=3"], "adapters/adapters.safetensors"),
    (["--method=fttop", "--top_layers=1"], "trained.safetensors"),
])
def test_each_baseline_runs_end_to_end_and_keeps_what_it_trained(tmp_path, gpt2_vocab_dir, extra, kept_file):
    metrics = run(tiny(tmp_path, gpt2_vocab_dir, *extra))
    cfg = parse_cli(tiny(tmp_path, gpt2_vocab_dir, *extra))
    kept = load_file(tmp_path / "runs" / cfg.run_name / kept_file)
    assert metrics["kept_params"] == metrics["trainable_params"] == sum(v.numel() for v in kept.values()) > 0
    assert metrics["total_params"] == sum(v.numel() for k, v in read_state_dict(gpt2_vocab_dir).items()
                                          if k != "lm_head.weight")  # the base's own (lm_head is tied)
    assert len((tmp_path / "results" / cfg.run_name / "predictions.txt").read_text().splitlines()) == 3


def test_fttop_asking_for_more_blocks_than_the_model_has_is_refused(tmp_path, gpt2_vocab_dir):
    with pytest.raises(SystemExit, match="top_layers=5 but .* has 2 blocks"):
        run(tiny(tmp_path, gpt2_vocab_dir, "--method=fttop", "--top_layers=5"))


def test_a_runs_lora_merges_from_the_command_line_into_a_checkpoint_transformers_loads(tiny_dir, tmp_path):
    from prefix.lora import main as merge
    model = saved_lora(tiny_dir, tmp_path / "lora", 2, 8, ["q", "v"])
    merge(["--base", str(tiny_dir), "--lora", str(tmp_path / "lora"), "--out", str(tmp_path / "merged")])
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert (hf(IDS).logits - model(IDS)).abs().max() <= 1e-5
    with pytest.raises(SystemExit, match="already holds a checkpoint"):
        merge(["--base", str(tiny_dir), "--lora", str(tmp_path / "lora"), "--out", str(tmp_path / "merged")])
