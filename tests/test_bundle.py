"""What travels to and from a GPU machine: a corpus subset within a size budget that tokenizes exactly as the
originals (validation whole, training documents a nested, deterministic subset), and results cut into
bounded parts that join back byte for byte."""
from __future__ import annotations

import gzip
import json
import random

import pytest

from minigpt.pretraining.bundle import MIB, build_corpus, main, receive, ship, unpack
from minigpt.pretraining.mixture import Source

WORDS = ("the a of and to in was he she it that his her with for as had on at by not be but this which "
         "ship river house garden letter morning evening storm captain doctor window story").split()


def text(rng, words):
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def corpora(tmp_path):
    """A book source (train/ and val/ folders of .txt) and a JSON source (train.jsonl.gz, val.jsonl)."""
    rng = random.Random(0)
    books = tmp_path / "books"
    for split, n in (("train", 30), ("val", 2)):
        (books / split).mkdir(parents=True)
        for i in range(n):
            paras = [text(rng, rng.randint(20, 200)) for _ in range(rng.randint(2, 6))]
            (books / split / f"book{i:02d}.txt").write_text("\n\n".join(paras) + "\n")
    web = tmp_path / "web"
    web.mkdir()
    with gzip.open(web / "train.jsonl.gz", "wt") as f:
        for i in range(300):
            f.write(json.dumps({"id": i, "text": text(rng, rng.randint(10, 150))}) + "\n")
    (web / "val.jsonl").write_text("".join(json.dumps({"id": i, "text": text(rng, 40)}) + "\n" for i in range(5)))
    return [f"books={books}:0.5", f"web={web}:0.5"]


def tokens(path, cache):
    s = Source("x", path).load(cache)
    return s.train.tolist(), s.val.tolist()


def test_corpus_bundle_fits_its_budget_and_tokenizes_as_the_originals(tmp_path):
    specs = corpora(tmp_path)
    meta = build_corpus(specs, tmp_path / "small.tar.xz", max_mib=0.015)
    assert (tmp_path / "small.tar.xz").stat().st_size <= 0.015 * MIB
    assert meta == {**unpack(tmp_path / "small.tar.xz", tmp_path / "got"), "bytes": meta["bytes"]}
    for spec, info in zip(specs, meta["sources"]):
        name, _, path = spec.partition("=")
        orig = tmp_path / name
        got = tmp_path / "got" / name
        assert tokens(got, tmp_path / "c1")[1] == tokens(orig, tmp_path / "c2")[1]  # validation whole
        assert 0 < info["train_docs"] < info["train_docs_total"]  # a real subset
    books = {p.name: p.read_bytes() for p in (tmp_path / "got/books/train").iterdir()}
    assert len(books) == meta["sources"][0]["train_docs"]
    assert all(data == (tmp_path / "books/train" / name).read_bytes() for name, data in books.items())
    with gzip.open(tmp_path / "web/train.jsonl.gz", "rb") as f:
        original = set(f.read().splitlines())
    kept = (tmp_path / "got/web/train/docs.jsonl").read_bytes().splitlines()
    assert len(kept) == meta["sources"][1]["train_docs"] and set(kept) <= original


def test_a_larger_budget_keeps_the_same_documents_and_adds_more(tmp_path):
    specs = corpora(tmp_path)
    build_corpus(specs, tmp_path / "a.tar.xz", max_mib=0.015)
    build_corpus(specs, tmp_path / "b.tar.xz", max_mib=0.015)
    assert (tmp_path / "a.tar.xz").read_bytes() == (tmp_path / "b.tar.xz").read_bytes()  # deterministic
    build_corpus(specs, tmp_path / "big.tar.xz", max_mib=0.025)
    small, big = unpack(tmp_path / "a.tar.xz", tmp_path / "s"), unpack(tmp_path / "big.tar.xz", tmp_path / "g")
    for s, b in zip(small["sources"], big["sources"]):
        assert b["train_docs"] > s["train_docs"]
    assert {p.name for p in (tmp_path / "s/books/train").iterdir()} < {p.name for p in (tmp_path / "g/books/train").iterdir()}
    assert set((tmp_path / "s/web/train/docs.jsonl").read_bytes().splitlines()) < \
        set((tmp_path / "g/web/train/docs.jsonl").read_bytes().splitlines())


def test_weights_set_each_sources_share(tmp_path):
    specs = corpora(tmp_path)
    even = build_corpus(specs, tmp_path / "even.tar.xz", max_mib=0.02)["sources"]
    specs[0] = specs[0].replace(":0.5", ":0.2")
    books_light = build_corpus(specs, tmp_path / "light.tar.xz", max_mib=0.02)["sources"]
    assert books_light[0]["train_bytes"] < even[0]["train_bytes"]
    assert books_light[1]["train_bytes"] > even[1]["train_bytes"]


def test_bad_corpus_bundles_are_refused_with_the_fix(tmp_path):
    specs = corpora(tmp_path)
    nosplit = tmp_path / "nosplit"
    nosplit.mkdir()
    (nosplit / "all.jsonl").write_text(json.dumps({"text": "one"}) + "\n")
    with pytest.raises(ValueError, match="no validation split"):
        build_corpus([f"n={nosplit}"], tmp_path / "x.tar.xz")
    with pytest.raises(ValueError, match="validation splits alone.*raise it"):
        build_corpus(specs, tmp_path / "x.tar.xz", max_mib=0.0004)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_corpus([f"m={tmp_path / 'missing'}"], tmp_path / "x.tar.xz")
    build_corpus(specs, tmp_path / "ok.tar.xz", max_mib=0.015)
    (tmp_path / "cut.tar.xz").write_bytes((tmp_path / "ok.tar.xz").read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot be read.*complete"):
        unpack(tmp_path / "cut.tar.xz", tmp_path / "out")
    with pytest.raises(SystemExit, match="error: corpus bundle .* does not exist"):
        main(["unpack", str(tmp_path / "nope.tar.xz"), str(tmp_path / "out")])


def test_shipped_parts_are_bounded_and_join_back_byte_for_byte(tmp_path):
    folder = tmp_path / "results"
    (folder / "model").mkdir(parents=True)
    rng = random.Random(1)
    files = {"model/weights.bin": rng.randbytes(5000), "metrics.json": b'{"loss": 3.2}', "log.txt": b"x" * 3000}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    parts = ship(folder, tmp_path / "out", max_file_mib=2048 / MIB)
    assert len(parts) >= 5 and all(p.stat().st_size <= 2048 for p in parts)
    receive(tmp_path / "out/results.tar", tmp_path / "back")
    for name, data in files.items():
        assert (tmp_path / "back/results" / name).read_bytes() == data
    parts[1].unlink()
    with pytest.raises(ValueError, match="part results.tar.001 is missing"):
        receive(tmp_path / "out/results.tar", tmp_path / "back2")
    with pytest.raises(ValueError, match="over --max-mib.*model/weights.bin"):
        ship(folder, tmp_path / "out2", max_mib=4096 / MIB)
