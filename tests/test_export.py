"""Weights in small files: the int8 pack (sizes, hashes, the error it brings back, the loss it changes, damaged
files named) and Hugging Face sharded safetensors (transformers loads them with the same logits as ours)."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from minigpt import GPT, GPTConfig
from minigpt.datadir import find_data
from minigpt.export import main as export, pack, quantize_rows, read_pack, round_trip_losses, unpack
from minigpt.io import CheckpointError

SHAPE = dict(vocab_size=512, n_positions=64, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture
def saved(tmp_path) -> tuple[GPT, Path]:
    """A tiny random model (float32) and the checkpoint folder it was saved to."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SHAPE)).eval()
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def stored(model: GPT) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}


def test_a_pack_is_int8_rows_in_files_of_at_most_the_limit_each_hashed(saved, tmp_path):
    model, ckpt = saved
    manifest = pack(ckpt, tmp_path / "pack", max_file_bytes=40_000)
    # 2-D: one byte per weight and a float32 scale per row; 1-D: float32
    expected = sum(v.numel() + 4 * v.shape[0] if v.ndim == 2 else 4 * v.numel() for v in stored(model).values())
    files = sorted((tmp_path / "pack").glob("weights-*.bin"))
    sizes = [f.stat().st_size for f in files]
    assert sum(sizes) == expected and len(files) == math.ceil(expected / 40_000)
    assert sizes[:-1] == [40_000] * (len(files) - 1) and 0 < sizes[-1] <= 40_000
    on_disk = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    assert [(f["name"], f["sha256"]) for f in on_disk["files"]] == [
        (f.name, hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]
    assert manifest["total_bytes"] == expected
    assert expected < 0.3 * (ckpt / "model.safetensors").stat().st_size  # about a quarter of float32


def test_the_round_trip_brings_each_weight_back_within_half_its_rows_scale(saved, tmp_path):
    model, ckpt = saved
    pack(ckpt, tmp_path / "pack", max_file_bytes=40_000)
    unpack(tmp_path / "pack", tmp_path / "rebuilt")
    rebuilt = GPT.from_pretrained(tmp_path / "rebuilt")
    after = stored(rebuilt)
    for name, w in stored(model).items():
        if w.ndim == 1:
            assert torch.equal(after[name], w), name  # kept in float32
            continue
        half_scale = w.abs().amax(dim=1, keepdim=True) / 127 / 2
        err = (after[name] - w).abs()
        assert bool((err <= half_scale * (1 + 1e-5)).all()), name
        assert err.max() > 0, name  # it was quantized
    tokens = torch.randint(0, SHAPE["vocab_size"], (4, 64), generator=torch.Generator().manual_seed(1))
    losses = round_trip_losses(model, rebuilt, tokens)
    with torch.no_grad():
        assert losses.original == pytest.approx(float(model(tokens, labels=tokens).loss))
    assert abs(losses.relative_change) < 0.01 and losses.rebuilt != losses.original


def test_unpacking_to_bfloat16_gives_a_loadable_bfloat16_checkpoint(saved, tmp_path):
    _, ckpt = saved
    pack(ckpt, tmp_path / "pack")
    unpack(tmp_path / "pack", tmp_path / "f32")
    unpack(tmp_path / "pack", tmp_path / "bf16", dtype=torch.bfloat16)
    assert {v.dtype for v in load_file(tmp_path / "bf16" / "model.safetensors").values()} == {torch.bfloat16}
    x = torch.randint(0, SHAPE["vocab_size"], (1, 16))
    with torch.no_grad():
        a, b = GPT.from_pretrained(tmp_path / "f32")(x), GPT.from_pretrained(tmp_path / "bf16")(x)
    assert (a - b).abs().max() < 0.05


def test_a_zero_row_stays_zero_and_non_finite_weights_are_refused():
    q, scale = quantize_rows(torch.tensor([[0.0, 0.0], [1.0, -0.5]]))
    assert q.tolist() == [[0, 0], [127, -64]] and scale.tolist() == pytest.approx([0.0, 1 / 127])
    with pytest.raises(CheckpointError, match="h.0.attn.c_attn.weight holds NaN or infinite values"):
        quantize_rows(torch.tensor([[1.0, float("nan")]]), "h.0.attn.c_attn.weight")


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "weights-00002.bin").unlink(), "weights-00002.bin is missing \\(listed in .*manifest.json\\)"),
    (lambda p: (p / "weights-00002.bin").write_bytes(b"\0" + (p / "weights-00002.bin").read_bytes()[1:]),
     "weights-00002.bin is corrupt: its size or sha256 differs"),
    (lambda p: (p / "manifest.json").write_text("{"), "manifest.json is not a valid pack manifest"),
    (lambda p: (p / "manifest.json").unlink(), "has no manifest.json; pass a folder written by"),
])
def test_a_damaged_pack_is_named(saved, tmp_path, damage, message):
    pack(saved[1], tmp_path / "pack", max_file_bytes=40_000)
    damage(tmp_path / "pack")
    with pytest.raises(CheckpointError, match=message):
        read_pack(tmp_path / "pack")
    with pytest.raises(SystemExit, match="^error: .*" + message):
        export(["unpack", str(tmp_path / "pack"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_sharded_safetensors_load_in_transformers_with_our_logits(saved, tmp_path):
    model, ckpt = saved
    model.save_pretrained(tmp_path / "sharded", max_shard_bytes=70_000)
    folder = tmp_path / "sharded"
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) >= 3 and not (folder / "model.safetensors").exists()
    assert all(s.stat().st_size <= 70_000 for s in shards)
    n = len(shards)
    assert [s.name for s in shards] == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    single = load_file(ckpt / "model.safetensors")
    assert index["metadata"]["total_size"] == sum(v.numel() * 4 for v in single.values())
    assert set(index["weight_map"]) == set(single) and set(index["weight_map"].values()) == {s.name for s in shards}
    ours = GPT.from_pretrained(folder).eval()
    assert all(torch.equal(a, b) for a, b in zip(stored(ours).values(), stored(model).values()))
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    x = torch.randint(0, SHAPE["vocab_size"], (2, 20))
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max() < 1e-4


def test_a_tensor_larger_than_the_shard_limit_has_a_shard_of_its_own(saved, tmp_path):
    model, _ = saved
    model.save_pretrained(tmp_path / "sharded", max_shard_bytes=20_000)
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())["weight_map"]
    wte_shard = index["transformer.wte.weight"]  # 512 x 32 float32: 65,536 bytes
    assert [k for k, v in index.items() if v == wte_shard] == ["transformer.wte.weight"]
    assert all(f.stat().st_size <= 20_000 for f in (tmp_path / "sharded").glob("model-*.safetensors")
               if f.name != wte_shard)


def test_saving_again_removes_the_weight_files_of_the_other_layout(saved, tmp_path):
    model, _ = saved
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    model.save_pretrained(folder, max_shard_bytes=70_000)
    assert not (folder / "model.safetensors").exists()  # it would be read before the shards
    model.save_pretrained(folder, max_shard_bytes=200_000)
    assert len(list(folder.glob("model-*.safetensors"))) == 1  # no shard of the longer save is left
    model.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_a_missing_shard_is_named(saved, tmp_path):
    saved[0].save_pretrained(tmp_path / "sharded", max_shard_bytes=70_000)
    shard = sorted((tmp_path / "sharded").glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"{shard.name} is missing \\(listed in .*index.json\\)"):
        GPT.from_pretrained(tmp_path / "sharded")


def test_the_command_line_packs_unpacks_compares_and_shards(tmp_path, capsys):
    torch.manual_seed(0)
    GPT(GPTConfig(**{**SHAPE, "vocab_size": 50257})).save_pretrained(tmp_path / "model", dtype=torch.float16)
    text = find_data("corpus/tinyshakespeare/input.txt")
    assert text is not None, "offline corpus not found (../shared/data/corpus)"
    packed = export(["pack", str(tmp_path / "model"), str(tmp_path / "pack"), "--max-file-mib", "0.25"])
    assert packed["largest_file_bytes"] == 2 ** 18 and packed["files"] == math.ceil(packed["total_bytes"] / 2 ** 18)
    export(["unpack", str(tmp_path / "pack"), str(tmp_path / "rebuilt"), "--dtype", "bfloat16"])
    compared = export(["compare", str(tmp_path / "model"), str(tmp_path / "rebuilt"), "--text", str(text),
                       "--max-tokens", "2048"])
    assert compared["tokens"] == 2048 and abs(compared["relative_change"]) < 0.01
    sharded = export(["shard", str(tmp_path / "model"), str(tmp_path / "sharded"), "--max-shard-mb", "1"])
    assert len(sharded["shards"]) == 2  # float16 as stored: wte (3.2 MB) alone, the rest (55 kB) in one
    assert {v.dtype for v in load_file(tmp_path / "sharded" / sharded["shards"][0]).values()} == {torch.float16}
    with pytest.raises(SystemExit):
        export(["pack", str(tmp_path / "model"), str(tmp_path / "p2"), "--max-file-mib", "0"])
    assert "must be a finite number > 0, got 0" in capsys.readouterr().err


def test_a_sharded_checkpoints_fingerprint_covers_its_shards(saved, tmp_path):
    from experiments.runid import model_sha256
    model, _ = saved
    model.save_pretrained(tmp_path / "sharded", max_shard_bytes=70_000)
    before = model_sha256(tmp_path / "sharded")
    with torch.no_grad():
        model.transformer.ln_f.bias += 1  # the last tensor: in the last shard
    model.save_pretrained(tmp_path / "sharded", max_shard_bytes=70_000)
    assert model_sha256(tmp_path / "sharded") != before
