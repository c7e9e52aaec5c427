"""PrefixConfig refuses settings that cannot work, with messages that say what to change."""
import pytest

from minigpt import GPT, GPTConfig
from prefix import PrefixConfig, PrefixTuner


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_virtual_tokens=0), "num_virtual_tokens must be a positive integer"),
    (dict(num_virtual_tokens=2.5), "num_virtual_tokens must be a positive integer"),
    (dict(init="text"), "needs init_text"),
    (dict(init="random", init_text="hi"), "init_text is only used with"),
    (dict(init="glorot"), "choose one of"),
    (dict(depth="deep"), "use \"all\", \"embedding\" or a list"),
    (dict(depth=[]), "one or more layer indices"),
    (dict(depth=[0, -1]), "one or more layer indices"),
    (dict(depth=[1, 1]), "lists a layer twice"),
    (dict(prefix_dropout=1.0), "prefix_dropout must be in"),
    (dict(encoder_hidden_size=0), "encoder_hidden_size must be positive"),
])
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrefixConfig(**kwargs)


def test_layer_indices_are_checked_against_the_model():
    model = GPT(GPTConfig(vocab_size=101, n_positions=64, n_layer=3, n_head=4, n_embd=32))
    with pytest.raises(ValueError, match=r"names layers that do not exist: the model has 3 layers"):
        PrefixTuner(model, PrefixConfig(depth=[0, 3]))


def test_dict_round_trip_and_unknown_fields():
    cfg = PrefixConfig(num_virtual_tokens=5, depth=[2, 0], init="text", init_text="table-to-text:")
    assert cfg.depth == [0, 2]  # normalized
    assert PrefixConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown PrefixConfig fields: prefix_len"):
        PrefixConfig.from_dict({"prefix_len": 5})


def test_an_embedding_prompt_can_be_computed_by_the_mlp(tiny_dir, tmp_path):
    """depth="embedding" with the MLP: the prompt P = MLP(P') trains, materializes to the same outputs, and is
    written to PEFT as the prompt tuning adapter of the computed prompt."""
    import json

    import torch
    tuner = PrefixTuner(GPT.from_pretrained(tiny_dir), PrefixConfig(4, depth="embedding", prefix_projection=True,
                                                                    encoder_hidden_size=16))
    assert tuner.encoder.transform is not None and tuner.encoder().shape == (4, tuner.model.config.n_embd)
    x = torch.randint(1, 101, (2, 6))
    tuner(x, labels=x).loss.backward()
    assert all(p.grad is not None for p in tuner.encoder.parameters())
    with torch.no_grad():
        before = tuner(x)
        tuner.materialize()
        torch.testing.assert_close(tuner(x), before, atol=1e-6, rtol=1e-6)
    tuner.save_peft(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "PROMPT_TUNING"
