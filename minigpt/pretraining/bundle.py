"""Data and results that travel in a few small files: a corpus subset for a GPU machine, and a folder of
results cut into parts for the way back.

    python -m minigpt.pretraining.bundle corpus OUT.tar.xz --source NAME=PATH[:WEIGHT] ... [--max-mib 15]
    python -m minigpt.pretraining.bundle unpack OUT.tar.xz DEST      # DEST/<name>/{train,val}/ per source
    python -m minigpt.pretraining.bundle ship FOLDER OUTDIR [--name results] [--max-file-mib 16] [--max-mib 64]
    python -m minigpt.pretraining.bundle receive OUTDIR/results.tar DEST

`corpus` keeps every source's validation split whole (the held-out losses stay comparable with models
trained on all of it) and a deterministic subset of its training documents (ranked by a hash of their
place, so a larger budget keeps the same documents and adds more), sized so that each source's share of
the compressed bundle is its mixture weight: every source is then repeated equally often in training.
Books stay `.txt` files and JSON documents stay their JSON lines, so they tokenize exactly as the
originals do (`mixture.encode_files`). `BUNDLE.json` inside says what was kept of each source.

`ship` writes one uncompressed tar of a folder as parts `NAME.tar.000`, `NAME.tar.001`, ... of at most
`--max-file-mib` each (a machine that returns few, bounded files), refusing a folder over `--max-mib`
with its largest files named; `receive` joins the parts and extracts them.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..checks import positive
from ..io import atomic_write
from .mixture import Source, split_files

MIB = 2 ** 20
SAMPLE_BYTES = 2 * MIB  # of each source's ranked training text, to estimate how well it compresses


@dataclass
class Doc:
    """One document of a source: a whole `.txt` book (kept as its file) or one JSON line."""
    file: str  # the file it came from (a book's name is kept in the bundle)
    data: bytes
    book: bool

    def rank(self, seed: int, n: int) -> str:
        return hashlib.sha256(f"{seed}:{self.file}:{n}".encode()).hexdigest()


def read_docs(files: list[Path]) -> list[Doc]:
    """The documents of `files`, each JSON line as its bytes (a gzip file read through)."""
    docs = []
    for f in files:
        if f.name.endswith(".txt"):
            docs.append(Doc(f.name, f.read_bytes(), True))
            continue
        opener = gzip.open if f.name.endswith(".gz") else open
        try:
            with opener(f, "rb") as fh:
                docs += [Doc(f.name, line.rstrip(b"\n"), False) for line in fh if line.strip()]
        except (OSError, EOFError) as e:
            raise ValueError(f"{f} cannot be read ({type(e).__name__}: {e}); is the file complete?") from None
    return docs


def source_docs(source: Source, seed: int) -> tuple[list[Doc], list[Doc]]:
    """(training documents best-ranked first, validation documents) of a source with its own split."""
    train, val = split_files(source.path)
    if val is None:
        raise ValueError(f"source {source.name!r} ({source.path}) has no validation split of its own; a bundle "
                         "keeps validation whole, so give the source train/ and val/ (or train.jsonl and val.jsonl)")
    docs = read_docs(train)
    order = sorted(range(len(docs)), key=lambda i: docs[i].rank(seed, i))
    return [docs[i] for i in order], read_docs(val)


def ratio(docs: list[Doc]) -> float:
    """Compressed over raw bytes of (a sample of) these documents under xz."""
    sample, size = [], 0
    for d in docs:
        if size >= SAMPLE_BYTES:
            break
        sample.append(d.data)
        size += len(d.data)
    raw = b"\n".join(sample)
    return len(lzma.compress(raw, preset=6)) / max(len(raw), 1)


def take(docs: list[Doc], raw_bytes: float) -> list[Doc]:
    """The best-ranked documents up to `raw_bytes` (at least one)."""
    out, size = [], 0
    for d in docs:
        if out and size + len(d.data) > raw_bytes:
            break
        out.append(d)
        size += len(d.data)
    return out


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # mtime 0, owner 0: the same selection gives the same bytes
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_split(tar: tarfile.TarFile, folder: str, docs: list[Doc]) -> None:
    """Books as `folder/<book>.txt`, JSON documents as the lines of `folder/docs.jsonl`."""
    for d in docs:
        if d.book:
            add(tar, f"{folder}/{d.file}", d.data)
    lines = [d.data for d in docs if not d.book]
    if lines:
        add(tar, f"{folder}/docs.jsonl", b"\n".join(lines) + b"\n")


def summary(name: str, weight: float, ranked: list[Doc], kept: list[Doc], val: list[Doc]) -> dict:
    total = sum(len(d.data) for d in ranked)
    raw = sum(len(d.data) for d in kept)
    return {"name": name, "weight": round(weight, 4), "train_docs": len(kept), "train_docs_total": len(ranked),
            "train_bytes": raw, "train_bytes_total": total, "train_fraction": round(raw / max(total, 1), 4),
            "val_docs": len(val), "val_bytes": sum(len(d.data) for d in val)}


def write_corpus(out: Path, chosen: list[tuple[Source, float, list[Doc], list[Doc], list[Doc]]], meta: dict) -> int:
    """The tar.xz of the chosen documents (atomically); returns its size in bytes."""
    def write(tmp):
        with tarfile.open(tmp, "w:xz", preset=6, format=tarfile.PAX_FORMAT) as tar:
            for s, _, _, kept, val in chosen:
                add_split(tar, f"{s.name}/train", kept)
                add_split(tar, f"{s.name}/val", val)
            add(tar, "BUNDLE.json", json.dumps(meta, indent=2).encode())
    atomic_write(out, write)
    return out.stat().st_size


def build_corpus(specs: list[str], out: str | Path, max_mib: float = 15.0, seed: int = 0) -> dict:
    """Write the bundle of `specs` (`NAME=PATH[:WEIGHT]`) to `out`, at most `max_mib` MiB; returns BUNDLE.json."""
    sources = [Source.parse(s) for s in specs]
    if len({s.name for s in sources}) != len(sources):
        raise ValueError(f"source names must differ, got {[s.name for s in sources]}; name them NAME=PATH")
    docs = [source_docs(s, seed) for s in sources]
    raw = [sum(len(d.data) for d in train) for train, _ in docs]
    weights = [s.weight if s.weight is not None else r for s, r in zip(sources, raw)]
    weights = [w / sum(weights) for w in weights]
    ratios = [ratio(train) for train, _ in docs]
    budget = max_mib * MIB
    val_est = sum(r * len(d.data) for r, (_, val) in zip(ratios, docs) for d in val)
    if val_est > 0.9 * budget:
        raise ValueError(f"the validation splits alone need about {val_est / MIB:.1f} MiB compressed, over 90% of "
                         f"--max-mib {max_mib}; raise it")
    scale, out = 0.97, Path(out)
    for _ in range(4):  # the estimate is close; shrink and write again while the bundle is too large
        train_budget = scale * budget - val_est
        chosen = [(s, w, train, take(train, w * train_budget / r), val)
                  for s, w, r, (train, val) in zip(sources, weights, ratios, docs)]
        meta = {"format": "minigpt-corpus-bundle/1", "seed": seed, "max_mib": max_mib,
                "sources": [summary(s.name, w, train, kept, val) for s, w, train, kept, val in chosen]}
        size = write_corpus(out, chosen, meta)
        if size <= budget:
            return {**meta, "bytes": size}
        scale *= 0.98 * budget / size
    out.unlink()
    raise ValueError(f"could not fit the bundle in {max_mib} MiB (last try {size / MIB:.1f} MiB); raise --max-mib")


def extract(tar_path: Path, dest: Path) -> None:
    try:
        with tarfile.open(tar_path) as tar:
            tar.extractall(dest, filter="data")  # no absolute paths, links out or devices
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as e:
        raise ValueError(f"{tar_path} cannot be read ({type(e).__name__}: {e}); is it complete?") from None


def unpack(bundle: str | Path, dest: str | Path) -> dict:
    """Extract a corpus bundle into `dest` (each source a folder `mixture.Source` reads); returns BUNDLE.json."""
    bundle, dest = Path(bundle), Path(dest)
    if not bundle.is_file():
        raise FileNotFoundError(f"corpus bundle {bundle} does not exist; make it with `bundle corpus`")
    extract(bundle, dest)
    return json.loads((dest / "BUNDLE.json").read_text())


def ship(folder: str | Path, out_dir: str | Path, name: str = "results", max_file_mib: float = 16.0,
         max_mib: float = 64.0) -> list[Path]:
    """`folder` as one tar cut into parts `out_dir/NAME.tar.000`, ... of at most `max_file_mib` MiB each."""
    folder, out_dir = Path(folder), Path(out_dir)
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
    total = sum(p.stat().st_size for p in files)
    if total > max_mib * MIB * 0.99:
        biggest = ", ".join(f"{p.relative_to(folder)} ({p.stat().st_size / MIB:.1f} MiB)" for p in files[:3])
        raise ValueError(f"{folder} holds {total / MIB:.1f} MiB, over --max-mib {max_mib}; the largest: {biggest}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        whole = Path(tmp) / "whole.tar"
        with tarfile.open(whole, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(folder, arcname=folder.name)
        part, parts = int(max_file_mib * MIB), []
        with open(whole, "rb") as fh:
            while chunk := fh.read(part):
                p = out_dir / f"{name}.tar.{len(parts):03d}"
                atomic_write(p, lambda t, c=chunk: Path(t).write_bytes(c))
                parts.append(p)
    return parts


def receive(prefix: str | Path, dest: str | Path) -> list[Path]:
    """Join the parts `PREFIX.000`, `PREFIX.001`, ... that `ship` wrote and extract them into `dest`."""
    prefix = Path(prefix)
    parts = sorted(prefix.parent.glob(prefix.name + ".[0-9][0-9][0-9]"))
    if not parts:
        raise FileNotFoundError(f"no parts {prefix}.000, {prefix}.001, ...; give the path `ship` wrote, less its number")
    missing = [i for i, p in enumerate(parts) if p.name != f"{prefix.name}.{i:03d}"]
    if missing:
        raise ValueError(f"part {prefix.name}.{missing[0]:03d} is missing; fetch every part")
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / "whole.tar"
        with open(whole, "wb") as out:
            for p in parts:
                with open(p, "rb") as fh:
                    shutil.copyfileobj(fh, out)
        extract(whole, Path(dest))
    return parts


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m minigpt.pretraining.bundle",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus", help="a corpus subset as one .tar.xz")
    c.add_argument("out")
    c.add_argument("--source", action="append", required=True, metavar="NAME=PATH[:WEIGHT]")
    c.add_argument("--max-mib", type=positive(float), default=15.0)
    c.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("unpack", help="extract a corpus bundle")
    c.add_argument("bundle")
    c.add_argument("dest")
    c = sub.add_parser("ship", help="a folder as tar parts of bounded size")
    c.add_argument("folder")
    c.add_argument("out_dir")
    c.add_argument("--name", default="results")
    c.add_argument("--max-file-mib", type=positive(float), default=16.0)
    c.add_argument("--max-mib", type=positive(float), default=64.0)
    c = sub.add_parser("receive", help="join and extract what `ship` wrote")
    c.add_argument("prefix", help="e.g. OUTDIR/results.tar")
    c.add_argument("dest")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    try:
        if a.cmd == "corpus":
            result = build_corpus(a.source, a.out, a.max_mib, a.seed)
        elif a.cmd == "unpack":
            result = unpack(a.bundle, a.dest)
        elif a.cmd == "ship":
            result = [str(p) for p in ship(a.folder, a.out_dir, a.name, a.max_file_mib, a.max_mib)]
        else:
            result = [str(p) for p in receive(a.prefix, a.dest)]
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
