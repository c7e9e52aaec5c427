"""Our tokenizer, built from the local BPE files, gives exactly the ids of tiktoken's own `gpt2`."""
from __future__ import annotations

import hashlib
import shutil

import pytest
import tiktoken

from minigpt import load_tokenizer
from minigpt.datadir import find_data

TEXT = ("Hello, world!  It's   a test\n\n\tof «GPT-2» tokenization — naïve café, 東京, Привет, 1234567 "
        "emoji 🤖🚀, tabs\t\tand   trailing spaces   \n<|endoftext|> is plain text here.")

URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"


def test_ids_equal_tiktoken_gpt2(monkeypatch, tmp_path):
    folder = find_data("gpt2")
    assert folder is not None, "GPT-2 BPE files not found in the data directory (../shared/data/gpt2)"
    # let tiktoken build its own `gpt2` from its cache (no network): the reference construction
    for name in ("vocab.bpe", "encoder.json"):
        shutil.copy(folder / name, tmp_path / hashlib.sha1((URL + name).encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    ref = tiktoken.get_encoding("gpt2")
    ours = load_tokenizer()
    assert ours.encode_ordinary(TEXT) == ref.encode_ordinary(TEXT)
    assert ours.encode(TEXT, allowed_special="all") == ref.encode(TEXT, allowed_special="all")
    assert ours.n_vocab == 50257 and ours.eot_token == 50256
    assert ours.decode(ours.encode_ordinary(TEXT)) == TEXT


def test_missing_bpe_files_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no vocab.bpe"):
        load_tokenizer(tmp_path)
