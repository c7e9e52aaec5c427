"""PEFT interop: the same logits as peft 0.21's PeftModel, whichever side wrote the adapter file.

PeftModel.generate() ignores prefixes with transformers 5.x (see PAPER.md), so forward logits are compared.
"""
import json

import pytest
import torch
from safetensors.torch import load_file

from minigpt import GPT
from prefix import PrefixConfig, PrefixTuner

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

P = 4
CASES = {  # name: (ours, PEFT's)
    "prefix": (PrefixConfig(P), lambda: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P)),
    "prefix_mlp": (PrefixConfig(P, prefix_projection=True, encoder_hidden_size=16),
                   lambda: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P,
                                                   prefix_projection=True, encoder_hidden_size=16)),
    "prompt": (PrefixConfig(P, depth="embedding"),
               lambda: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P)),
}


def inputs():
    ids = torch.randint(1, 101, (3, 7), generator=torch.Generator().manual_seed(0))
    return ids, torch.ones_like(ids)


@torch.no_grad()
def peft_logits(peft_model, name, ids, mask):
    logits = peft_model(input_ids=ids, attention_mask=mask).logits
    return logits[:, P:] if name == "prompt" else logits  # prompt tuning returns the virtual positions too


@pytest.mark.parametrize("name", CASES)
def test_our_adapter_gives_peft_the_same_logits(tiny_dir, tmp_path, name):
    torch.manual_seed(0)
    tuner = PrefixTuner(GPT.from_pretrained(tiny_dir), CASES[name][0]).eval()
    tuner.save_peft(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tiny_dir).eval()
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path).eval()
    ids, mask = inputs()
    with torch.no_grad():
        ours = tuner(ids, mask)
    diff = (ours - peft_logits(theirs, name, ids, mask)).abs().max().item()
    print(f"ours -> PEFT [{name}] max abs diff {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.parametrize("name", CASES)
def test_peft_adapter_gives_us_the_same_logits(tiny_dir, tmp_path, name):
    hf = transformers.GPT2LMHeadModel.from_pretrained(tiny_dir).eval()
    torch.manual_seed(0)
    theirs = peft.get_peft_model(hf, CASES[name][1]()).eval()
    theirs.save_pretrained(tmp_path)
    tuner = PrefixTuner.from_peft(tmp_path, GPT.from_pretrained(tiny_dir)).eval()
    ids, mask = inputs()
    with torch.no_grad():
        ours = tuner(ids, mask)
    diff = (ours - peft_logits(theirs, name, ids, mask)).abs().max().item()
    print(f"PEFT -> ours [{name}] max abs diff {diff:.2e}")
    assert diff <= 1e-5
    # PEFT saves only the computed table, so an MLP adapter arrives materialized
    assert tuner.encoder.transform is None


@pytest.mark.parametrize("name", CASES)
def test_we_write_the_files_peft_writes(tiny_dir, tmp_path, name):
    hf = transformers.GPT2LMHeadModel.from_pretrained(tiny_dir)
    peft.get_peft_model(hf, CASES[name][1]()).save_pretrained(tmp_path / "peft")
    PrefixTuner(GPT.from_pretrained(tiny_dir), CASES[name][0]).save_peft(tmp_path / "ours", str(tiny_dir))
    theirs_cfg, ours_cfg = (json.loads((tmp_path / d / "adapter_config.json").read_text()) for d in ("peft", "ours"))
    assert set(ours_cfg) == set(theirs_cfg) - {"peft_version"}
    assert {k: v for k, v in ours_cfg.items() if k != "encoder_hidden_size"} == \
        {k: v for k, v in theirs_cfg.items() if k not in ("peft_version", "encoder_hidden_size")}
    theirs_w, ours_w = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("peft", "ours"))
    assert {k: v.shape for k, v in ours_w.items()} == {k: v.shape for k, v in theirs_w.items()}


@pytest.mark.filterwarnings("ignore:fan_in_fan_out")
def test_depth_list_and_other_adapters_are_refused(tiny_dir, tmp_path):
    model = GPT.from_pretrained(tiny_dir)
    with pytest.raises(ValueError, match="cannot be written as a PEFT adapter"):
        PrefixTuner(model, PrefixConfig(P, depth=[1])).save_peft(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tiny_dir)
    peft.get_peft_model(hf, peft.LoraConfig(target_modules=["c_attn"])).save_pretrained(tmp_path / "lora")
    with pytest.raises(ValueError, match="holds a LORA adapter"):
        PrefixTuner.from_peft(tmp_path / "lora", model)


def labelled():
    """Inputs with labels: IGNORE on each row's first positions (a 'source' part), like a training batch."""
    ids, mask = inputs()
    labels = ids.clone()
    labels[:, :3] = -100
    labels[1, :5] = -100
    return ids, mask, labels


@pytest.mark.parametrize("name", CASES)
def test_labels_give_peft_s_loss_and_gradient(tiny_dir, tmp_path, name):
    """`tuner(ids, labels=...)`: the loss transformers + peft compute for the same labels, and the same
    gradient on the prefix, though ours never forms the logits of positions without a target."""
    hf = transformers.GPT2LMHeadModel.from_pretrained(tiny_dir).eval()
    torch.manual_seed(0)
    theirs = peft.get_peft_model(hf, CASES[name][1]()).eval()
    theirs.save_pretrained(tmp_path)
    tuner = PrefixTuner.from_peft(tmp_path, GPT.from_pretrained(tiny_dir)).eval()
    ids, mask, labels = labelled()
    out = tuner(ids, mask, labels=labels)
    assert out.logits is None  # not asked for, not computed
    ref = theirs(input_ids=ids, attention_mask=mask, labels=labels)
    assert abs(out.loss.item() - ref.loss.item()) <= 1e-5
    out.loss.backward()
    ref.loss.backward()
    (ours_grad,) = [p.grad for p in tuner.parameters() if p.requires_grad]  # the (materialized) table
    peft_grads = [p.grad for p in theirs.parameters() if p.requires_grad]
    if name != "prefix_mlp":  # PEFT's MLP adapter trains the MLP; ours arrives as the table it computes
        assert (ours_grad - peft_grads[0].reshape(ours_grad.shape)).abs().max().item() <= 1e-5
    with_logits = tuner(ids, mask, labels=labels, return_logits=True)
    with torch.no_grad():
        assert (with_logits.logits - peft_logits(theirs, name, ids, mask)).abs().max().item() <= 1e-5
