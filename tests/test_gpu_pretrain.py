"""The prepared GPU pretraining command, run on tiny shapes on the CPU: it trains what it is asked, measures
the steady rate, packs the weights and ships them in parts that rebuild, here, the model it trained."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from bench.gpu_pretrain import main, run, receive
from minigpt import GPT
from minigpt.datadir import find_data
from minigpt.pretraining.bundle import build_corpus
from test_bundle import corpora


def pretrain_folder(tmp_path):
    """What `bundle` makes, from tiny corpora named as the mixture names its sources."""
    books, web = corpora(tmp_path)
    folder = tmp_path / "pretrain"
    shutil.copytree(find_data("gpt2"), folder / "gpt2")
    web_path = web.split("=")[1].rsplit(":", 1)[0]
    specs = [books.replace("books=", "gutenberg="), f"wikipedia={web_path}:0.3", f"imdb={web_path}:0.35"]
    build_corpus(specs, folder / "corpus.tar.xz", max_mib=0.05)
    return folder


def test_the_dry_run_trains_measures_and_ships_weights_that_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = pretrain_folder(tmp_path)
    summary = run(tmp_path / "out", tmp_path / "work", dry=True, epochs=4, budget=300, data=data,
                  only={"speed-8x512", "adamw-4x128"})
    assert set(summary["runs"]) == {"speed-8x512", "adamw-4x128"}
    for name, m in summary["runs"].items():
        assert m["steps"] == 40 and m["steady_tokens_per_second"] > 0 and 0 < m["steady_mfu"], name
    assert summary["runs"]["adamw-4x128"]["peak_tflops"] == summary["runs"]["speed-8x512"]["peak_tflops"]
    trip = summary["round_trip"]["adamw-4x128"]
    assert trip["shipped"] and abs(trip["relative_change"]) < 1e-3  # int8 rows keep the loss
    assert json.loads((tmp_path / "out/summary.json").read_text()) == summary
    rebuilt = receive(tmp_path / "out", tmp_path / "back")
    assert [p.name for p in rebuilt] == ["adamw-4x128"]
    original = GPT.from_pretrained(tmp_path / "work/runs/adamw-4x128").float().eval()
    back = GPT.from_pretrained(rebuilt[0]).eval()
    ids = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        a, b = original(ids), back(ids)
    assert (a - b).abs().max() < 0.05 * a.abs().max()  # the rebuilt weights are the trained ones, to int8
    assert (tmp_path / "back/ship/runs/adamw-4x128/pretrain_log.jsonl").exists()


def test_an_unknown_run_is_refused_with_the_names(tmp_path):
    with pytest.raises(SystemExit, match="no run named big.*speed-8x512"):
        main(["run", "--out", str(tmp_path), "--only", "big", "--dry"])
