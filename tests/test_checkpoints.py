"""Checkpoint loading: bad files fail with errors that name the problem; hub ids use the HF cache."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from minigpt import GPT, CheckpointError


def test_missing_and_unexpected_keys_are_named(tmp_path, tiny_dir):
    shutil.copy(tiny_dir / "config.json", tmp_path / "config.json")
    sd = load_file(tiny_dir / "model.safetensors")
    del sd["transformer.h.1.mlp.c_fc.weight"]
    sd["transformer.h.1.mlp.gate.weight"] = torch.zeros(3)
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys: transformer\.h\.1\.mlp\.c_fc\.weight.*"
                                              r"unexpected keys: transformer\.h\.1\.mlp\.gate\.weight"):
        GPT.from_pretrained(tmp_path)


def test_wrong_shape_is_named(tmp_path, tiny_dir):
    cfg = json.loads((tiny_dir / "config.json").read_text())
    cfg["n_positions"] = 32  # config says 32 positions, weights hold 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shutil.copy(tiny_dir / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"transformer\.wpe\.weight: checkpoint \(64, 32\) vs model \(32, 32\)"):
        GPT.from_pretrained(tmp_path)


def test_missing_and_corrupt_files(tmp_path, tiny_dir):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        GPT.from_pretrained(tmp_path / "nowhere")
    shutil.copy(tiny_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="holds no weights: none of model.safetensors, "
                                              "model.safetensors.index.json \\(sharded\\), pytorch_model.bin"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((tiny_dir / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        GPT.from_pretrained(tmp_path)


def test_untied_head_is_refused(tmp_path, tiny_dir):
    shutil.copy(tiny_dir / "config.json", tmp_path / "config.json")
    sd = load_file(tiny_dir / "model.safetensors")
    sd["lm_head.weight"] = torch.randn_like(sd["transformer.wte.weight"])
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="ties them"):
        GPT.from_pretrained(tmp_path)


def test_sequence_plus_prefix_longer_than_context(tiny_pair):
    ours, _ = tiny_pair
    c = ours.config
    prefix = [(torch.zeros(1, c.n_head, 10, c.head_dim),) * 2] * c.n_layer
    ours(torch.zeros(1, 54, dtype=torch.long), prefix=prefix)  # 10 + 54 = 64 fits
    with pytest.raises(ValueError, match="exceed the model's context of 64 positions"):
        ours(torch.zeros(1, 55, dtype=torch.long), prefix=prefix)
    with pytest.raises(ValueError, match="prefix has 2 entries but the model has 3 layers"):
        ours(torch.zeros(1, 5, dtype=torch.long), prefix=prefix[:2])
    with pytest.raises(ValueError, match=r"must both be \(B or 1, n_head=4, P, head_dim=8\)"):
        ours(torch.zeros(1, 5, dtype=torch.long), prefix=[(torch.zeros(1, 2, 3, 8),) * 2] * 3)


def _hub(monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_hub_id_offline_without_cache_says_what_to_do(monkeypatch, tmp_path):
    _hub(monkeypatch, tmp_path)
    with pytest.raises(CheckpointError, match="Connect once to download it"):
        GPT.from_pretrained("gpt2")


def test_hub_id_is_loaded_from_the_standard_cache_offline(monkeypatch, tmp_path, tiny_dir, tiny_pair):
    cache = _hub(monkeypatch, tmp_path)
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = cache / "models--gpt2" / "snapshots" / commit
    snap.mkdir(parents=True)
    (cache / "models--gpt2" / "refs").mkdir()
    (cache / "models--gpt2" / "refs" / "main").write_text(commit)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dir / f, snap / f)
    model = GPT.from_pretrained("gpt2").eval()
    x = torch.randint(0, 101, (1, 5))
    with torch.no_grad():
        assert torch.equal(model(x), tiny_pair[0](x))


def test_dtype_and_config_validation(tiny_dir):
    m = GPT.from_pretrained(tiny_dir, dtype=torch.bfloat16)
    assert m.transformer.h[0].attn.c_attn.weight.dtype == torch.bfloat16
    assert m.lm_head.weight is m.transformer.wte.weight
    from minigpt import GPTConfig
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="unknown model name"):
        GPTConfig.from_name("gpt3")
    with pytest.raises(ValueError, match="model_type='llama'"):
        GPTConfig.from_hf({"model_type": "llama"})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loaded_weights_are_contiguous_and_equal_the_checkpoint(tiny_dir, dtype):
    """Conv1D weights (in, out) arrive as row-major (out, in) copies, not transposed views."""
    m = GPT.from_pretrained(tiny_dir, dtype=dtype)
    assert all(p.is_contiguous() for p in m.parameters())
    sd = load_file(str(tiny_dir / "model.safetensors"))
    for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        ours = m.get_submodule(f"transformer.h.1.{name}").weight
        assert torch.equal(ours, sd[f"transformer.h.1.{name}.weight"].t().to(dtype))
