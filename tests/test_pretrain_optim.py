"""Pretraining's optimizers (AdamW, or Muon for the blocks' matrices) and schedules (cosine, warmup-stable-decay):
which optimizer owns which weight, the learning-rate curves, and extending a WSD run."""
from __future__ import annotations

import json
import math

import pytest
import torch

from minigpt import GPT, GPTConfig
from minigpt.pretraining import main as pretrain
from minigpt.pretraining.optim import lr_scale, make_optimizers
from test_pretrain import same_weights, tiny_args

BLOCK_MATRICES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def owners(opts: list[torch.optim.Optimizer], model: GPT) -> dict[str, list[str]]:
    """parameter name -> the class names of the optimizers that hold it."""
    held = {n: [] for n, _ in model.named_parameters()}
    for opt in opts:
        ids = {id(p) for g in opt.param_groups for p in g["params"]}
        for n, p in model.named_parameters():
            if id(p) in ids:
                held[n].append(type(opt).__name__)
    return held


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = GPT(GPTConfig(vocab_size=64, n_positions=16, n_layer=2, n_head=2, n_embd=32))
    opts = make_optimizers(model, "muon", lr=1e-3, weight_decay=0.1, muon_lr=0.02, muon_weight_decay=0.0)
    held = owners(opts, model)
    muon = sorted(n for n, o in held.items() if o == ["Muon"])
    assert muon == sorted(f"transformer.h.{i}.{m}" for i in range(2) for m in BLOCK_MATRICES)
    assert all(o == ["AdamW"] for n, o in held.items() if n not in muon)  # each weight has one optimizer
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
            "transformer.h.0.attn.c_attn.bias"} <= {n for n, o in held.items() if o == ["AdamW"]}
    assert model.lm_head.weight is model.transformer.wte.weight  # the tied head trains with the embedding
    assert (opts[1].defaults["lr"], opts[1].defaults["momentum"]) == (0.02, 0.95)
    assert all(o == ["AdamW"] for o in owners(make_optimizers(model, "adamw", lr=1e-3, weight_decay=0.1,
                                                              muon_lr=0.02, muon_weight_decay=0.0), model).values())


def test_the_wsd_curve_warms_up_holds_then_decays_linearly_to_the_minimum():
    got = [lr_scale(s, s / 10, warmup_steps=2, min_ratio=0.1, schedule="wsd", decay_frac=0.3) for s in range(11)]
    # warmup (steps 0-1), 1.0 up to 70% of the budget, then linear from 1.0 to 0.1 over the last 30%
    assert got == pytest.approx([0.5, 1, 1, 1, 1, 1, 1, 1, 0.7, 0.4, 0.1])


def test_the_cosine_curve_is_unchanged_by_the_wsd_option():
    got = [lr_scale(s, s / 4, warmup_steps=1, min_ratio=0.0) for s in range(5)]
    assert got == pytest.approx([1, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4), 0])


def test_muon_learns_and_its_state_is_saved(tmp_path):
    pretrain(tiny_args(tmp_path / "run", tmp_path / "cache", "--optimizer", "muon"))
    log = [json.loads(line) for line in (tmp_path / "run" / "pretrain_log.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in log if "val_loss" in r]
    assert vals[-1] < vals[0] - 0.1  # it learns
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)
    assert len(state["muon"]["state"]) == 2 * len(BLOCK_MATRICES)  # a momentum buffer per block matrix
    assert all(set(s) == {"momentum_buffer"} for s in state["muon"]["state"].values())


def test_extending_a_finished_wsd_run_continues_its_stable_phase(tmp_path):
    """A WSD run of 8 steps, extended to 12, ends where a 12-step WSD run ends: the extension resumes from the
    state saved where the 8-step run began to decay, and the decay moves to step 12."""
    cache, wsd = tmp_path / "cache", ("--schedule", "wsd", "--decay-frac", "0.25")
    pretrain(tiny_args(tmp_path / "straight", cache, *wsd, "--max-steps", "12"))
    pretrain(tiny_args(tmp_path / "extended", cache, *wsd))  # 8 steps: stable through step 6, decays over 7
    assert torch.load(tmp_path / "extended" / "stable_state.pt", weights_only=False)["step"] == 7
    assert not same_weights(tmp_path / "straight", tmp_path / "extended")
    pretrain(tiny_args(tmp_path / "extended", cache, *wsd, "--max-steps", "12", "--resume", "--extend"))
    assert same_weights(tmp_path / "straight", tmp_path / "extended")
    assert torch.load(tmp_path / "extended" / "stable_state.pt", weights_only=False)["step"] == 10


def test_extending_a_decayed_wsd_run_without_its_stable_state_is_refused(tmp_path):
    cache, wsd = tmp_path / "cache", ("--schedule", "wsd", "--decay-frac", "0.25")
    pretrain(tiny_args(tmp_path / "run", cache, *wsd))
    (tmp_path / "run" / "stable_state.pt").unlink()
    with pytest.raises(SystemExit, match="is past the start of its decay and .*stable_state.pt.* is missing"):
        pretrain(tiny_args(tmp_path / "run", cache, *wsd, "--max-steps", "12", "--resume", "--extend"))


def test_a_state_saved_before_the_newer_settings_resumes_under_their_defaults(tmp_path):
    cache = tmp_path / "cache"
    pretrain(tiny_args(tmp_path / "straight", cache))
    pretrain(tiny_args(tmp_path / "old", cache, "--stop-after-steps", "3"))
    state = torch.load(tmp_path / "old" / "train_state.pt", weights_only=False)
    for newer in ("optimizer", "muon_lr", "muon_weight_decay", "schedule", "decay_frac"):
        del state["args"][newer]
    torch.save(state, tmp_path / "old" / "train_state.pt")
    pretrain(tiny_args(tmp_path / "old", cache, "--resume", "--save-dtype", "float16"))
    assert same_weights(tmp_path / "straight", tmp_path / "old")


@pytest.mark.parametrize("change, message", [
    (["--optimizer", "muon"], "optimizer: was 'adamw', now 'muon'"),
    (["--schedule", "wsd"], "schedule: was 'cosine', now 'wsd'")])
def test_resuming_with_another_optimizer_or_schedule_is_refused(tmp_path, change, message):
    pretrain(tiny_args(tmp_path / "run", tmp_path / "cache", "--stop-after-steps", "2"))
    with pytest.raises(SystemExit, match=message):
        pretrain(tiny_args(tmp_path / "run", tmp_path / "cache", "--resume", *change))


def test_a_decay_fraction_above_one_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pretrain(tiny_args(tmp_path / "run", tmp_path / "cache", "--schedule", "wsd", "--decay-frac", "1.5"))
    assert "--decay-frac 1.5: the decay is a fraction of the budget, at most 1" in capsys.readouterr().err
