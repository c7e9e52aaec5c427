"""Batched decoding with the KV cache: greedy, sampling (temperature / top-k / top-p) and beam search.

Beam search follows the vectorized algorithm of Hugging Face `generate` (transformers 5): keep the
2·num_beams best continuations, finish those that end in end-of-text (or reach the length limit) with
score = sum log-prob / generated_length ** length_penalty, and stop once no running beam can beat the
worst finished one. Banned tokens and `min_new_tokens` are applied to the log-probabilities, as there.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .attention import KVCache, PrefixKV

NEG = -1.0e9


def _ban(logp: torch.Tensor, step: int, *, min_new_tokens: int, eos_token_id: int | None,
         bad_token_ids: Sequence[int] | None) -> torch.Tensor:
    """Set banned tokens (and end-of-text before `min_new_tokens`) to -inf; (N, V) -> (N, V)."""
    if bad_token_ids:
        logp[:, list(bad_token_ids)] = float("-inf")
    if eos_token_id is not None and step < min_new_tokens:
        logp[:, eos_token_id] = float("-inf")
    return logp


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator | None) -> torch.Tensor:
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, *,
             prefix: Sequence[PrefixKV | None] | None = None, attention_mask: torch.Tensor | None = None,
             position_offset: int | None = None, inputs_embeds: torch.Tensor | None = None,
             do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, num_beams: int = 1, length_penalty: float = 1.0,
             min_new_tokens: int = 0, eos_token_id: int | None = None,
             bad_token_ids: Sequence[int] | None = None, pad_token_id: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue `input_ids` (B, T); returns (B, T + new) ids, at most `max_new_tokens` new.

    `prefix`, `attention_mask` (left padding) and `position_offset` are as in `GPT.forward`;
    `inputs_embeds` (B, T, C), if given, is fed instead of the prompt's token embeddings (prompt tuning)
    while `input_ids` still supplies the returned prompt ids. Rows that end (end-of-text) are padded
    with `pad_token_id` (default: `eos_token_id`). Decoding stops when every row has ended.
    """
    if max_new_tokens < 0 or num_beams < 1:
        raise ValueError("max_new_tokens must be >= 0 and num_beams >= 1")
    if do_sample and num_beams > 1:
        raise ValueError("beam sampling is not implemented: use do_sample=True with num_beams=1")
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (use do_sample=False for greedy decoding)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for no limit), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None for no limit), got {top_p}")
    B, T = input_ids.shape
    pad = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else 0)
    n = num_beams
    w = model.transformer.wte.weight
    cache = KVCache(model.config, B, T + max_new_tokens, prefix=prefix,
                    dtype=w.dtype if inputs_embeds is None else inputs_embeds.dtype, device=input_ids.device)
    mask = attention_mask

    def step(tokens, embeds=None):  # logits of the last position only: (rows, V)
        h = model.hidden_states(None if embeds is not None else tokens, inputs_embeds=embeds,
                                attention_mask=mask, position_offset=position_offset, cache=cache)
        return model.lm_head(h[:, -1]).float()

    if max_new_tokens == 0:
        return input_ids
    logits = step(input_ids, inputs_embeds)  # the prompt runs once per row, not once per beam
    if n > 1:  # every beam starts from its row's prompt
        cache.reorder(torch.arange(B, device=input_ids.device).repeat_interleave(n))
        logits = logits.repeat_interleave(n, 0)
        mask = mask.repeat_interleave(n, 0) if mask is not None else None
    ban = dict(min_new_tokens=min_new_tokens, eos_token_id=eos_token_id, bad_token_ids=bad_token_ids)

    if n == 1:
        out, done = [], torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        for t in range(max_new_tokens):
            logits = _ban(logits, t, **ban)
            nxt = _sample(logits, temperature, top_k, top_p, generator) if do_sample else logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            out.append(nxt)
            if eos_token_id is not None:
                done |= nxt == eos_token_id
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
            logits = step(nxt[:, None])
        return torch.cat([input_ids, torch.stack(out, 1)], dim=1)

    # ---- beam search (B batch rows x n beams) ----
    V, L, K = logits.shape[-1], T + max_new_tokens, 2 * n
    dev = input_ids.device
    running = torch.full((B, n, L), pad, dtype=torch.long, device=dev)
    running[:, :, :T] = input_ids[:, None]
    finished = running.clone()
    run_scores = torch.zeros(B, n, device=dev)
    run_scores[:, 1:] = NEG  # all beams start identical: only the first may expand
    fin_scores = torch.full((B, n), NEG, device=dev)
    fin_flag = torch.zeros(B, n, dtype=torch.bool, device=dev)
    fin_len = torch.zeros(B, n, dtype=torch.long, device=dev)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)
    top_n = torch.arange(K, device=dev) < n
    rows = torch.arange(B, device=dev)[:, None]
    for t in range(max_new_tokens):
        cur = T + t
        logp = _ban(F.log_softmax(logits, -1), t, **ban).view(B, n, V) + run_scores[..., None]
        top_scores, top_idx = torch.topk(logp.view(B, n * V), K)  # (B, K)
        beam, tok = top_idx // V, top_idx % V
        cand = running[rows, beam]  # (B, K, L)
        cand[:, :, cur] = tok
        hits = (tok == eos_token_id) if eos_token_id is not None else torch.zeros_like(tok, dtype=torch.bool)
        if t == max_new_tokens - 1:
            hits = torch.ones_like(hits)
        # the n best continuations that did not end keep running
        keep_scores = top_scores + hits.float() * NEG
        nxt = torch.topk(keep_scores, n).indices  # (B, n)
        running, run_scores, src = cand[rows, nxt], keep_scores.gather(1, nxt), beam.gather(1, nxt)
        # ended continuations among the top n join the finished pool if they beat it
        just = hits & top_n
        scores = top_scores / ((t + 1) ** length_penalty) + (~improvable).float() * NEG + (~just).float() * NEG
        m_scores = torch.cat([fin_scores, scores], 1)
        best = torch.topk(m_scores, n).indices
        finished = torch.cat([finished, cand], 1)[rows, best]
        fin_scores = m_scores.gather(1, best)
        fin_flag = torch.cat([fin_flag, just], 1).gather(1, best)
        fin_len = torch.cat([fin_len, torch.full_like(just, t + 1, dtype=torch.long)], 1).gather(1, best)
        cache.reorder((src + rows * n).flatten())
        worst = torch.where(fin_flag, fin_scores.min(1, keepdim=True).values, torch.full_like(fin_scores, NEG))
        improvable = improvable & (run_scores[:, :1] / ((t + 1) ** length_penalty) > worst).any(-1, keepdim=True)
        if not bool(improvable.any()) or bool(hits.all()):
            break
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(B * n, 1)], dim=1)
        logits = step(running[:, :, cur].reshape(-1, 1))
    return finished[:, 0, :T + int(fin_len[:, 0].max())]
