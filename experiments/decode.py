"""Batched beam-search decoding of sources (left-padded), as the paper decodes: beam 5, no newlines."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from minigpt import EOT
from minigpt.runtime import autocast, evaluating


def newline_token_ids(enc) -> list[int]:
    """Every token whose bytes contain a newline (banned while decoding, as in the paper)."""
    return [i for i in range(enc.n_vocab) if i != EOT and b"\n" in enc.decode_single_token_bytes(i)]


@torch.no_grad()
def decode(net, enc, sources: list[list[int]], *, num_beams: int = 5, max_new_tokens: int = 80,
           batch_size: int = 32, bf16: bool = False, desc: str = "decoding", drop_settled: bool = True,
           decoder: str | None = None) -> list[str]:
    """One output string per source (in the given order). `net` has `generate` like `GPT.generate`
    (`drop_settled`: see there; False only to measure what dropping settled rows saves, bench/decode.py).
    `decoder` (see `GPT.generate`; the outputs are the same): None picks "compiled" on a GPU (a static
    cache and one CUDA graph per step) and "eager" elsewhere (on a CPU the growing cache costs less)."""
    banned = newline_token_ids(enc)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))  # similar lengths share a batch
    outputs: list[str] = [""] * len(sources)
    device = next(net.parameters()).device
    decoder = decoder or ("compiled" if device.type == "cuda" else "eager")
    bf16_autocast = autocast(device, bf16)
    with evaluating(net):
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", dynamic_ncols=True):
            idx = order[start:start + batch_size]
            T = max(len(sources[i]) for i in idx)
            ids = torch.full((len(idx), T), EOT, dtype=torch.long)
            mask = torch.zeros(len(idx), T, dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: every prompt ends at the same column
                ids[row, T - len(sources[i]):] = torch.tensor(sources[i])
                mask[row, T - len(sources[i]):] = 1
            with bf16_autocast():
                out = net.generate(ids.to(device), max_new_tokens, attention_mask=mask.to(device),
                                   num_beams=num_beams, eos_token_id=EOT, bad_token_ids=banned,
                                   drop_settled=drop_settled, decoder=decoder)
            for row, i in enumerate(idx):
                new = out[row, T:].tolist()
                new = new[:new.index(EOT)] if EOT in new else new
                outputs[i] = enc.decode(new).strip()
    return outputs
