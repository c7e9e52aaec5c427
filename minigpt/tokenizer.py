"""GPT-2's byte-level BPE as a `tiktoken.Encoding`, built from local files when they exist."""
from __future__ import annotations

import os
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str

from .datadir import data_dirs, find_data

EOT = 50256  # <|endoftext|>
# sha256 of OpenAI's released files (the hashes tiktoken checks for its own download)
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


def load_tokenizer(bpe_dir: str | os.PathLike | None = None) -> tiktoken.Encoding:
    """GPT-2 tokenizer (ids identical to `tiktoken.get_encoding('gpt2')`).

    Looks for `encoder.json` + `vocab.bpe` in `bpe_dir`, then `<data dir>/gpt2` (see `datadir`), and
    otherwise lets tiktoken download them (cached by tiktoken). Offline with no files: a clear error.
    """
    if bpe_dir is not None and not (Path(bpe_dir) / "vocab.bpe").exists():
        raise FileNotFoundError(f"{bpe_dir} has no vocab.bpe / encoder.json (GPT-2 BPE files)")
    folder = Path(bpe_dir) if bpe_dir is not None else find_data("gpt2")
    if folder is not None and (folder / "vocab.bpe").exists() and (folder / "encoder.json").exists():
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(folder / "vocab.bpe"), encoder_json_file=str(folder / "encoder.json"),
            vocab_bpe_hash=VOCAB_BPE_SHA256, encoder_json_hash=ENCODER_JSON_SHA256)
        return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                 special_tokens={"<|endoftext|>": EOT}, explicit_n_vocab=50257)
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:
        looked = ", ".join(str(d / "gpt2") for d in data_dirs())
        raise FileNotFoundError(
            f"GPT-2 BPE files not found (looked in {looked}) and tiktoken could not download them "
            f"({type(e).__name__}). Put encoder.json and vocab.bpe in data/gpt2/ or set DATA_DIR") from e
