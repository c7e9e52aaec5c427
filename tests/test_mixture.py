"""Pretraining data: source layouts, exact tokens, content-keyed caches, weighted sampling, clear errors;
and the pretraining command's guards (no overwrite, strict resume, continued pretraining)."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from minigpt import GPT
from minigpt.pretraining.mixture import EOT, Mixture, Source, split_files
from minigpt.pretraining import main as pretrain
from minigpt.tokenizer import load_tokenizer

DOCS = ["The first article.\nIt has two lines.", "A second one, shorter.", "Third: numbers 1 2 3 and a café."]


def write_jsonl(path, docs, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, "text": d}) + "\n")


def expected_tokens(docs):
    enc = load_tokenizer()
    return [t for d in docs for t in enc.encode_ordinary(d) + [EOT]]


def test_parse_source_specs(tmp_path):
    s = Source.parse(f"wiki={tmp_path}/w.jsonl.gz:0.25")
    assert (s.name, str(s.path), s.weight) == ("wiki", f"{tmp_path}/w.jsonl.gz", 0.25)
    s = Source.parse(f"{tmp_path}/books")
    assert (s.name, s.weight) == ("books", None)
    for bad in (f"x={tmp_path}/a:-1", f"x={tmp_path}/a:0", f"x={tmp_path}/a:nan", f"x={tmp_path}/a:heavy"):
        with pytest.raises(ValueError, match="weight"):
            Source.parse(bad)


def test_jsonl_split_folder_gives_each_document_then_eot(tmp_path):
    write_jsonl(tmp_path / "train.jsonl.gz", DOCS, gz=True)
    write_jsonl(tmp_path / "val.jsonl", DOCS[:1])
    s = Source("web", tmp_path).load(tmp_path / "cache")
    assert s.train.tolist() == expected_tokens(DOCS)
    assert s.val.tolist() == expected_tokens(DOCS[:1])


def test_book_folders_keep_paragraphs_and_drop_blank_lines(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    (tmp_path / "train" / "a.txt").write_text("First paragraph.\n\n\nSecond paragraph.\n")
    (tmp_path / "train" / "b.jsonl").write_text(json.dumps({"text": DOCS[1]}) + "\n")
    (tmp_path / "val" / "c.txt").write_text("Held out.")
    s = Source("books", tmp_path).load(tmp_path / "cache")
    enc = load_tokenizer()
    book = enc.encode_ordinary("First paragraph.") + [198] + enc.encode_ordinary("Second paragraph.") + [198, EOT]
    assert s.train.tolist() == book + expected_tokens(DOCS[1:2])  # files in name order
    assert s.val.tolist() == enc.encode_ordinary("Held out.") + [198, EOT]


def test_single_file_validates_on_its_last_tokens(tmp_path):
    write_jsonl(tmp_path / "all.jsonl", DOCS * 10)
    s = Source("all", tmp_path / "all.jsonl").load(tmp_path / "cache", val_fraction=0.2)
    whole = expected_tokens(DOCS * 10)
    cut = int(len(whole) * 0.8)
    assert s.train.tolist() == whole[:cut] and s.val.tolist() == whole[cut:]


def test_cache_is_keyed_on_content_not_size(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ["aaaa bbbb"])
    write_jsonl(tmp_path / "val.jsonl", ["cccc"])
    first = Source("x", tmp_path).load(tmp_path / "cache").train.tolist()
    write_jsonl(tmp_path / "train.jsonl", ["dddd eeee"])  # same size, other text
    second = Source("x", tmp_path).load(tmp_path / "cache").train.tolist()
    assert first != second and second == expected_tokens(["dddd eeee"])


def test_malformed_and_truncated_files_name_the_file(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"text": "ok"}) + "\n" + '{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"train.jsonl, line 2.*\"text\""):
        Source("x", tmp_path).load(tmp_path / "cache")
    other = tmp_path / "gz"
    other.mkdir()
    write_jsonl(other / "train.jsonl.gz", DOCS * 50, gz=True)
    data = (other / "train.jsonl.gz").read_bytes()
    (other / "train.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="train.jsonl.gz cannot be read"):
        Source("y", other).load(tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        split_files(tmp_path / "missing")


def fake(name, token, n, weight=None):
    s = Source(name, None, weight)
    s.train = np.full(n, token, dtype=np.uint16)
    s.val = np.full(n, token, dtype=np.uint16)
    return s


def test_rows_come_from_sources_in_proportion_to_weights():
    mix = Mixture([fake("a", 1, 500, 3.0), fake("b", 2, 500, 1.0)], block=16)
    x, y = mix.batch(4000, np.random.default_rng(0), "cpu")
    share_a = (x[:, 0] == 1).float().mean().item()
    assert abs(share_a - 0.75) < 0.03
    assert ((x == 1).all(1) | (x == 2).all(1)).all()  # a row never mixes sources
    # without weights, sources are drawn in proportion to their training tokens
    mix = Mixture([fake("a", 1, 3000), fake("b", 2, 1000)], block=16)
    assert np.allclose(mix.weights, [0.75, 0.25])


def test_a_source_shorter_than_a_window_is_refused():
    with pytest.raises(ValueError, match="fewer than one window"):
        Mixture([fake("a", 1, 10)], block=16)
    with pytest.raises(ValueError, match="names must differ"):
        Mixture([fake("a", 1, 100), fake("a", 2, 100)], block=16)


def tiny(tmp_path, out, *extra):
    for name in ("one", "two"):
        (tmp_path / name).mkdir(exist_ok=True)
        write_jsonl(tmp_path / name / "train.jsonl", [f"{name} " + d for d in DOCS] * 40)
        write_jsonl(tmp_path / name / "val.jsonl", [f"{name} " + d for d in DOCS] * 4)
    return ["--source", f"one={tmp_path / 'one'}:0.7", "--source", f"two={tmp_path / 'two'}:0.3", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
            "--block-size", "32", "--batch-size", "4", "--max-steps", "6", "--eval-interval", "3",
            "--eval-windows", "4", "--warmup-steps", "1", "--lr", "3e-3", "--no-bf16", "--device", "cpu", *extra]


def test_mixture_pretraining_reports_each_source(tmp_path):
    result = pretrain(tiny(tmp_path, tmp_path / "run"))
    assert set(result["val_loss_by_source"]) == {"one", "two"}
    by = result["val_loss_by_source"]
    assert result["val_loss"] == pytest.approx(0.7 * by["one"] + 0.3 * by["two"])
    for d in result["sources"]:
        assert d["unigram_val_loss"] > d["val_loss"] - 10  # present and finite
        assert d["train_tokens"] == len(expected_tokens([f"{d['name']} " + x for x in DOCS] * 40))
    assert result["non_embedding_parameters"] == result["parameters"] - 50257 * 32 - 32 * 32


def test_pretraining_refuses_to_overwrite_or_resume_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="does not exist"):
        pretrain(tiny(tmp_path, out, "--resume"))
    pretrain(tiny(tmp_path, out))
    weights = (out / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit, match="already holds a pretraining run"):
        pretrain(tiny(tmp_path, out))
    assert (out / "model.safetensors").read_bytes() == weights
    with pytest.raises(SystemExit, match=r"lr: was '?0.003'?, now '?0.01'?|lr: was 0.003, now 0.01"):
        pretrain(tiny(tmp_path, out, "--resume", "--lr", "1e-2"))
    pretrain(tiny(tmp_path, out, "--overwrite", "--seed", "7"))
    assert (out / "model.safetensors").read_bytes() != weights


def test_continued_pretraining_starts_from_the_checkpoint(tmp_path):
    pretrain(tiny(tmp_path, tmp_path / "base", "--max-steps", "30"))
    base = GPT.from_pretrained(tmp_path / "base")
    result = pretrain(tiny(tmp_path, tmp_path / "more", "--init-from", str(tmp_path / "base"), "--n-layer", "3"))
    log = [json.loads(line) for line in (tmp_path / "more" / "pretrain_log.jsonl").read_text().splitlines()]
    scratch = [json.loads(line) for line in (tmp_path / "base" / "pretrain_log.jsonl").read_text().splitlines()]
    assert log[0]["val_loss"] < scratch[0]["val_loss"] - 0.5  # step 0 already knows what the base learned
    assert GPT.from_pretrained(tmp_path / "more").config.n_layer == base.config.n_layer == 1  # its shape wins
    assert result["config"]["init_from"] == str(tmp_path / "base")


@pytest.mark.parametrize("bad", [["--lr", "nan"], ["--ckpt-interval", "0"], ["--max-steps", "-3"]])
def test_bad_numbers_are_refused_before_anything_loads(tmp_path, bad, capsys):
    with pytest.raises(SystemExit):
        pretrain(tiny(tmp_path, tmp_path / "run", *bad))
    assert bad[0] in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_continued_pretraining_needs_room_for_the_block(tmp_path):
    pretrain(tiny(tmp_path, tmp_path / "base"))
    with pytest.raises(SystemExit, match="exceeds"):
        pretrain(tiny(tmp_path, tmp_path / "more", "--init-from", str(tmp_path / "base"), "--block-size", "64"))
