"""Bad input gets a clear error: damaged prefix and state files, ids outside the vocabulary, masks that
are not 0/1, a prefix for another batch, impossible sampling settings; and results are ordinary files."""
from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from minigpt import GPT
from minigpt.io import atomic_write
from prefix import PrefixConfig, PrefixFileError, PrefixTuner


@pytest.fixture
def base(tiny_dir):
    return GPT.from_pretrained(tiny_dir).eval()


def saved_prefix(base, tmp_path):
    PrefixTuner(base, PrefixConfig(3)).save(tmp_path, base_model_name_or_path="tiny")
    return tmp_path / "prefix.safetensors"


def test_a_cut_or_damaged_prefix_file_is_refused_by_name(base, tmp_path):
    weights = saved_prefix(base, tmp_path)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(PrefixFileError, match="prefix.safetensors cannot be read"):
        PrefixTuner.load(tmp_path, base)
    weights.write_bytes(data)
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name].view(-1)[0] = float("nan")  # same size, one value damaged
    save_file(tensors, weights)
    with pytest.raises(PrefixFileError, match=f"non-finite values in {name}"):
        PrefixTuner.load(tmp_path, base)
    (tmp_path / "prefix_config.json").write_text('{"format": ')
    with pytest.raises(PrefixFileError, match="prefix_config.json is not valid JSON"):
        PrefixTuner.load(tmp_path, base)


def test_inputs_the_model_cannot_read_are_refused(base):
    V = base.config.vocab_size
    with pytest.raises(ValueError, match=rf"outside the vocabulary \[0, {V}\).*max {V}"):
        base(torch.tensor([[1, 2, V]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        base(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="only 0 .* and 1"):
        base(torch.tensor([[1, 2, 3]]), attention_mask=torch.tensor([[0, 2, 1]]))
    k = torch.zeros(2, base.config.n_head, 3, base.config.head_dim)
    with pytest.raises(ValueError, match="batch of 2 but the input has 4 rows"):
        base(torch.ones(4, 5, dtype=torch.long), prefix=[(k, k)] * base.config.n_layer)
    one = torch.zeros(1, base.config.n_head, 3, base.config.head_dim)
    assert base(torch.ones(4, 5, dtype=torch.long), prefix=[(one, one)] * base.config.n_layer).shape[0] == 4


@pytest.mark.parametrize("kw, message", [({"top_k": 0}, "top_k must be an integer >= 1"), ({"top_p": 0.0}, "top_p must be"),
                                         ({"top_p": 1.5}, "top_p must be"), ({"top_k": 2.5}, "top_k must be an integer"),
                                         ({"temperature": float("nan")}, "temperature must be a finite number"),
                                         ({"top_p": float("nan")}, "top_p must be a finite number")])
def test_impossible_sampling_settings_are_refused(base, kw, message):
    with pytest.raises(ValueError, match=message):
        base.generate(torch.tensor([[1, 2]]), 3, do_sample=True, **kw)


@pytest.mark.parametrize("args, kw, message", [
    ((torch.tensor([[1, 2]]), 2.5), {}, "max_new_tokens must be an integer >= 0, got 2.5"),
    ((torch.tensor([[1, 2]]), 3), {"num_beams": 2.0}, "num_beams must be an integer >= 1"),
    ((torch.tensor([[1, 2]]), 3), {"num_beams": 2, "length_penalty": float("inf")}, "length_penalty must be a finite"),
    ((torch.tensor([[1, 2]]), 3), {"eos_token_id": -1}, "eos_token_id must be an integer >= 0"),
    ((torch.tensor([[1, 2]]), 3), {"pad_token_id": 10**6}, "pad_token_id=1000000 is outside the vocabulary"),
    ((torch.tensor([[1.0, 2.0]]), 3), {}, "input_ids must be a \\(B, T\\) tensor of integer token ids"),
    ((torch.tensor([1, 2]), 3), {}, "input_ids must be a \\(B, T\\) tensor"),
])
def test_decoding_arguments_of_the_wrong_type_are_refused_by_name(base, args, kw, message):
    with pytest.raises(ValueError, match=message):
        base.generate(*args, **kw)


def test_a_continuation_that_cannot_fit_the_context_is_refused_before_decoding(base):
    n = base.config.n_positions
    prompt = torch.ones(1, 10, dtype=torch.long)
    with pytest.raises(ValueError, match=f"max_new_tokens={n} cannot fit: .* at most {n - 10} new tokens fit"):
        base.generate(prompt, n)
    k = torch.zeros(1, base.config.n_head, 4, base.config.head_dim)  # a prefix takes 4 positions before the prompt
    with pytest.raises(ValueError, match=f"at most {n - 14} new tokens fit"):
        base.generate(prompt, n - 10, prefix=[(k, k)] * base.config.n_layer)
    assert base.generate(prompt, n - 14, prefix=[(k, k)] * base.config.n_layer).shape[1] <= n - 4


def test_a_cut_training_state_is_named(tmp_path):
    from minigpt.pretraining import main as pretrain
    from test_mixture import tiny
    out = tmp_path / "run"
    assert pretrain(tiny(tmp_path, out, "--stop-after-steps", "2")) == {}
    state = out / "train_state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(SystemExit, match="train_state.pt cannot be read .* incomplete or corrupt"):
        pretrain(tiny(tmp_path, out, "--resume"))


def test_results_are_ordinary_files(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "metrics.json", lambda t: open(t, "w").write("{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_a_cut_experiment_state_is_named(tmp_path):
    from conftest import hf_model
    from experiments.config import parse_cli
    from experiments.run import main as run
    from test_experiment_run import tiny
    model = tmp_path / "model"
    hf_model(seed=3, vocab_size=50257, n_positions=160, n_embd=32, n_layer=2, n_head=2).save_pretrained(model)
    args = tiny(tmp_path, model, "--ckpt_every=1")
    run(args)
    name = parse_cli(args).run_name
    (tmp_path / "results" / name / "metrics.json").unlink()  # as if killed after its last checkpoint
    states = list((tmp_path / "runs" / name).glob("*.pt"))
    assert states
    for state in states:
        state.write_bytes(state.read_bytes()[:500])
    with pytest.raises(SystemExit, match=r"\.pt cannot be read .* incomplete or corrupt"):
        run(args)


def test_a_data_dir_that_does_not_exist_or_a_partial_copy_is_an_error(tmp_path, monkeypatch):
    from experiments.data import dataset_dir
    from minigpt.datadir import data_dirs
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match="typo is not a folder"):
        data_dirs()
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    (tmp_path / "data" / "sst2" / "stsa.binary.train").write_text("1 good\n")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=r"sst2 lacks stsa.binary.dev, stsa.binary.test"):
        dataset_dir("sst2")
