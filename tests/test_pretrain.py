"""Pretraining: a tiny run end to end, exact resume, and the shipped checkpoint's recorded quality."""
from __future__ import annotations

import copy
import math
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from minigpt import GPT, GPTConfig
from minigpt.datadir import PROJECT_ROOT, find_data
from minigpt.pretraining import main as pretrain, slice_loss
from minigpt.pretraining.padding import pad_vocab, unpadded
from minigpt.pretraining.train import lm_loss

SHIPPED = PROJECT_ROOT / "checkpoints" / "minigpt-gutenberg"


def tiny_args(out, cache, *extra):
    corpus = find_data("corpus/tinyshakespeare/input.txt")
    assert corpus is not None, "offline corpus not found (../shared/data/corpus)"
    return ["--corpus", str(corpus), "--out", str(out), "--cache-dir", str(cache), "--n-layer", "2",
            "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "4", "--max-steps", "8",
            "--eval-interval", "4", "--eval-windows", "8", "--warmup-steps", "2", "--lr", "3e-3", "--no-bf16",
            "--device", "cpu", "--peak-tflops", "0.5", *extra]  # a given peak: no matmul benchmark per run


def test_tiny_pretraining_run(tmp_path):
    result = pretrain(tiny_args(tmp_path / "run", tmp_path / "cache"))
    log = [json.loads(line) for line in (tmp_path / "run" / "pretrain_log.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in log if "val_loss" in r]
    assert vals[-1] < vals[0]  # it learns
    assert result["tokens_seen"] == 8 * 4 * 32
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "run").eval()  # HF format
    ours = GPT.from_pretrained(tmp_path / "run").eval()
    x = torch.randint(0, 50257, (1, 9))
    with torch.no_grad():
        assert (hf(x).logits - ours(x)).abs().max() < 1e-3  # fp16 weights, same numbers both sides


def same_weights(a: Path, b: Path) -> bool:
    """Whether two checkpoint folders hold bit-identical weights under the same names."""
    a, b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("optimizer", [[], ["--optimizer", "muon"], ["--schedule", "wsd"]])
def test_resume_after_interrupt_equals_uninterrupted(tmp_path, optimizer):
    cache = tmp_path / "cache"
    pretrain(tiny_args(tmp_path / "straight", cache, *optimizer))
    assert pretrain(tiny_args(tmp_path / "resumed", cache, "--stop-after-steps", "3", *optimizer)) == {}
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    pretrain(tiny_args(tmp_path / "resumed", cache, "--resume", "--save-dtype", "float16", *optimizer))
    assert same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_ctrl_c_finishes_the_step_saves_and_resuming_equals_uninterrupted(tmp_path, monkeypatch):
    import os
    import signal

    from minigpt.pretraining import train as train_mod
    cache = tmp_path / "cache"
    pretrain(tiny_args(tmp_path / "straight", cache))
    real, calls = train_mod.train_step, {"n": 0}

    def step_then_ctrl_c(run):  # Ctrl-C arrives as step 3's update is done but before it is counted
        out = real(run)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return out
    monkeypatch.setattr(train_mod, "train_step", step_then_ctrl_c)
    with pytest.raises(SystemExit, match="interrupted at step 3"):
        pretrain(tiny_args(tmp_path / "resumed", cache))
    monkeypatch.undo()
    assert torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=False)["step"] == 3
    pretrain(tiny_args(tmp_path / "resumed", cache, "--resume", "--save-dtype", "float16"))
    assert same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_a_padded_vocabulary_gives_the_same_loss_and_the_real_rows_the_same_gradients():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=101, n_positions=16, n_layer=2, n_head=2, n_embd=32))
    padded = pad_vocab(copy.deepcopy(model), 64)
    assert padded.config.vocab_size == 128 and padded.lm_head.weight is padded.transformer.wte.weight
    x, y = torch.randint(0, 101, (2, 2, 16))
    plain_loss, padded_loss = lm_loss(model, x, y), lm_loss(padded, x, y, vocab=101)
    plain_loss.backward()
    padded_loss.backward()
    assert abs(plain_loss.item() - padded_loss.item()) < 1e-6
    grad = padded.transformer.wte.weight.grad
    assert torch.allclose(grad[:101], model.transformer.wte.weight.grad, atol=1e-7)
    assert not grad[101:].any()  # the extra rows get no probability, hence no gradient
    sd, config = unpadded(padded, 101)
    assert sd["transformer.wte.weight"].shape == (101, 32) and config.vocab_size == 101
    assert torch.equal(sd["transformer.wte.weight"], model.transformer.wte.weight)


def test_pretraining_with_a_padded_vocabulary_saves_the_tokenizers_vocabulary(tmp_path):
    cache = tmp_path / "cache"
    plain = pretrain(tiny_args(tmp_path / "plain", cache))
    padded = pretrain(tiny_args(tmp_path / "padded", cache, "--pad-vocab", "64"))
    state = torch.load(tmp_path / "padded" / "train_state.pt", weights_only=False)
    assert state["model"]["transformer.wte.weight"].shape == (50304, 32)  # trained padded
    assert json.loads((tmp_path / "padded" / "config.json").read_text())["vocab_size"] == 50257
    assert load_file(tmp_path / "padded" / "model.safetensors")["transformer.wte.weight"].shape == (50257, 32)
    logs = [[json.loads(line)["val_loss"] for line in (tmp_path / run / "pretrain_log.jsonl").read_text().splitlines()
             if "val_loss" in line] for run in ("plain", "padded")]
    assert abs(logs[0][0] - logs[1][0]) < 1e-5  # the same real weights at step 0: the same loss
    assert abs(plain["val_loss"] - padded["val_loss"]) < 1e-3 and padded["parameters"] == plain["parameters"]
    GPT.from_pretrained(tmp_path / "padded")


def test_shipped_checkpoint():
    card = json.loads((SHIPPED / "model_card.json").read_text())
    metrics = json.loads((SHIPPED / "pretrain_metrics.json").read_text())
    assert (SHIPPED / "model.safetensors").stat().st_size <= 40e6
    cfg = json.loads((SHIPPED / "config.json").read_text())
    assert (cfg["vocab_size"], cfg["n_layer"], cfg["n_embd"], cfg["n_positions"]) == (50257, 8, 256, 512)
    ours = GPT.from_pretrained(SHIPPED).eval()
    hf = transformers.GPT2LMHeadModel.from_pretrained(SHIPPED, dtype=torch.float32).eval()
    x = torch.randint(0, 50257, (1, 12))
    with torch.no_grad():
        assert (hf(x).logits - ours(x)).abs().max() < 1e-3
    corpus = find_data("corpus/gutenberg")
    assert corpus is not None, "offline corpus not found (../shared/data/corpus/gutenberg)"
    assert abs(slice_loss(ours, corpus) - card["val_slice_loss"]) <= 0.05
    assert metrics["val_loss"] < metrics["unigram_val_loss"] - 2.0  # far better than unigram statistics


@pytest.mark.parametrize("budget", [[], ["--max-seconds", "4", "--eval-interval", "1000"]], ids=["steps", "seconds"])
def test_pretraining_runs_under_torchrun_with_two_processes(tmp_path, budget):
    """A time budget too: each process times itself, and they must still stop at the same step (or hang)."""
    import socket
    import subprocess
    import sys
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "minigpt.pretraining", *tiny_args(tmp_path / "ddp", tmp_path / "cache"), *budget]
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "pretrain_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["tokens_seen"] == 2 * metrics["steps"] * 4 * 32  # both batches
    assert metrics["steps"] == 8 if not budget else metrics["steps"] > 8  # 4 s: more steps than the step budget
    GPT.from_pretrained(tmp_path / "ddp")


def test_flops_per_token_is_what_a_training_step_computes():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from minigpt.pretraining.train import flops_per_token
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_positions=128, n_layer=2, n_head=2, n_embd=32))  # attention: ~40%
    ids = torch.randint(0, 64, (3, 128))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:  # attention as matmuls it counts
        model(ids, labels=ids).loss.backward()
    per_token = counter.get_total_flops() / ids.numel()
    # the formula counts biases and LayerNorms as weights (2% of this tiny model, far less at real widths)
    assert per_token == pytest.approx(flops_per_token(model, 64, 128), rel=0.03)


def test_a_run_reports_its_model_flop_utilization(tmp_path):
    result = pretrain(tiny_args(tmp_path / "run", tmp_path / "cache"))
    from minigpt.pretraining.train import flops_per_token
    model = GPT.from_pretrained(tmp_path / "run")
    achieved = flops_per_token(model, 50257, 32) * result["tokens_per_second"] / 1e12
    assert result["peak_tflops"] == 0.5 and not result["peak_measured"]  # as given
    assert result["mfu"] == pytest.approx(achieved / 0.5, rel=0.01)
    assert 0 < result["mfu"] < 1


def test_the_steady_rate_leaves_out_the_slow_first_steps():
    from minigpt.pretraining.train import steady_rate
    # 40 steps of 100 tokens: the first 10 take 30 s (compilation), then 1 s per 10 steps
    log = [{"step": 0, "tokens": 0, "elapsed": 0.0, "val_loss": 9.0}]
    log += [{"step": s, "tokens": 100 * s, "elapsed": 30.0 + (s - 10) / 10, "train_loss": 5.0} for s in (10, 20, 30, 40)]
    log.append({"step": 40, "tokens": 4000, "elapsed": 33.0, "val_loss": 5.0})
    assert steady_rate(log) == pytest.approx(1000.0)  # steps 20-40: 2000 tokens in 2 s; overall 4000 / 33
    assert steady_rate(log[:4]) is None  # too few steps to leave any out


def test_the_matmul_peak_is_measured_in_the_precision_asked():
    from minigpt.runtime import matmul_peak
    fp32 = matmul_peak(torch.float32, "cpu", n=256)
    assert math.isfinite(fp32) and fp32 > 0.1  # GFLOP/s: any CPU of this century


def test_a_loss_that_is_not_a_number_stops_the_run_before_anything_is_saved(tmp_path):
    with pytest.raises(SystemExit, match="the training loss became nan"):
        pretrain(tiny_args(tmp_path / "run", tmp_path / "cache", "--lr", "1e9", "--ckpt-interval", "4"))
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_large_pretrained_model_is_saved_as_hugging_face_shards(tmp_path, monkeypatch):
    from minigpt import weights
    monkeypatch.setattr(weights, "SHARD_ABOVE_BYTES", 1_000_000)  # the tiny model's 3.3 MB counts as large
    monkeypatch.setattr(weights, "SHARD_BYTES", 2_000_000)
    pretrain(tiny_args(tmp_path / "run", tmp_path / "cache", "--save-dtype", "float32"))
    run = tmp_path / "run"
    index = json.loads((run / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert not (run / "model.safetensors").exists() and len(shards) >= 2
    assert all((run / s).stat().st_size <= 2_000_000 or len(load_file(run / s)) == 1 for s in shards)
    hf = transformers.GPT2LMHeadModel.from_pretrained(run).eval()
    x = torch.randint(0, 50257, (1, 9))
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, GPT.from_pretrained(run).eval()(x), atol=1e-4)
