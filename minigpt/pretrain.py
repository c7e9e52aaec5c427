"""Pretrain a GPT-2-architecture model from scratch on a folder of text files.

    python -m minigpt.pretrain --corpus ../shared/data/corpus/gutenberg --out checkpoints/my-gpt
    torchrun --nproc_per_node=4 -m minigpt.pretrain ...      # DDP over GPUs (or CPU processes, gloo)

The corpus is tokenized once into uint16 shards (cached next to the output). Training samples random
windows, uses AdamW with warmup + cosine decay, gradient clipping and accumulation, bf16 autocast where
supported, evaluates a fixed set of validation windows, and writes atomic checkpoints (`--resume`).
The schedule can be step-based (`--max-steps`) or time-based (`--max-seconds`: the cosine runs over
wall-clock time, so a fixed budget ends exactly at the bottom of the schedule). The result is saved in
Hugging Face GPT-2 format with a loss curve and metrics.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .allocator import keep_freed_memory
from .config import GPTConfig
from .datadir import find_data
from .model import GPT
from .optim import adamw
from .tokenizer import EOT, load_tokenizer
from .weights import atomic_write


# ---------------------------------------------------------------- data
def corpus_files(corpus: Path) -> tuple[list[Path], list[Path] | None]:
    """(train files, val files); val is None when the corpus has no `val/` folder."""
    if (corpus / "train").is_dir():
        val = sorted((corpus / "val").glob("*.txt")) if (corpus / "val").is_dir() else None
        return sorted((corpus / "train").glob("*.txt")), val
    if corpus.is_file():
        return [corpus], None
    return sorted(corpus.glob("*.txt")), None


def tokenize_files(files: list[Path], out: Path, desc: str) -> np.ndarray:
    """Encode files (each followed by <|endoftext|>) into a uint16 array cached at `out`."""
    if out.exists():
        return np.memmap(out, dtype=np.uint16, mode="r")
    enc = load_tokenizer()
    chunks = []
    for f in tqdm(files, desc=f"tokenizing {desc}", unit="file"):
        text = f.read_text(encoding="utf-8")
        paras = [p for p in text.split("\n") if p.strip()]
        ids = [t for part in enc.encode_ordinary_batch(paras, num_threads=os.cpu_count() or 1)
               for t in part + [198]]  # paragraphs keep their newline
        chunks.append(np.array(ids + [EOT], dtype=np.uint16))
    arr = np.concatenate(chunks) if chunks else np.zeros(0, np.uint16)
    atomic_write(out, lambda t: arr.tofile(t))
    return np.memmap(out, dtype=np.uint16, mode="r")


def load_corpus(corpus: Path, cache_dir: Path, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    train_files, val_files = corpus_files(corpus)
    if not train_files:
        raise FileNotFoundError(f"no .txt files under {corpus}")
    key = hashlib.sha1("\n".join(f"{f.name}:{f.stat().st_size}" for f in train_files + (val_files or []))
                       .encode()).hexdigest()[:12]
    cache = cache_dir / f"{corpus.name}-{key}"
    train = tokenize_files(train_files, cache / "train.bin", "train")
    if val_files:
        return train, tokenize_files(val_files, cache / "val.bin", "val")
    cut = int(len(train) * (1 - val_fraction))  # single-file corpora: the last tokens validate
    return train[:cut], train[cut:]


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab: int = 50257) -> float:
    """Cross-entropy (nats/token) of `val` under add-one-smoothed unigram counts of `train`."""
    counts = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(val, dtype=np.int64)].mean())


def random_batch(data: np.ndarray, batch: int, block: int, gen: np.random.Generator, device) -> tuple:
    starts = gen.integers(0, len(data) - block - 1, size=batch)
    x = np.stack([data[s:s + block + 1].astype(np.int64) for s in starts])
    x = torch.from_numpy(x).to(device, non_blocking=True)
    return x[:, :-1], x[:, 1:]


def val_windows(data: np.ndarray, block: int, n: int) -> torch.Tensor:
    """`n` evenly spaced (block + 1)-token windows of the validation tokens (fixed across runs)."""
    n = max(1, min(n, (len(data) - 1) // (block + 1)))
    starts = np.linspace(0, len(data) - block - 2, n).astype(np.int64)
    return torch.from_numpy(np.stack([data[s:s + block + 1].astype(np.int64) for s in starts]))


@torch.no_grad()
def evaluate(model: GPT, windows: torch.Tensor, batch: int, device, autocast) -> float:
    """Mean next-token loss (nats) over the fixed validation windows (the model's mode is restored)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch].to(device)
        with autocast():
            logits = model(w[:, :-1])
        total += F.cross_entropy(logits.float().flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
        count += w[:, 1:].numel()
    model.train(was)
    return total / count


# ---------------------------------------------------------------- training
def lr_at(step: int, progress: float, lr: float, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup over the first `warmup_steps` steps, times a cosine from lr to min_ratio * lr over
    `progress` in [0, 1] (fraction of the step or time budget)."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    return lr * warm * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def autocast_for(device: torch.device, bf16: bool):
    if not bf16:
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=None, help="folder of .txt files, or with train/ and val/ folders "
                   "(default: corpus/gutenberg in the data directory)")
    p.add_argument("--out", default="checkpoints/minigpt-gutenberg")
    p.add_argument("--cache-dir", default=".cache/pretrain", help="where token shards are cached")
    p.add_argument("--n-layer", type=int, default=8)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--block-size", type=int, default=512, help="training context (= n_positions)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=16, help="sequences per micro-batch per process")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--max-seconds", type=float, default=None, help="time-based schedule and budget")
    p.add_argument("--stop-after-steps", type=int, default=None,
                   help="checkpoint and stop after this many steps of this invocation (continue with --resume)")
    p.add_argument("--eval-interval", type=int, default=200)
    p.add_argument("--eval-windows", type=int, default=200)
    p.add_argument("--ckpt-interval", type=int, default=500)
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--save-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--resume", action="store_true", help="continue from <out>/train_state.pt")
    p.add_argument("--device", default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    ddp = "RANK" in os.environ
    if ddp:
        import torch.distributed as dist
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    master = rank == 0
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    corpus = Path(args.corpus) if args.corpus else find_data("corpus/gutenberg")
    if corpus is None or not corpus.exists():
        raise FileNotFoundError(f"corpus not found ({args.corpus or 'corpus/gutenberg in the data directory'}); "
                                "pass --corpus DIR or set DATA_DIR")
    out = Path(args.out)
    if master:
        train, val = load_corpus(corpus, Path(args.cache_dir))
    if ddp:
        dist.barrier()
    train, val = load_corpus(corpus, Path(args.cache_dir))

    config = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                       n_positions=args.block_size, dropout=args.dropout)
    model = GPT(config).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = adamw([{"params": decay, "weight_decay": args.weight_decay},
                 {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    state_file = out / "train_state.pt"
    step, elapsed, tokens_seen, log, rng_state = 0, 0.0, 0, [], None
    if args.resume and state_file.exists():
        st = torch.load(state_file, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        step, elapsed, tokens_seen, log = st["step"], st["elapsed"], st["tokens_seen"], st["log"]
        rng_state = st["rng"][rank] if rank < len(st["rng"]) else None
        torch.set_rng_state(st["torch_rng"])
        if master:
            print(f"resumed from {state_file} at step {step} ({elapsed:.0f}s, {tokens_seen:,} tokens)")
    gen = np.random.default_rng(args.seed + 1000 * rank)
    if rng_state is not None:  # continue the window sampling exactly where it stopped
        gen.bit_generator.state = rng_state
    fwd = model
    if args.compile:
        try:  # compile errors surface at the first call: try one step, fall back to eager
            fwd = torch.compile(model)
            with autocast_for(device, args.bf16)():
                fwd(torch.zeros(args.batch_size, args.block_size, dtype=torch.long, device=device)).float().mean().backward()
            model.zero_grad(set_to_none=True)
        except Exception as e:  # pragma: no cover - depends on the platform's compiler
            print(f"torch.compile failed ({type(e).__name__}: {e}); training eagerly")
            fwd = model
            model.zero_grad(set_to_none=True)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel
        fwd = DistributedDataParallel(fwd, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = autocast_for(device, args.bf16)
    windows = val_windows(val, args.block_size, args.eval_windows)
    tokens_per_step = args.batch_size * args.grad_accum * args.block_size * world

    def progress() -> float:
        return elapsed / args.max_seconds if args.max_seconds else step / args.max_steps

    def save_state():
        states = [gen.bit_generator.state]
        if ddp:  # every rank's sampler state, so a resumed DDP run continues each stream
            states = [None] * world
            dist.all_gather_object(states, gen.bit_generator.state)
        if master:
            st = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed": elapsed,
                  "tokens_seen": tokens_seen, "log": log, "args": vars(args), "rng": states,
                  "torch_rng": torch.get_rng_state()}
            atomic_write(state_file, lambda t: torch.save(st, t))

    def log_eval():
        vl = evaluate(model, windows, args.batch_size * 2, device, autocast)
        log.append({"step": step, "tokens": tokens_seen, "elapsed": round(elapsed, 1), "val_loss": vl})
        return vl

    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=args.max_steps if not args.max_seconds else None, initial=step, disable=not master,
               unit="step", dynamic_ncols=True)
    if step == 0 and master:
        log_eval()
    model.train()
    last = time.perf_counter()
    stop_at = step + args.stop_after_steps if args.stop_after_steps else None
    while progress() < 1.0 and (args.max_seconds or step < args.max_steps) and step != stop_at:
        lr = lr_at(step, progress(), args.lr, args.warmup_steps, args.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = 0.0
        for micro in range(args.grad_accum):
            x, y = random_batch(train, args.batch_size, args.block_size, gen, device)
            sync = nullcontext() if (not ddp or micro == args.grad_accum - 1) else fwd.no_sync()
            with sync, autocast():
                logits = fwd(x)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten()) / args.grad_accum
            loss.backward()
            loss_sum += loss.item()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += tokens_per_step
        now = time.perf_counter()
        elapsed += now - last
        last = now
        if master:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr:.2e}",
                            tok_s=f"{tokens_seen / max(elapsed, 1e-9):,.0f}")
            if step % 10 == 0:
                log.append({"step": step, "tokens": tokens_seen, "elapsed": round(elapsed, 1),
                            "train_loss": loss_sum, "lr": lr, "grad_norm": float(gnorm)})
        if step % args.eval_interval == 0 and master:
            vl = log_eval()
            bar.write(f"step {step}: val loss {vl:.4f} (ppl {math.exp(vl):.1f}), {tokens_seen:,} tokens, "
                      f"{elapsed:.0f}s")
            last = time.perf_counter()  # evaluation time is not training time
        if step % args.ckpt_interval == 0:
            save_state()
            last = time.perf_counter()
    bar.close()
    result = {}
    save_state()
    if step == stop_at and progress() < 1.0:
        if master:
            print(f"stopped after step {step}; continue with --resume")
        if ddp:
            dist.destroy_process_group()
        return {}
    if master:
        vl = log_eval()
        model.save_pretrained(str(out), dtype=getattr(torch, args.save_dtype))
        result = {"val_loss": vl, "val_ppl": math.exp(vl), "unigram_val_loss": unigram_loss(train, val),
                  "steps": step, "tokens_seen": tokens_seen, "train_seconds": round(elapsed, 1),
                  "tokens_per_second": round(tokens_seen / max(elapsed, 1e-9)),
                  "parameters": model.num_parameters(), "config": vars(args), "device": str(device),
                  "world_size": world, "train_tokens": int(len(train)), "val_tokens": int(len(val)),
                  "eval_windows": len(windows)}
        result["unigram_val_ppl"] = math.exp(result["unigram_val_loss"])
        atomic_write(out / "pretrain_metrics.json", lambda t: Path(t).write_text(json.dumps(result, indent=2)))
        atomic_write(out / "pretrain_log.jsonl",
                     lambda t: Path(t).write_text("".join(json.dumps(r) + "\n" for r in log)))
        print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))
    if ddp:
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    keep_freed_memory()  # a training process: reuse freed memory across steps (minigpt/allocator.py)
    main()


def slice_loss(model: GPT, corpus: Path, *, files: int = 4, chars: int = 20_000, block: int = 256) -> float:
    """Loss (nats/token, fp32) on a fixed slice of the validation books: the first `chars` characters of
    the first `files` val files, tokenized as in pretraining, in non-overlapping `block`-token windows.
    Cheap enough for a test; the model card records it."""
    enc = load_tokenizer()
    _, val_files = corpus_files(corpus)
    ids: list[int] = []
    for f in (val_files or [])[:files]:
        for para in f.read_text(encoding="utf-8")[:chars].split("\n"):
            if para.strip():
                ids += enc.encode_ordinary(para) + [198]
    n = (len(ids) - 1) // block
    if n == 0:
        raise ValueError(f"{corpus} has no val/ books to score")
    x = torch.tensor(ids[:n * block + 1])
    windows = torch.stack([x[i * block:(i + 1) * block + 1] for i in range(n)])
    model = model if next(model.parameters()).dtype == torch.float32 else copy.deepcopy(model).float()
    return evaluate(model, windows, 8, next(model.parameters()).device, nullcontext)
