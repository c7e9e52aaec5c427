"""Prefix files: exact round trip, exact contents, small, and refused by a model of another shape."""
import copy
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from minigpt import GPT, GPTConfig
from prefix import BaseModelWarning, PrefixConfig, PrefixFileError, PrefixTuner

P = 4
CONFIGS = {
    "table": PrefixConfig(P),
    "mlp": PrefixConfig(P, prefix_projection=True, encoder_hidden_size=16),
    "embedding": PrefixConfig(P, depth="embedding"),
    "layers": PrefixConfig(P, depth=[0, 2], prefix_dropout=0.1),
}
MLP_KEYS = {"embedding.weight", "transform.0.weight", "transform.0.bias", "transform.2.weight", "transform.2.bias"}


@pytest.fixture
def base(tiny_dir):
    return GPT.from_pretrained(tiny_dir).eval()


def x():
    return torch.randint(1, 101, (2, 6), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", CONFIGS)
def test_round_trip_is_exact(base, name, tmp_path):
    tuner = PrefixTuner(base, CONFIGS[name]).eval()
    tuner.save(tmp_path, base_model_name_or_path="tiny-gpt2")
    loaded = PrefixTuner.load(tmp_path, base).eval()
    assert loaded.config == tuner.config
    assert all(torch.equal(v, loaded.encoder.state_dict()[k]) for k, v in tuner.encoder.state_dict().items())
    assert torch.equal(loaded(x()), tuner(x()))


def test_file_contents_are_exactly_the_prefix_and_its_base(base, tmp_path):
    tuner = PrefixTuner(base, CONFIGS["mlp"])
    tuner.save(tmp_path / "mlp", base_model_name_or_path="tiny-gpt2")
    assert sorted(p.name for p in (tmp_path / "mlp").iterdir()) == ["prefix.safetensors", "prefix_config.json"]
    assert set(load_file(tmp_path / "mlp" / "prefix.safetensors")) == MLP_KEYS  # the MLP is kept
    meta = json.loads((tmp_path / "mlp" / "prefix_config.json").read_text())
    assert set(meta) == {"format", "version", "prefix", "base_model"}
    assert set(meta["base_model"]) == {"n_layer", "n_head", "n_embd", "vocab_size", "n_positions",
                                       "fingerprint", "name_or_path"}
    assert meta["base_model"]["name_or_path"] == "tiny-gpt2" and meta["base_model"]["n_layer"] == 3

    tuner.materialize().save(tmp_path / "table")
    weights = tmp_path / "table" / "prefix.safetensors"
    assert set(load_file(weights)) == {"embedding.weight"}
    n = P * 3 * 2 * 32
    assert n * 4 <= weights.stat().st_size <= n * 4 + 256  # fp32 values plus a small header


def test_saved_mlp_resumes_training(base, tmp_path):
    PrefixTuner(base, CONFIGS["mlp"]).save(tmp_path)
    loaded = PrefixTuner.load(tmp_path, base)
    assert loaded.encoder.transform is not None
    assert all(p.requires_grad for p in loaded.encoder.parameters())
    loaded(x()).sum().backward()
    assert loaded.encoder.transform[0].weight.grad is not None


def test_model_of_another_shape_is_refused(base, tmp_path):
    PrefixTuner(base, CONFIGS["table"]).save(tmp_path, base_model_name_or_path="tiny-gpt2")
    other = GPT(GPTConfig(vocab_size=101, n_positions=64, n_layer=2, n_head=4, n_embd=32))
    with pytest.raises(PrefixFileError, match=r"n_layer=3 \(this model: 2\).*trained on \(tiny-gpt2\)"):
        PrefixTuner.load(tmp_path, other)


def test_model_with_other_weights_warns_and_a_dtype_cast_does_not(base, tmp_path):
    PrefixTuner(base, CONFIGS["table"]).save(tmp_path)
    torch.manual_seed(1)
    with pytest.warns(BaseModelWarning, match="other weights"):
        PrefixTuner.load(tmp_path, GPT(base.config))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PrefixTuner.load(tmp_path, copy.deepcopy(base).to(torch.bfloat16))


def test_peft_directory_is_pointed_to_from_peft(base, tmp_path):
    PrefixTuner(base, CONFIGS["table"]).save_peft(tmp_path)
    with pytest.raises(PrefixFileError, match="use PrefixTuner.from_peft"):
        PrefixTuner.load(tmp_path, base)
