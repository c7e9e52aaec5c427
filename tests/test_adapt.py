"""Task adaptation: it reads only the training targets, continues the base model, and says what it read."""
from __future__ import annotations

import json

import pytest

from experiments.adapt import main as adapt, task_texts
from experiments.data import load_e2e, load_sst2
from minigpt import GPT, GPTConfig


def test_texts_are_the_training_targets_only():
    e2e = task_texts("e2e")
    assert e2e == [text for _, text in load_e2e("train")] and len(e2e) == 42061
    sst2 = task_texts("sst2")
    assert sst2 == [s for _, s in load_sst2("train")] and len(sst2) == 6920
    with pytest.raises(SystemExit, match="no task 'dart'; the tasks: e2e, webnlg, sst2"):
        task_texts("dart")


def test_adaptation_continues_the_base_and_records_it(tmp_path):
    base = tmp_path / "base"
    GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64)).save_pretrained(str(base))
    args = ["--tasks", "e2e,sst2", "--model", str(base), "--tokens", "2048", "--batch-size", "4",
            "--block-size", "32", "--out", str(tmp_path / "adapted"), "--cache-dir", str(tmp_path / "cache"),
            "--no-bf16"]
    out = adapt(args)
    record = json.loads((out / "adaptation.json").read_text())
    assert record["tasks"] == ["e2e", "sst2"] and record["base"] == str(base)
    assert [s["name"] for s in record["sources"]] == ["e2e", "sst2"]
    assert record["tokens_seen"] == 16 * 4 * 32  # ceil(2048 / (4 * 32)) steps
    lines = (tmp_path / "cache" / "text" / "e2e-train-targets.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["text"] == load_e2e("train")[0][1] and len(lines) == 42061
    card = (out / "README.md").read_text()
    assert "Task adaptation" in card and "e2e, sst2" in card
    assert GPT.from_pretrained(out).config.n_embd == 32
    with pytest.raises(SystemExit, match="already holds a pretraining run"):
        adapt(args)
