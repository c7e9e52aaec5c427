"""Weights that travel in small files: an int8 pack of a checkpoint, and Hugging Face sharded safetensors.

    python -m minigpt.export pack CHECKPOINT PACK [--max-file-mib 16]        # int8 rows, files of <= 16 MiB
    python -m minigpt.export unpack PACK CHECKPOINT [--dtype bfloat16]       # back to a normal checkpoint
    python -m minigpt.export compare CHECKPOINT REBUILT --text FILE          # held-out loss of both
    python -m minigpt.export shard CHECKPOINT OUT [--max-shard-mb 50]        # HF sharded safetensors

The pack stores each 2-D weight in nn.Linear's (out, in) layout, so that a row is one output feature (or one
token's or position's embedding), as int8 values q with one float32 scale s per row: s = max|row| / 127 and
q = round(w / s), so every weight comes back within s / 2. 1-D tensors (biases, LayerNorms) stay float32.
All of it is one byte stream cut into files `weights-00001.bin`, ... of at most the given size, and
`manifest.json` holds the model's config, each tensor's place in the stream and each file's size and sha256,
which unpacking checks. Every file is written atomically, the manifest last.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .checks import positive
from .config import GPTConfig
from .io import CheckpointError, atomic_write
from .model import GPT
from .runtime import evaluating
from .weights import check_keys, read_checkpoint, stored_shapes, write_checkpoint

FORMAT = "minigpt-int8-rows/1"
MANIFEST = "manifest.json"
PART_PATTERN = "weights-*.bin"
MIB, MB = 2 ** 20, 10 ** 6


# ---------------------------------------------------------------- int8 rows
def quantize_rows(w: torch.Tensor, name: str = "weight") -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (rows, cols), scale float32 (rows,)) with w ~ q * scale[:, None], |error| <= scale / 2."""
    w = w.float()
    if not bool(torch.isfinite(w).all()):
        raise CheckpointError(f"{name} holds NaN or infinite values, which int8 cannot hold; pack a healthy checkpoint")
    scale = w.abs().amax(dim=1) / 127  # (rows,)
    q = torch.round(w / torch.where(scale > 0, scale, 1.0)[:, None]).clamp(-127, 127)  # a zero row stays zero
    return q.to(torch.int8), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 (rows, cols) = q * scale per row."""
    return q.float() * scale.float()[:, None]


class Entry(NamedTuple):
    """One tensor's place in a pack's byte stream: int8 rows and their float32 scales, or float32 values."""
    name: str
    shape: list[int]
    encoding: str  # "int8-rows" | "float32"
    offset: int


def encode(sd: dict[str, torch.Tensor]) -> tuple[list[Entry], Iterator[bytes]]:
    """The entries of a state dict's tensors and (lazily) their bytes, little-endian, in the same order."""
    entries, offset = [], 0
    for name, t in sd.items():
        kind = "int8-rows" if t.ndim == 2 else "float32"
        entries.append(Entry(name, list(t.shape), kind, offset))
        offset += t.numel() + 4 * t.shape[0] if kind == "int8-rows" else 4 * t.numel()

    def blocks() -> Iterator[bytes]:
        for e in entries:
            if e.encoding == "int8-rows":
                q, scale = quantize_rows(sd[e.name], e.name)
                yield q.numpy().tobytes() + scale.numpy().astype("<f4").tobytes()
            else:
                yield sd[e.name].float().numpy().astype("<f4").tobytes()
    return entries, blocks()


def decode(e: Entry, data: bytes | bytearray) -> torch.Tensor:
    """Tensor `e` (float32) out of a pack's byte stream."""
    if e.encoding == "int8-rows":
        rows, cols = e.shape
        q = np.frombuffer(data, np.int8, rows * cols, e.offset).reshape(rows, cols)
        scale = np.frombuffer(data, "<f4", rows, e.offset + rows * cols)
        return dequantize_rows(torch.from_numpy(q.copy()), torch.from_numpy(scale.astype(np.float32)))
    if e.encoding == "float32":
        return torch.from_numpy(np.frombuffer(data, "<f4", int(np.prod(e.shape)), e.offset).astype(np.float32)
                                ).reshape(e.shape)
    raise ValueError(f"unknown encoding {e.encoding!r}")


# ---------------------------------------------------------------- files
def write_parts(blocks: Iterable[bytes], out: Path, max_bytes: int) -> list[dict]:
    """Cut the concatenated `blocks` into files `weights-00001.bin`, ... of `max_bytes` (the last one
    shorter); returns each file's name, size and sha256."""
    files, buf = [], bytearray()

    def flush(data: bytes) -> None:
        name = f"weights-{len(files) + 1:05d}.bin"
        atomic_write(out / name, lambda t: Path(t).write_bytes(data))
        files.append({"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    for block in blocks:
        buf += block
        while len(buf) >= max_bytes:
            flush(bytes(buf[:max_bytes]))
            del buf[:max_bytes]
    if buf or not files:
        flush(bytes(buf))
    return files


def pack(checkpoint: str | Path, out: str | Path, max_file_bytes: int = 16 * MIB) -> dict:
    """Write the int8 pack of `checkpoint` (a folder or hub id) into folder `out`; returns its manifest."""
    if max_file_bytes <= 0:
        raise ValueError(f"max_file_bytes must be > 0, got {max_file_bytes}")
    out = Path(out)
    config, sd = read_checkpoint(GPT, checkpoint)
    entries, blocks = encode(sd)
    files = write_parts(blocks, out, max_file_bytes)
    manifest = {"format": FORMAT, "config": config.to_hf(), "tensors": [e._asdict() for e in entries],
                "files": files, "total_bytes": sum(f["bytes"] for f in files)}
    atomic_write(out / MANIFEST, lambda t: Path(t).write_text(json.dumps(manifest, indent=1) + "\n"))
    for stale in set(out.glob(PART_PATTERN)) - {out / f["name"] for f in files}:  # of an earlier, longer pack
        stale.unlink()
    return manifest


def read_manifest(folder: Path) -> tuple[GPTConfig, list[Entry], list[dict]]:
    """A pack's config, tensor entries and files, or a CheckpointError saying what is wrong with its manifest."""
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {MANIFEST}; pass a folder written by `python -m minigpt.export pack`")
    try:
        m = json.loads(path.read_text())
        if m.get("format") != FORMAT:
            raise ValueError(f"format {m.get('format')!r}, not {FORMAT!r}")
        entries = [Entry(**e) for e in m["tensors"]]
        files = [dict(name=str(f["name"]), bytes=int(f["bytes"]), sha256=str(f["sha256"])) for f in m["files"]]
        if any(Path(f["name"]).name != f["name"] or f["name"].startswith(".") for f in files):
            raise ValueError("a file name is not a plain name in the pack's folder")
        config = GPTConfig.from_hf(m["config"])
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid pack manifest ({type(e).__name__}: {e}); "
                              "pack the checkpoint again") from None
    return config, entries, files


def read_pack(folder: str | Path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """A pack's config and float32 state dict (our names), after checking every file's size and sha256."""
    folder = Path(folder)
    config, entries, files = read_manifest(folder)
    data = bytearray()
    for f in files:
        path = folder / f["name"]
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (listed in {folder / MANIFEST}); copy the whole pack again")
        blob = path.read_bytes()
        if len(blob) != f["bytes"] or hashlib.sha256(blob).hexdigest() != f["sha256"]:
            raise CheckpointError(f"{path} is corrupt: its size or sha256 differs from {MANIFEST}'s; copy it again")
        data += blob
    try:
        sd = {e.name: decode(e, data) for e in entries}
    except (ValueError, TypeError) as e:  # an entry outside the stream, of an unknown encoding, mistyped
        raise CheckpointError(f"{folder / MANIFEST} does not describe its files ({e}); "
                              "pack the checkpoint again") from None
    check_keys(stored_shapes(GPT, config), sd, str(folder))
    return config, sd


def unpack(folder: str | Path, out: str | Path, dtype: torch.dtype = torch.float32) -> None:
    """Rebuild a checkpoint folder (config.json + model.safetensors in `dtype`) from the pack in `folder`."""
    config, sd = read_pack(folder)
    write_checkpoint(sd, config, out, dtype)


# ---------------------------------------------------------------- quality
class Losses(NamedTuple):
    """Mean next-token loss (nats) of a model and of its rebuilt copy on the same tokens."""
    original: float
    rebuilt: float

    @property
    def relative_change(self) -> float:
        return (self.rebuilt - self.original) / self.original


@torch.no_grad()
def round_trip_losses(original: GPT, rebuilt: GPT, tokens: torch.Tensor, batch: int = 8) -> Losses:
    """Both models' mean next-token loss on `tokens` (B, T) (each row scored on itself, shifted), `batch`
    rows at a time."""
    def loss(model: GPT) -> float:
        with evaluating(model):
            total = sum(float(model(x, labels=x).loss) * x[:, 1:].numel() for x in tokens.split(batch))
        return total / tokens[:, 1:].numel()
    return Losses(loss(original), loss(rebuilt))


def text_windows(path: Path, block: int, max_tokens: int) -> torch.Tensor:
    """The first `max_tokens` GPT-2 tokens of a text file as rows of `block` tokens (B, block)."""
    from .tokenizer import load_tokenizer
    ids = load_tokenizer().encode_ordinary(path.read_text(encoding="utf-8"))[:max_tokens]
    n = len(ids) // block
    if n == 0:
        raise SystemExit(f"error: {path} holds {len(ids)} tokens, fewer than one window of {block}; give a longer text")
    return torch.tensor(ids[:n * block]).view(n, block)


# ---------------------------------------------------------------- command line
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m minigpt.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("pack", help="int8 pack of a checkpoint, in files of at most --max-file-mib")
    c.add_argument("checkpoint")
    c.add_argument("out")
    c.add_argument("--max-file-mib", type=positive(float), default=16.0)
    c = sub.add_parser("unpack", help="a normal checkpoint folder from a pack (sha256s checked)")
    c.add_argument("pack")
    c.add_argument("out")
    c.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    c = sub.add_parser("compare", help="held-out loss of a checkpoint and of its rebuilt copy")
    c.add_argument("checkpoint")
    c.add_argument("rebuilt")
    c.add_argument("--text", required=True, type=Path, help="a UTF-8 text file the models were not trained on")
    c.add_argument("--max-tokens", type=positive(int), default=20_000)
    c = sub.add_parser("shard", help="Hugging Face sharded safetensors of at most --max-shard-mb each")
    c.add_argument("checkpoint")
    c.add_argument("out")
    c.add_argument("--max-shard-mb", type=positive(float), default=50.0)
    c.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default: as stored")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Carry out one command; returns what it prints."""
    if args.command == "pack":
        m = pack(args.checkpoint, args.out, int(args.max_file_mib * MIB))
        return {"pack": args.out, "files": len(m["files"]), "total_bytes": m["total_bytes"],
                "largest_file_bytes": max(f["bytes"] for f in m["files"])}
    if args.command == "unpack":
        unpack(args.pack, args.out, getattr(torch, args.dtype))
        return {"checkpoint": args.out, "dtype": args.dtype}
    if args.command == "compare":
        original, rebuilt = GPT.from_pretrained(args.checkpoint), GPT.from_pretrained(args.rebuilt)
        tokens = text_windows(args.text, min(256, original.config.n_positions), args.max_tokens)
        losses = round_trip_losses(original, rebuilt, tokens)
        return {**losses._asdict(), "relative_change": losses.relative_change, "tokens": tokens.numel()}
    config, sd = read_checkpoint(GPT, args.checkpoint)
    written = write_checkpoint(sd, config, args.out, args.dtype and getattr(torch, args.dtype),
                               max_shard_bytes=int(args.max_shard_mb * MB))
    return {"checkpoint": args.out, "shards": sorted(n for n in written if n.startswith("model-"))}


def main(argv=None) -> dict:
    try:
        result = run(parse_args(argv))
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
