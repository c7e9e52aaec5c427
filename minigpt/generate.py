"""Batched decoding with the KV cache: greedy, sampling (temperature / top-k / top-p) and beam search.

Beam search follows the vectorized algorithm of Hugging Face `generate` (transformers 5): keep the
2·num_beams best continuations, finish those that end in end-of-text (or reach the length limit) with
score = sum log-prob / generated_length ** length_penalty, and stop once no running beam can beat the
worst finished one. Banned tokens and `min_new_tokens` are applied to the log-probabilities, as there.
A row whose running beams can no longer beat its finished ones is settled and leaves the batch (its
cache rows are dropped), so a batch costs what its unsettled rows cost, not what its longest row does.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import checks
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


@dataclass
class Stepper:
    """The model and its KV cache during decoding: `logits(tokens)` runs the new tokens (rows, t) and
    returns the last position's logits (rows, V) in fp32; the attention mask (left padding) grows with it."""
    model: torch.nn.Module
    cache: KVCache
    mask: torch.Tensor | None
    position_offset: int | None

    def logits(self, tokens: torch.Tensor | None, embeds: torch.Tensor | None = None) -> torch.Tensor:
        if self.mask is not None and self.cache.tokens > 0:  # a decoded token: one more real position
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        h = self.model.hidden_states(None if embeds is not None else tokens, inputs_embeds=embeds,
                                     attention_mask=self.mask, position_offset=self.position_offset, cache=self.cache)
        return self.model.lm_head(h[:, -1]).float()

    def insert(self, kv: Sequence[PrefixKV], out: torch.Tensor) -> torch.Tensor:
        """Write an infix after the prompt: per layer (key, value), each (1, H, P, Dh), into the cache as P
        more positions; returns the next-token logits (rows, V) that the infix's last position gives, from
        its final hidden state `out` (C,)."""
        rows = self.cache.k[0].shape[0]
        for layer, (k, v) in enumerate(kv):
            dtype = self.cache.k[layer].dtype
            self.cache.append(layer, k.to(dtype).expand(rows, -1, -1, -1), v.to(dtype).expand(rows, -1, -1, -1))
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones(rows, kv[0][0].shape[2])], dim=1)
        w = self.model.lm_head.weight
        return self.model.lm_head(out.to(w.dtype)[None]).float().expand(rows, -1)

    def select(self, index: torch.Tensor) -> None:
        """Cache row b becomes old row index[b] (beam reordering); fewer rows drop the others (settled rows)."""
        if self.mask is not None and index.shape[0] != self.mask.shape[0]:
            self.mask = self.mask.index_select(0, index)  # a row's beams share its prompt's padding
        self.cache.reorder(index)

    def repeat_rows(self, n: int) -> None:
        """Every row becomes n identical rows (beams start from their row's prompt)."""
        rows = self.cache.k[0].shape[0]
        self.cache.reorder(torch.arange(rows, device=self.cache.k[0].device).repeat_interleave(n))
        if self.mask is not None:
            self.mask = self.mask.repeat_interleave(n, 0)


def whole(name: str, value, least: int, optional: bool = False) -> None:
    """`value` must be an integer >= `least` (or None where `optional`)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}{' or None' if optional else ''}, got {value!r}")


def finite(name: str, value, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{' or None' if optional else ''}, got {value!r}")


def check_arguments(max_new_tokens, num_beams, do_sample, temperature, top_k, top_p, length_penalty=1.0,
                    min_new_tokens=0) -> None:
    """Refuse decoding arguments of the wrong type or range, each named with what it takes."""
    whole("max_new_tokens", max_new_tokens, 0)
    whole("num_beams", num_beams, 1)
    whole("min_new_tokens", min_new_tokens, 0)
    whole("top_k", top_k, 1, optional=True)
    for name, value, optional in (("temperature", temperature, False), ("top_p", top_p, True),
                                  ("length_penalty", length_penalty, False)):
        finite(name, value, optional)
    if do_sample and num_beams > 1:
        raise ValueError("beam sampling is not implemented: use do_sample=True with num_beams=1")
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (use do_sample=False for greedy decoding)")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None for no limit), got {top_p}")


def check_room(config, input_ids, max_new_tokens: int, prefix, position_offset: int | None, extra: int,
               token_ids: dict) -> None:
    """The prompt must be (B, T) integer ids, the token ids given must be in the vocabulary, and the longest
    continuation must fit the context: position offset + T + infix + max_new_tokens <= n_positions."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype.is_floating_point:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a (B, T) tensor of integer token ids, got {shape}")
    for name, value in token_ids.items():
        whole(name, value, 0, optional=True)
        if value is not None and value >= config.vocab_size:
            raise ValueError(f"{name}={value} is outside the vocabulary [0, {config.vocab_size})")
    n_prefix = checks.prefix_length(config, prefix, input_ids.shape[0])  # the prefix's shapes checked too
    start = n_prefix if position_offset is None else position_offset
    room = config.n_positions - start - input_ids.shape[1] - extra
    if max_new_tokens > room:
        raise ValueError(f"max_new_tokens={max_new_tokens} cannot fit: the context has {config.n_positions} "
                         f"positions, the prompt takes {input_ids.shape[1]} from position {start}"
                         f"{f' and the infix {extra}' if extra else ''}, so at most {max(room, 0)} new tokens "
                         "fit; lower max_new_tokens (or shorten the prompt or the prefix)")


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, *,
             prefix: Sequence[PrefixKV | None] | None = None, attention_mask: torch.Tensor | None = None,
             position_offset: int | None = None, inputs_embeds: torch.Tensor | None = None,
             do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, num_beams: int = 1, length_penalty: float = 1.0,
             min_new_tokens: int = 0, eos_token_id: int | None = None,
             bad_token_ids: Sequence[int] | None = None, pad_token_id: int | None = None,
             generator: torch.Generator | None = None,
             infix: tuple[Sequence[PrefixKV], torch.Tensor] | None = None, drop_settled: bool = True,
             decoder: str = "eager", check_every: int = 8) -> torch.Tensor:
    """Continue `input_ids` (B, T); returns (B, T + new) ids, at most `max_new_tokens` new.

    `prefix`, `attention_mask` (left padding) and `position_offset` are as in `GPT.forward`;
    `infix` = (per-layer (key, value) each (1, H, P, Dh), final hidden state (C,)) is placed after the
    prompt and before the continuation (infix-tuning, `prefix.InfixTuner`);
    `inputs_embeds` (B, T, C), if given, is fed instead of the prompt's token embeddings (prompt tuning)
    while `input_ids` still supplies the returned prompt ids. Rows that end (end-of-text) are padded
    with `pad_token_id` (default: `eos_token_id`). Decoding stops when every row has ended.
    `drop_settled` (beam search): a settled row leaves the batch (False: every row runs until the last
    one settles, as the reference implementation does; the outputs are the same, only the cost differs).
    `decoder`: "eager" (this module's loops), "static" (a static KV cache and no host sync per step,
    `minigpt.fast.decode`: the same tokens in fp32, fewer kernel launches on a GPU) or "compiled" (static,
    with the one-token step compiled: one CUDA graph per step on a GPU); `check_every`: the static decoder
    asks the host whether every row has ended only every this many steps (the output is the same).
    """
    static = decoder != "eager"
    if static:
        if decoder not in ("static", "compiled"):
            raise ValueError(f"decoder={decoder!r}; use 'eager', 'static' or 'compiled'")
        if model.training:
            raise ValueError("static decoding runs the model in eval mode: call model.eval() first")
        whole("check_every", check_every, 1)
    check_arguments(max_new_tokens, num_beams, do_sample, temperature, top_k, top_p, length_penalty, min_new_tokens)
    extra = 0 if infix is None else infix[0][0][0].shape[2]  # the infix's positions
    check_room(model.config, input_ids, max_new_tokens, prefix, position_offset, extra,
               {"eos_token_id": eos_token_id, "pad_token_id": pad_token_id})
    if max_new_tokens == 0:
        return input_ids
    B, T = input_ids.shape
    pad = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else 0)
    dtype = model.transformer.wte.weight.dtype if inputs_embeds is None else inputs_embeds.dtype
    cache = KVCache(model.config, B, T + extra + (0 if static else max_new_tokens),  # static: a cache of its own
                    prefix=prefix, dtype=dtype, device=input_ids.device)
    stepper = Stepper(model, cache, attention_mask, position_offset)
    logits = stepper.logits(input_ids, inputs_embeds)  # the prompt runs once per row, not once per beam
    if infix is not None:  # the continuation starts after the infix, from its last position
        logits = stepper.insert(*infix)
    ban = dict(min_new_tokens=min_new_tokens, eos_token_id=eos_token_id, bad_token_ids=bad_token_ids)
    pick = ((lambda lg: _sample(lg, temperature, top_k, top_p, generator)) if do_sample
            else (lambda lg: lg.argmax(-1)))
    if static:  # the same loops over a static cache, rows kept to the end, the host asked every check_every steps
        from .fast.decode import StaticStepper
        stepper = StaticStepper(stepper, num_beams, max_new_tokens, compiled=decoder == "compiled")
        drop_settled = False
    check_every = check_every if static else 1
    if num_beams == 1:
        new = greedy_or_sampled(stepper, logits, pick, max_new_tokens, ban, eos_token_id, pad, check_every)
        return torch.cat([input_ids, new], dim=1)
    return beam_search(stepper, logits, input_ids, num_beams, max_new_tokens, ban, eos_token_id, pad,
                       length_penalty, drop_settled, check_every)


def greedy_or_sampled(stepper: Stepper, logits: torch.Tensor, pick, max_new_tokens: int, ban: dict,
                      eos_token_id: int | None, pad: int, check_every: int = 1) -> torch.Tensor:
    """Greedy decoding or sampling: `pick` chooses each row's next token from its logits (rows, V).
    Returns the new tokens (B, new); a row that has ended gets `pad`. Whether every row has ended is read
    on the host only every `check_every` steps; the tokens are cut where a check at every step would stop."""
    out, done = [], torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    all_done = []  # per step: had every row ended after it (a device flag)
    for t in range(max_new_tokens):
        nxt = pick(_ban(logits, t, **ban))
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        out.append(nxt)
        if eos_token_id is not None:
            done = done | (nxt == eos_token_id)
        all_done.append(done.all())
        if t == max_new_tokens - 1 or ((t + 1) % check_every == 0 and bool(all_done[-1])):
            break
        logits = stepper.logits(nxt[:, None])
    flags = torch.stack(all_done).tolist()  # one look at the host: the first step after which all had ended
    return torch.stack(out[:flags.index(True) + 1 if True in flags else len(out)], 1)


class BeamState:
    """B rows x n beams: the running continuations and the pool of finished ones, with their scores
    (sum of log-probs; finished ones divided by generated_length ** length_penalty)."""

    def __init__(self, input_ids: torch.Tensor, n: int, max_new_tokens: int, pad: int, length_penalty: float):
        B, T = input_ids.shape
        dev = input_ids.device
        self.n, self.T, self.length_penalty = n, T, length_penalty
        self.running = torch.full((B, n, T + max_new_tokens), pad, dtype=torch.long, device=dev)  # (B, n, L)
        self.running[:, :, :T] = input_ids[:, None]
        self.finished = self.running.clone()
        self.run_scores = torch.zeros(B, n, device=dev)
        self.run_scores[:, 1:] = NEG  # all beams start identical: only the first may expand
        self.fin_scores = torch.full((B, n), NEG, device=dev)
        self.fin_flag = torch.zeros(B, n, dtype=torch.bool, device=dev)  # a real finished beam, not a filler
        self.fin_len = torch.zeros(B, n, dtype=torch.long, device=dev)
        self.improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)  # can a running beam still win?
        self.rows = torch.arange(B, device=dev)[:, None]

    def advance(self, logp: torch.Tensor, t: int, last: bool, eos_token_id: int | None,
                active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from log-probs (b, n, V) (already banned) of the rows `active` (b,) (default: all B):
        keep the n best running continuations and move ended ones into the finished pool. Returns the flat
        cache rows the new beams come from (b * n,) and whether every continuation ended (a device flag: no
        host sync)."""
        if active is None or active.shape[0] == self.running.shape[0]:
            return self._advance(logp, t, last, eos_token_id)
        names = ("running", "finished", "run_scores", "fin_scores", "fin_flag", "fin_len", "improvable")
        full = {k: getattr(self, k) for k in names + ("rows",)}
        for k in names:  # the active rows' state, stepped as a batch of its own, then written back
            setattr(self, k, full[k][active])
        self.rows = full["rows"][:active.shape[0]]
        try:
            return self._advance(logp, t, last, eos_token_id)
        finally:
            for k in names:
                full[k][active] = getattr(self, k)
                setattr(self, k, full[k])
            self.rows = full["rows"]

    def _advance(self, logp: torch.Tensor, t: int, last: bool,
                 eos_token_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        B, n, V = logp.shape
        rows, K = self.rows, 2 * n
        top_scores, top_idx = torch.topk((logp + self.run_scores[..., None]).view(B, n * V), K)  # (B, K)
        beam, tok = top_idx // V, top_idx % V
        cand = self.running[rows, beam]  # (B, K, L)
        cand[:, :, self.T + t] = tok
        hits = (tok == eos_token_id) if eos_token_id is not None else torch.zeros_like(tok, dtype=torch.bool)
        if last:
            hits = torch.ones_like(hits)
        # the n best continuations that did not end keep running
        keep_scores = top_scores + hits.float() * NEG
        nxt = torch.topk(keep_scores, n).indices  # (B, n)
        self.running, self.run_scores, src = cand[rows, nxt], keep_scores.gather(1, nxt), beam.gather(1, nxt)
        # ended continuations among the top n join the finished pool if they beat it
        just = hits & (torch.arange(K, device=tok.device) < n)
        penalty = (t + 1) ** self.length_penalty
        scores = top_scores / penalty + (~self.improvable).float() * NEG + (~just).float() * NEG
        pooled = torch.cat([self.fin_scores, scores], 1)
        best = torch.topk(pooled, n).indices
        self.finished = torch.cat([self.finished, cand], 1)[rows, best]
        self.fin_scores = pooled.gather(1, best)
        self.fin_flag = torch.cat([self.fin_flag, just], 1).gather(1, best)
        self.fin_len = torch.cat([self.fin_len, torch.full_like(just, t + 1, dtype=torch.long)], 1).gather(1, best)
        worst = torch.where(self.fin_flag, self.fin_scores.min(1, keepdim=True).values,
                            torch.full_like(self.fin_scores, NEG))
        self.improvable &= (self.run_scores[:, :1] / penalty > worst).any(-1, keepdim=True)
        return (src + rows * n).flatten(), hits.all()

    def best(self) -> torch.Tensor:
        """Each row's best finished sequence, (B, T + longest generated length)."""
        return self.finished[:, 0, :self.T + int(self.fin_len[:, 0].max())]


def beam_search(stepper: Stepper, logits: torch.Tensor, input_ids: torch.Tensor, n: int, max_new_tokens: int,
                ban: dict, eos_token_id: int | None, pad: int, length_penalty: float,
                drop_settled: bool = True, check_every: int = 1) -> torch.Tensor:
    """Beam search with n beams per row (the algorithm of the module docstring); returns (B, T + new).
    Without `drop_settled`, whether to stop is read on the host only every `check_every` steps: the steps
    after every row has settled change nothing returned (a settled row's candidates score below its pool)."""
    stepper.repeat_rows(n)  # every beam starts from its row's prompt
    logits = logits.repeat_interleave(n, 0)
    state = BeamState(input_ids, n, max_new_tokens, pad, length_penalty)
    active = torch.arange(input_ids.shape[0], device=input_ids.device)  # the rows not settled yet
    every = 1 if drop_settled else check_every  # dropping rows reads the host every step anyway
    stopped = torch.zeros((), dtype=torch.bool, device=input_ids.device)  # a check at every step would stop
    for t in range(max_new_tokens):
        logp = _ban(F.log_softmax(logits, -1), t, **ban).view(active.shape[0], n, -1)
        src, ended = state.advance(logp, t, t == max_new_tokens - 1, eos_token_id, active)
        going = state.improvable[active, 0]
        stopped = stopped | ended | ~going.any()
        if t == max_new_tokens - 1 or ((t + 1) % every == 0 and bool(stopped)):
            break
        if drop_settled and not bool(going.all()):  # settled rows leave: their outputs can no longer change
            src, active = src.view(-1, n)[going].flatten(), active[going]
        stepper.select(src)
        logits = stepper.logits(state.running[active, :, state.T + t].reshape(-1, 1))
    return state.best()
