"""Hugging Face GPT-2 checkpoints: resolve (local dir or hub id), load with strict key checks, save.

HF's GPT-2 stores its four projection matrices as `Conv1D` weights shaped (in, out); `nn.Linear` keeps
(out, in), so exactly these four are transposed on the way in and out. Loaded, they are made contiguous
(row-major (out, in), one tensor at a time): a transposed view would do the same arithmetic, but on CPU
the forward product is slower with it, and packing it for oneDNN needs a copy anyway. Every
tensor is copied out of the file (`owned_copy`), so that the file's mapping is released after loading.
`lm_head.weight` is tied to `wte.weight` and not stored.

A large checkpoint can be saved, and is read, as Hugging Face sharded safetensors: files
`model-00001-of-0000N.safetensors` of whole tensors, each at most a given size (a tensor larger than that
has a file of its own, as in transformers), and `model.safetensors.index.json` mapping each tensor to its file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import PRESETS, GPTConfig
from .io import CheckpointError, atomic_write

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
IGNORED_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers in old HF checkpoints
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILE = "model.safetensors.index.json"  # a sharded checkpoint's map of tensor name -> file
SHARD_PATTERN = "model-*-of-*.safetensors"
SHARD_ABOVE_BYTES = 40_000_000  # a checkpoint larger than this ships sharded (`shard_size`)
SHARD_BYTES = 50_000_000  # ... in files of at most this size


def _download(repo_id: str) -> Path:
    """Fetch config + weights of a hub model into the standard HF cache (reused offline afterwards)."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError as e:  # pragma: no cover - huggingface_hub is a runtime requirement
        raise CheckpointError("downloading checkpoints needs `pip install huggingface_hub`") from e
    try:
        config_path = Path(hf_hub_download(repo_id, "config.json"))
        for fname in WEIGHT_FILES:
            try:
                hf_hub_download(repo_id, fname)
                break
            except EntryNotFoundError:
                continue
    except Exception as e:  # offline, unknown repo, no network: say what to do instead
        raise CheckpointError(
            f"could not get {repo_id!r} from the Hugging Face hub or its local cache "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Connect once to download it "
            "(it is cached under $HF_HOME/hub and reused offline), or pass the path of a local directory "
            "holding config.json and model.safetensors / pytorch_model.bin") from e
    return config_path.parent


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local checkpoint directory for `name_or_path` (downloading a hub id if needed)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if name in PRESETS or (name.count("/") == 1 and not path.exists() and not name.startswith((".", "/"))):
        return _download(name)
    raise CheckpointError(f"no checkpoint directory at {path} and {name!r} is not a hub model id "
                          f"(known GPT-2 ids: {', '.join(PRESETS)})")


def read_weight_file(f: Path) -> dict[str, torch.Tensor]:
    """The tensors of one safetensors or PyTorch weight file, or an error naming it."""
    try:
        if f.name.endswith(".safetensors"):
            return load_file(f)
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{f} is not a readable weight file ({type(e).__name__}: {e}); "
                              "it may be truncated or corrupt: download or save it again") from e


def read_index(directory: Path) -> dict[str, str]:
    """A sharded checkpoint's weight map (tensor name -> shard file name), checked to be one."""
    index = directory / INDEX_FILE
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not all(isinstance(k, str) and isinstance(v, str) and "/" not in v for k, v in weight_map.items()):
            raise TypeError("its names and files must be strings, the files in the same folder")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index} is not a sharded-checkpoint index ({type(e).__name__}: {e}); "
                              "save or download the checkpoint again") from None
    return weight_map


def read_sharded(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a sharded checkpoint, each from the shard its index names."""
    weight_map = read_index(directory)
    sd = {}
    for shard in dict.fromkeys(weight_map.values()):  # each file once, in the index's order
        if not (directory / shard).is_file():
            raise CheckpointError(f"{directory / shard} is missing (listed in {directory / INDEX_FILE}); "
                                  "copy the whole checkpoint folder again")
        tensors = read_weight_file(directory / shard)
        wanted = [k for k, v in weight_map.items() if v == shard]
        absent = [k for k in wanted if k not in tensors]
        if absent:
            raise CheckpointError(f"{directory / shard} lacks {', '.join(absent[:4])}, which {INDEX_FILE} places "
                                  "there; save or download the checkpoint again")
        sd.update((k, tensors[k]) for k in wanted)
    return sd


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """A checkpoint folder's tensors, from the first of model.safetensors, a sharded checkpoint's index and
    shards, and pytorch_model.bin that it holds (the order transformers reads them in)."""
    if (directory / WEIGHT_FILES[0]).exists():
        return read_weight_file(directory / WEIGHT_FILES[0])
    if (directory / INDEX_FILE).exists():
        return read_sharded(directory)
    if (directory / WEIGHT_FILES[1]).exists():
        return read_weight_file(directory / WEIGHT_FILES[1])
    raise CheckpointError(f"{directory} holds no weights: none of {WEIGHT_FILES[0]}, {INDEX_FILE} (sharded), "
                          f"{WEIGHT_FILES[1]}")


def weight_files(directory: Path) -> list[Path]:
    """The weight files a checkpoint folder holds: model.safetensors, pytorch_model.bin, then a sharded
    checkpoint's index and the shards it names (those that exist)."""
    files = [directory / f for f in WEIGHT_FILES if (directory / f).is_file()]
    if (directory / INDEX_FILE).is_file():
        shards = dict.fromkeys(read_index(directory).values())
        files += [f for f in (directory / INDEX_FILE, *(directory / s for s in shards)) if f.is_file()]
    return files


def to_hf_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> HF GPT-2 layout (`transformer.` keys, Conv1D weights (in, out), no lm_head)."""
    out = {}
    for k, v in sd.items():
        if k == "lm_head.weight":
            continue
        out[k] = v.t().contiguous() if k.endswith(CONV1D_WEIGHTS) else v.contiguous()
    return out


def from_hf_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF GPT-2 state dict (with or without `transformer.`) -> our names; checks the head is tied."""
    out = {}
    lm_head = None
    for k, v in sd.items():
        if k == "lm_head.weight":
            lm_head = v
            continue
        if k.endswith(IGNORED_BUFFERS):
            continue
        name = k if k.startswith("transformer.") else "transformer." + k
        out[name] = v.t() if name.endswith(CONV1D_WEIGHTS) else v
    wte = out.get("transformer.wte.weight")
    if lm_head is not None and wte is not None and not torch.equal(lm_head, wte):
        raise CheckpointError("lm_head.weight differs from wte.weight: GPT-2 ties them, this checkpoint does not")
    return out


def owned_copy(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous copy of `v` in `dtype`, with its own memory: a tensor read from a safetensors file is a
    view of the file mapped into memory, and the pages of it that were read would stay resident for as
    long as any one tensor of the file still points into the mapping."""
    return torch.empty(v.shape, dtype=dtype).copy_(v)


def check_keys(expected: dict[str, torch.Size], got: dict[str, torch.Tensor], source: str) -> None:
    """Raise a CheckpointError naming every missing, unexpected and mis-shaped key."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(f"{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(expected[k])}"
                    for k in set(expected) & set(got) if tuple(got[k].shape) != tuple(expected[k]))
    if missing or unexpected or shapes:
        def show(xs):
            return ", ".join(xs[:8]) + (f" ... ({len(xs)} in all)" if len(xs) > 8 else "")
        parts = [f"missing keys: {show(missing)}" if missing else "",
                 f"unexpected keys: {show(unexpected)}" if unexpected else "",
                 f"shape mismatches: {show(shapes)}" if shapes else ""]
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(p for p in parts if p))


def local_checkpoint(name_or_path: str | os.PathLike) -> Path | None:
    """The local checkpoint folder `name_or_path` names, or None for a hub id (downloaded when it is loaded)."""
    path = Path(name_or_path).expanduser()
    return path if path.is_dir() else None


def read_config(directory: Path) -> GPTConfig:
    """A checkpoint directory's `config.json` as a GPTConfig (its weights are not read)."""
    config_file = directory / "config.json"
    if not config_file.exists():
        raise CheckpointError(f"{directory} has no config.json")
    try:
        values = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_file} is not valid JSON: {e}") from e
    if not isinstance(values, dict):
        raise CheckpointError(f"{config_file} holds a {type(values).__name__}, not a GPT-2 config object")
    try:  # a shape this model cannot take (n_head not dividing n_embd, another model_type, ...)
        return GPTConfig.from_hf(values)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{config_file}: {e}") from None


def load_config(name_or_path: str | os.PathLike) -> GPTConfig:
    """A checkpoint's shape, from a local directory or a hub id, without reading its weights."""
    return read_config(resolve_checkpoint(name_or_path))


def stored_shapes(cls, config: GPTConfig) -> dict[str, torch.Size]:
    """The shape of every tensor a checkpoint of model class `cls` with `config` stores (our names)."""
    with torch.device("meta"):
        model = cls(config)
    return {k: v.shape for k, v in model.state_dict().items() if k != "lm_head.weight"}


def read_checkpoint(cls, name_or_path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """A checkpoint's config and tensors (our names, as stored), checked to fit the model `cls` makes of it."""
    directory = resolve_checkpoint(name_or_path)
    config = read_config(directory)
    sd = from_hf_names(read_state_dict(directory))
    check_keys(stored_shapes(cls, config), sd, str(directory))
    return config, sd


def load_pretrained(cls, name_or_path, *, dtype=None, device=None):
    config, sd = read_checkpoint(cls, name_or_path)
    with torch.device("meta"):
        model = cls(config)
    dtype = dtype or torch.float32
    # popped one at a time, so that each checkpoint tensor is freed once its converted copy exists
    state = {k: owned_copy(sd.pop(k), dtype) for k in list(sd)}
    model.load_state_dict(state, strict=False, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # re-tie after assign
    model.eval()  # like transformers: dropout off until the caller trains
    return model.to(device=device) if device is not None else model


def save_pretrained(model, directory, dtype: torch.dtype | None = None, max_shard_bytes: int | None = None) -> None:
    """`write_checkpoint` of a model's weights and shape."""
    write_checkpoint(model.state_dict(), model.config, directory, dtype, max_shard_bytes)


def write_checkpoint(sd: dict[str, torch.Tensor], config: GPTConfig, directory, dtype: torch.dtype | None = None,
                     max_shard_bytes: int | None = None) -> set[str]:
    """Write `config.json` and the weights `sd` (our names) in Hugging Face GPT-2 format, cast to `dtype`:
    one `model.safetensors`, or with `max_shard_bytes` shards of at most that size and their index. Every
    file is written atomically; weight files of an earlier save that the new one does not use are removed.
    Returns the names of the weight files written."""
    directory = Path(directory)
    sd = to_hf_names({k: v.detach().cpu() for k, v in sd.items()})
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    if max_shard_bytes is None:
        atomic_write(directory / WEIGHT_FILES[0], lambda t: save_file(sd, t, metadata={"format": "pt"}))
        written = {WEIGHT_FILES[0]}
    else:
        written = write_shards(sd, directory, max_shard_bytes)
    stale = [directory / WEIGHT_FILES[0], directory / INDEX_FILE, *directory.glob(SHARD_PATTERN)]
    for f in stale:
        if f.name not in written and f.exists():
            f.unlink()
    cfg = json.dumps({**config.to_hf(), "torch_dtype": str(next(iter(sd.values())).dtype).split(".")[-1]},
                     indent=2)
    atomic_write(directory / "config.json", lambda t: Path(t).write_text(cfg + "\n"))
    return written


def shard_size(sd: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> int | None:
    """`SHARD_BYTES` for weights `sd` (tied head counted once) that take more than `SHARD_ABOVE_BYTES` in
    `dtype`, so that a large checkpoint travels in files of a manageable size; None (one file) otherwise."""
    size = sum(v.numel() * (v.element_size() if dtype is None else dtype.itemsize)
               for k, v in sd.items() if k != "lm_head.weight")
    return SHARD_BYTES if size > SHARD_ABOVE_BYTES else None


def header_bytes(name: str) -> int:
    """An upper bound on what one tensor adds to a safetensors file's header (its name, dtype, shape, offsets)."""
    return len(name.encode()) + 128


def shard_plan(sd: dict[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    """Tensor names in order, cut into shards whose files take at most `max_bytes` each (header included);
    a tensor that alone takes more has a shard of its own."""
    base = 8 + 64  # the header's length field and its {"__metadata__": ...}
    shards, size = [[]], base
    for name, t in sd.items():
        need = t.numel() * t.element_size() + header_bytes(name)
        if shards[-1] and size + need > max_bytes:
            shards, size = shards + [[]], base
        shards[-1].append(name)
        size += need
    return shards


def write_shards(sd: dict[str, torch.Tensor], directory: Path, max_bytes: int) -> set[str]:
    """Write `sd` (HF names) as `model-0000i-of-0000N.safetensors` shards of at most `max_bytes` each and
    their `model.safetensors.index.json` (written last); returns the names of the files written."""
    if max_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be > 0, got {max_bytes}")
    plan = shard_plan(sd, max_bytes)
    weight_map = {}
    for i, names in enumerate(plan, 1):
        shard = f"model-{i:05d}-of-{len(plan):05d}.safetensors"
        part = {k: sd[k] for k in names}
        atomic_write(directory / shard, lambda t: save_file(part, t, metadata={"format": "pt"}))
        weight_map.update(dict.fromkeys(names, shard))
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
             "weight_map": weight_map}
    atomic_write(directory / INDEX_FILE, lambda t: Path(t).write_text(json.dumps(index, indent=2) + "\n"))
    return {INDEX_FILE, *weight_map.values()}
