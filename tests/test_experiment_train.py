"""The training loop: exact resume after an interrupt, and DDP (2 gloo processes) = 1 process."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from minigpt import GPT, GPTConfig
from prefix import PrefixConfig, PrefixTuner

from experiments import train as train_mod
from experiments.train import LMObjective, fit

CFG = dict(lr=1e-2, weight_decay=0.0, warmup_steps=2, grad_clip=1.0, epochs=2, batch_size=4, seed=0,
           patience=0, bf16=False, log_every=1, ckpt_every=1)


def setup(seed=0):
    """The same frozen base model every time; the prefix initialized from `seed`."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_positions=64, n_layer=2, n_head=2, n_embd=16)).eval()
    torch.manual_seed(seed)
    tuner = PrefixTuner(model, PrefixConfig(num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=8))
    g = torch.Generator().manual_seed(1)
    pairs = []
    for n in range(12):  # (input_ids, labels): loss on the second half only
        ids = torch.randint(1, 64, (6 + n % 5,), generator=g).tolist()
        labels = [-100] * (len(ids) // 2) + ids[len(ids) // 2:]
        pairs.append((ids, labels))
    return model, tuner, pairs


def trained(tuner):
    return {k: v.detach().clone() for k, v in tuner.named_parameters() if v.requires_grad}


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, monkeypatch):
    model, tuner, pairs = setup()
    fit(tuner, LMObjective(model, 0), pairs, pairs[:4], SimpleNamespace(**CFG), tmp_path / "a", log=lambda x: None)
    straight = trained(tuner)

    model, tuner, pairs = setup()
    real = train_mod.linear_schedule
    calls = {"n": 0}

    def interrupt(*a):
        calls["n"] += 1
        if calls["n"] == 5:  # stop in the middle of the second epoch, as a kill would
            raise KeyboardInterrupt
        return real(*a)
    monkeypatch.setattr(train_mod, "linear_schedule", interrupt)
    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):
        fit(tuner, LMObjective(model, 0), pairs, pairs[:4], SimpleNamespace(**CFG), tmp_path / "b", log=lambda x: None)
    monkeypatch.setattr(train_mod, "linear_schedule", real)
    model, tuner, pairs = setup(seed=5)  # a fresh process: nothing survives but state.pt
    fit(tuner, LMObjective(model, 0), pairs, pairs[:4], SimpleNamespace(**CFG), tmp_path / "b", log=lambda x: None)
    resumed = trained(tuner)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def _ddp_worker(rank, port, out):
    import torch.distributed as dist
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, tuner, pairs = setup()
        fit(tuner, LMObjective(model, 0), pairs, pairs[:4], SimpleNamespace(**CFG), Path(out) / "ddp",
            log=lambda x: None)
        if rank == 0:
            torch.save(trained(tuner), Path(out) / "ddp.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_reach_the_same_prefix_as_one(tmp_path):
    (tmp_path / "ddp").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    model, tuner, pairs = setup()
    (tmp_path / "one").mkdir()
    fit(tuner, LMObjective(model, 0), pairs, pairs[:4], SimpleNamespace(**CFG), tmp_path / "one",
        log=lambda x: None)
    one, two = trained(tuner), torch.load(tmp_path / "ddp.pt")
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-4), k
    assert any(not torch.equal(v, trained(setup()[1])[k]) for k, v in one.items())  # it did train


def test_a_short_run_warms_up_for_at_most_a_fifth_of_its_steps(tmp_path):
    """warmup_steps=100 in a 6-step run: the lr reaches its peak at the second step (warmup 1 = 20% of 6),
    then decays linearly to 0 by the end, instead of never leaving warmup."""
    model, tuner, pairs = setup()
    logged = []
    cfg = SimpleNamespace(**{**CFG, "warmup_steps": 100})
    summary = fit(tuner, LMObjective(model, 0), pairs, pairs[:4], cfg, tmp_path / "a", log=logged.append)
    lrs = [item["lr"] for item in logged if isinstance(item, dict) and "lr" in item]
    assert summary["steps"] == 6 and summary["warmup_steps"] == 1
    assert lrs[0] == pytest.approx(cfg.lr) and lrs == sorted(lrs, reverse=True) and lrs[-1] < cfg.lr / 4
    assert any("warmup: 1 steps, not 100" in item for item in logged if isinstance(item, str))


def test_warmup_stays_as_set_where_it_fits():
    assert train_mod.warmup_for(500, 100) == 100 and train_mod.warmup_for(4207, 100) == 100
    assert train_mod.warmup_for(50, 100) == 10 and train_mod.warmup_for(200, 20) == 20
