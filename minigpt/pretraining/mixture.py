"""Pretraining text: a weighted mixture of sources, each tokenized once into cached uint16 shards.

A source is a name, a path and a sampling weight, written `NAME=PATH[:WEIGHT]` on the command line.
The path is one of:

- a folder with `train/` and `val/` folders of `.txt` books (one document per file, its non-empty lines
  kept as paragraphs) and/or `.jsonl` / `.jsonl.gz` files (one JSON document per line, text in `"text"`);
- a folder holding `train.jsonl[.gz]` and `val.jsonl[.gz]`;
- a folder of such files, or one file, with no split: the last `val_fraction` of its tokens validate.

Every document ends with `<|endoftext|>`. A batch row picks its source with probability proportional to
the weights (a source without one is weighted by its number of training tokens), then a random window
of that source's tokens. Caches are keyed on the files' contents, so an edited corpus is tokenized anew.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..io import atomic_write
from ..tokenizer import EOT, load_tokenizer

NEWLINE = 198  # "\n": a book's paragraphs each end with one
FORMAT = "v2"  # bump when the way documents become tokens changes (it is part of every cache key)
DOC_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz")


def is_doc_file(p: Path) -> bool:
    return p.is_file() and p.name.endswith(DOC_SUFFIXES)


def split_files(path: Path) -> tuple[list[Path], list[Path] | None]:
    """(train files, val files) of a source; val is None when the source has no split of its own."""
    if path.is_file():
        if not is_doc_file(path):
            raise ValueError(f"{path}: a corpus file must end in {', '.join(DOC_SUFFIXES)}")
        return [path], None
    if not path.is_dir():
        raise FileNotFoundError(f"corpus source {path} does not exist")
    if (path / "train").is_dir():
        val = sorted(p for p in (path / "val").iterdir() if is_doc_file(p)) if (path / "val").is_dir() else None
        return sorted(p for p in (path / "train").iterdir() if is_doc_file(p)), val or None
    named = {s: [p for p in sorted(path.iterdir()) if is_doc_file(p) and p.name.split(".")[0] == s]
             for s in ("train", "val")}
    if named["train"]:
        return named["train"], named["val"] or None
    return sorted(p for p in path.iterdir() if is_doc_file(p)), None


def documents(f: Path) -> Iterator[str]:
    """The documents of one file: the whole file for `.txt`, each line's `"text"` for `.jsonl[.gz]`."""
    if f.name.endswith(".txt"):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{f} is not UTF-8 text ({e.reason} at byte {e.start}): a binary file, or text in "
                             "another encoding; convert it to UTF-8 or leave it out of the source") from None
        if "\x00" in text:
            raise ValueError(f"{f} holds NUL bytes: a binary file, not text; leave it out of the source")
        yield text
        return
    opener = gzip.open if f.name.endswith(".gz") else open
    try:
        with opener(f, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{f}, line {n}: expected a JSON object with a \"text\" field "
                                     f"({type(e).__name__}: {e})") from None
                if not isinstance(text, str):
                    raise ValueError(f"{f}, line {n}: \"text\" must be a string, got {type(text).__name__}")
                yield text
    except (OSError, EOFError, UnicodeDecodeError) as e:  # truncated or corrupt gzip, wrong encoding
        raise ValueError(f"{f} cannot be read ({type(e).__name__}: {e}); is the file complete?") from None


def encode_files(files: list[Path], desc: str) -> np.ndarray:
    """All documents of `files` as one uint16 array, each document followed by <|endoftext|>.

    `.txt` books are encoded paragraph by paragraph (empty lines dropped, each paragraph ending in a
    newline); JSON documents as they are."""
    enc = load_tokenizer()
    threads = os.cpu_count() or 1
    parts: list[np.ndarray] = []
    pending: list[str] = []

    def flush():
        for ids in enc.encode_ordinary_batch(pending, num_threads=threads):
            parts.append(np.array(ids + [EOT], dtype=np.uint16))
        pending.clear()

    for f in tqdm(files, desc=f"tokenizing {desc}", unit="file", disable=len(files) < 2):
        for doc in documents(f):
            if f.name.endswith(".txt"):
                paras = [p for p in doc.split("\n") if p.strip()]
                ids = [t for part in enc.encode_ordinary_batch(paras, num_threads=threads) for t in part + [NEWLINE]]
                parts.append(np.array(ids + [EOT], dtype=np.uint16))
            else:
                pending.append(doc)
                if len(pending) >= 2048:
                    flush()
    flush()
    return np.concatenate(parts) if parts else np.zeros(0, np.uint16)


def content_key(files: list[Path]) -> str:
    """Hash of the files' names and bytes (and the tokenization format)."""
    h = hashlib.sha256(FORMAT.encode())
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()[:16]


def cached_tokens(files: list[Path], cache: Path, desc: str) -> np.ndarray:
    """`encode_files(files)`, memory-mapped from `cache` (written atomically the first time)."""
    if not cache.exists():
        arr = encode_files(files, desc)
        atomic_write(cache, lambda t: arr.tofile(t))
    return np.memmap(cache, dtype=np.uint16, mode="r")


@dataclass
class Source:
    """One corpus of the mixture: its token arrays and sampling weight."""

    name: str
    path: Path
    weight: float | None = None  # None: proportional to training tokens
    train: np.ndarray = field(default=None, repr=False)
    val: np.ndarray = field(default=None, repr=False)
    files: int = 0
    key: str | None = None  # the fingerprint of its files (`content_key`), once loaded

    @classmethod
    def parse(cls, spec: str) -> "Source":
        """`NAME=PATH[:WEIGHT]`, or `PATH[:WEIGHT]` (named after the path)."""
        name, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path, weight = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and head:
            try:
                weight = float(tail)
            except ValueError:
                raise ValueError(f"source {spec!r}: the weight after ':' must be a number, got {tail!r}") from None
            if not (weight > 0 and np.isfinite(weight)):
                raise ValueError(f"source {spec!r}: the weight must be a positive number, got {tail}")
            path = head
        p = Path(path).expanduser()
        return cls(name=name or p.name.split(".")[0], path=p, weight=weight)

    def load(self, cache_dir: Path, val_fraction: float = 0.1) -> "Source":
        train_files, val_files = split_files(self.path)
        if not train_files:
            raise FileNotFoundError(f"source {self.name!r}: no {', '.join(DOC_SUFFIXES)} files under {self.path}")
        self.files = len(train_files)
        self.key = key = content_key(train_files + (val_files or []))  # a resumed run checks it is unchanged
        folder = Path(cache_dir) / f"{self.name}-{key}"
        train = cached_tokens(train_files, folder / "train.bin", f"{self.name} train")
        if val_files:
            val = cached_tokens(val_files, folder / "val.bin", f"{self.name} val")
        else:  # no split of its own: the last tokens validate
            cut = int(len(train) * (1 - val_fraction))
            train, val = train[:cut], train[cut:]
        self.train, self.val = train, val
        return self


class Mixture:
    """Sources with normalized sampling weights; draws (input, target) windows for training."""

    def __init__(self, sources: list[Source], block: int):
        if not sources:
            raise ValueError("a mixture needs at least one source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must differ, got {names}; name them NAME=PATH")
        for s in sources:
            for split, arr in (("training", s.train), ("validation", s.val)):
                if len(arr) < block + 2:
                    raise ValueError(f"source {s.name!r} has {len(arr):,} {split} tokens, fewer than one window "
                                     f"of {block + 1}; add text or lower --block-size")
        w = np.array([s.weight if s.weight is not None else len(s.train) for s in sources], dtype=np.float64)
        self.sources, self.block, self.weights = sources, block, w / w.sum()

    def batch(self, batch: int, gen: np.random.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), each (batch, block): rows from sources drawn by weight, at random offsets."""
        which = gen.choice(len(self.sources), size=batch, p=self.weights)
        rows = []
        for i in which:
            data = self.sources[i].train
            s = int(gen.integers(0, len(data) - self.block - 1))
            rows.append(data[s:s + self.block + 1].astype(np.int64))
        x = torch.from_numpy(np.stack(rows)).to(device, non_blocking=True)
        return x[:, :-1], x[:, 1:]

    def describe(self) -> list[dict]:
        return [{"name": s.name, "path": str(s.path), "weight": round(float(w), 4), "train_tokens": int(len(s.train)),
                 "val_tokens": int(len(s.val)), "train_files": s.files} for s, w in zip(self.sources, self.weights)]


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab: int = 50257) -> float:
    """Cross-entropy (nats/token) of `val` under add-one-smoothed unigram counts of `train`."""
    counts = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(val, dtype=np.int64)].mean())


def val_windows(data: np.ndarray, block: int, n: int) -> torch.Tensor:
    """`n` evenly spaced (block + 1)-token windows of the validation tokens (fixed across runs)."""
    n = max(1, min(n, (len(data) - 1) // (block + 1)))
    starts = np.linspace(0, len(data) - block - 2, n).astype(np.int64)
    return torch.from_numpy(np.stack([data[s:s + block + 1].astype(np.int64) for s in starts]))
