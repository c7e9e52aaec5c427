"""The prefix file format: a directory with `prefix.safetensors` + `prefix_config.json`.

`prefix.safetensors` holds the encoder's tensors in their training dtype (fp32 unless trained
otherwise): just `embedding.weight` after `materialize()` (GPT-2 small, P=10: 10·12·2·768 fp32 =
737 KB), or the MLP too when saved before materializing, so training can resume (PEFT drops the MLP).

`prefix_config.json` holds the `PrefixConfig` and the base model the prefix was trained on: its shape
(n_layer, n_head, n_embd, vocab_size, n_positions), a fingerprint of a few of its weights, and its
name or path when the caller gives one. Loading onto a model of another shape raises
`PrefixFileError`. Loading onto a same-shape model with other weights only warns (`BaseModelWarning`):
moving a prefix to a fine-tuned or quantized copy of its base is a legitimate experiment.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from minigpt.io import atomic_write
from minigpt.weights import check_keys

from .config import PrefixConfig

FORMAT, VERSION = "minigpt-prefix", 1
CONFIG_FILE, WEIGHTS_FILE = "prefix_config.json", "prefix.safetensors"
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")
FINGERPRINT_TENSORS = ("transformer.wte.weight", "transformer.wpe.weight",
                       "transformer.h.0.attn.c_attn.weight", "transformer.ln_f.weight")


class PrefixFileError(ValueError):
    """A prefix file that does not fit the model it is loaded onto, or is not a prefix file."""


class BaseModelWarning(UserWarning):
    """The base model has the right shape but not the weights the prefix was trained with."""


def fingerprint(model) -> str:
    """Short hash of ~4K evenly spaced values of a few base weights, rounded to bf16 so that casting the
    model to another float dtype keeps the fingerprint."""
    params = dict(model.named_parameters())
    h = hashlib.sha256()
    for name in FINGERPRINT_TENSORS:
        t = params[name].detach().flatten()
        t = t[:: max(1, t.numel() // 4096)]
        h.update(t.to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


def base_identity(model, name_or_path: str | None = None) -> dict:
    cfg = model.config
    return {**{k: getattr(cfg, k) for k in SHAPE_FIELDS}, "fingerprint": fingerprint(model),
            "name_or_path": name_or_path}


def save_prefix(tuner, directory, base_model_name_or_path: str | None = None) -> None:
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tuner.encoder.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, "prefix": tuner.config.to_dict(),
            "base_model": base_identity(tuner.model, base_model_name_or_path)}
    atomic_write(directory / WEIGHTS_FILE, lambda t: save_file(tensors, t, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_FILE, lambda t: Path(t).write_text(json.dumps(meta, indent=2) + "\n"))


def check_base(saved: dict, model, source: str) -> None:
    """Raise if `model`'s shape differs from the recorded one; warn if only its weights differ."""
    ours = base_identity(model)
    wanted = saved.get("name_or_path") or "its name was not recorded"
    diffs = [f"{k}={saved[k]} (this model: {ours[k]})" for k in SHAPE_FIELDS if saved[k] != ours[k]]
    if diffs:
        raise PrefixFileError(f"{source} was trained on a base model of another shape: {', '.join(diffs)}. "
                              f"Load it onto the model it was trained on ({wanted})")
    if saved["fingerprint"] != ours["fingerprint"]:
        warnings.warn(f"{source} was trained on a base model with other weights (fingerprint "
                      f"{saved['fingerprint']}, this model {ours['fingerprint']}; trained on: {wanted}); "
                      "its outputs will not be the trained ones", BaseModelWarning, stacklevel=4)


def load_prefix(cls, directory, model):
    directory = Path(directory)
    config_file = directory / CONFIG_FILE
    if not config_file.exists():
        hint = " (it holds a PEFT adapter: use PrefixTuner.from_peft)" if (directory / "adapter_config.json").exists() else ""
        raise PrefixFileError(f"{directory} has no {CONFIG_FILE}{hint}")
    try:
        meta = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrefixFileError(f"{config_file} is not valid JSON ({e}); the prefix file is damaged") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise PrefixFileError(f"{config_file} is not a {FORMAT} v{VERSION} file")
    check_base(meta["base_model"], model, str(directory))
    tuner = cls(model, PrefixConfig.from_dict(meta["prefix"]), initialize_weights=False)
    try:
        tensors = load_file(directory / WEIGHTS_FILE, device=str(model.transformer.wte.weight.device))
    except Exception as e:  # safetensors' own error for a cut or damaged file, or OSError
        raise PrefixFileError(f"{directory / WEIGHTS_FILE} cannot be read ({type(e).__name__}: {e}); the file is "
                              "incomplete or damaged") from None
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise PrefixFileError(f"{directory / WEIGHTS_FILE} holds non-finite values in {', '.join(sorted(bad))}; "
                              "the file is damaged or the prefix diverged in training")
    check_keys({k: v.shape for k, v in tuner.encoder.state_dict().items()}, tensors, str(directory / WEIGHTS_FILE))
    tuner.encoder.load_state_dict(tensors)
    return tuner
