"""Pretrain a GPT-2-architecture model on a mixture of text corpora (or continue a pretrained one).

    python -m minigpt.pretraining --out runs/my-gpt          # books + Wikipedia + movie reviews (DEFAULT_MIXTURE)
    python -m minigpt.pretraining --out runs/my-gpt --source books=path/to/txt:0.5 --source web=dump.jsonl.gz:0.5
    python -m minigpt.pretraining --out runs/more --init-from checkpoints/minigpt-gutenberg --max-seconds 600
    torchrun --nproc_per_node=4 -m minigpt.pretraining ...      # DDP over GPUs (or CPU processes, gloo)

Each source is tokenized once into uint16 shards (cached under --cache-dir, keyed on the files'
contents; minigpt/pretraining/mixture.py). Training draws each row's source by weight and a random window of it, uses
AdamW (or Muon for the blocks' matrices) with warmup and a cosine or warmup-stable-decay schedule
(minigpt/pretraining/optim.py), gradient clipping and accumulation, bf16 autocast where supported, evaluates fixed validation windows of every source (the loss per source and their weighted mean),
and writes atomic checkpoints (`--resume`; Ctrl-C finishes the step, saves one and stops).
The schedule can be step-based (`--max-steps`) or time-based (`--max-seconds`: the cosine runs over
wall-clock time, so a fixed budget ends exactly at the bottom of the schedule). The result is saved in
Hugging Face GPT-2 format with a loss curve and metrics.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import fast
from ..config import GPTConfig
from ..checks import positive
from ..datadir import find_data
from ..io import CheckpointError, atomic_write, load_state
from ..model import GPT
from ..runtime import GracefulInterrupt, autocast, evaluating, matmul_peak
from ..tokenizer import load_tokenizer
from ..weights import shard_size, write_checkpoint
from .mixture import Mixture, Source, split_files, unigram_loss, val_windows
from .optim import OPTIMIZERS, SCHEDULES, decaying, lr_scale, make_optimizers, set_lr
from .padding import pad_vocab, unpadded


# ---------------------------------------------------------------- data
DEFAULT_MIXTURE = ("gutenberg=corpus/gutenberg:0.35", "wikipedia=corpus/wikipedia:0.3", "imdb=corpus/imdb:0.35")


def resolve_sources(specs: list[str] | None, corpus: str | None) -> list[Source]:
    """The mixture's sources: `--source` specs, else `--corpus` alone, else DEFAULT_MIXTURE from the data
    directory. A relative path that does not exist is looked up in the data directory too."""
    if specs and corpus:
        raise ValueError("pass either --corpus (one source) or --source (a mixture), not both")
    specs = specs or ([corpus] if corpus else list(DEFAULT_MIXTURE))
    sources = []
    for spec in specs:
        s = Source.parse(spec)
        if not s.path.exists() and not s.path.is_absolute():
            found = find_data(str(s.path))
            if found is None:
                raise FileNotFoundError(f"corpus source {s.path} not found here or in the data directory; "
                                        "pass an existing path or set DATA_DIR")
            s.path = found
        sources.append(s)
    return sources


EVAL_BATCH = 16  # windows per evaluation batch: their fp32 logits (16 x 512 x 50257) take 1.6 GB


@torch.no_grad()
def evaluate(model: GPT, windows: torch.Tensor, batch: int, device, autocast, vocab: int | None = None) -> float:
    """Mean next-token loss (nats) over the fixed validation windows (the model's mode is restored), over the
    first `vocab` logits (all by default; fewer for a padded vocabulary)."""
    total, count = 0.0, 0
    with evaluating(model):
        for i in range(0, len(windows), batch):
            w = windows[i:i + batch].to(device)
            with autocast():
                logits = model(w[:, :-1])[..., :vocab]
            total += F.cross_entropy(logits.float().flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
            count += w[:, 1:].numel()
    return total / count


# ---------------------------------------------------------------- training
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m minigpt.pretraining", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", default=None, metavar="NAME=PATH[:WEIGHT]",
                   help="a corpus of the mixture (repeat for several; see minigpt/pretraining/mixture.py for the layouts). "
                   "Default: " + " ".join(DEFAULT_MIXTURE) + " from the data directory")
    p.add_argument("--corpus", default=None, help="train on this one source alone (a folder or file)")
    p.add_argument("--out", required=True, help="output directory; one that holds a run is refused unless "
                   "--resume or --overwrite is given")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds a run")
    p.add_argument("--resume", action="store_true", help="continue from <out>/train_state.pt (must exist)")
    p.add_argument("--extend", action="store_true", help="with --resume and a larger --max-steps or --max-seconds: "
                   "train a run (even a finished one) further: a cosine schedule is stretched to the new budget; a "
                   "wsd one continues its stable phase (from <out>/stable_state.pt if it had begun to decay) and "
                   "decays at the new end")
    p.add_argument("--init-from", default=None, help="start from this checkpoint's weights (continued "
                   "pretraining); its shape replaces --n-layer/--n-head/--n-embd")
    p.add_argument("--cache-dir", default=".cache/pretrain", help="where token shards are cached")
    p.add_argument("--n-layer", type=positive(int), default=8)
    p.add_argument("--n-head", type=positive(int), default=4)
    p.add_argument("--n-embd", type=positive(int), default=256)
    p.add_argument("--block-size", type=positive(int), default=512, help="training context (= n_positions)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--pad-vocab", type=positive(int), default=None, metavar="N", help="train with the embedding / "
                   "output matrix padded to a multiple of N rows (64: 50304, faster on GPUs); the extra rows get no "
                   "probability and are cut off when saving")
    p.add_argument("--batch-size", type=positive(int), default=16, help="sequences per micro-batch per process")
    p.add_argument("--grad-accum", type=positive(int), default=1)
    p.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS, help="muon: torch.optim.Muon for the "
                   "blocks' weight matrices, AdamW for embeddings, LayerNorms and biases")
    p.add_argument("--lr", type=positive(float), default=1e-3, help="AdamW's peak learning rate")
    p.add_argument("--muon-lr", type=positive(float), default=0.02, help="Muon's peak learning rate")
    p.add_argument("--muon-weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="cosine", choices=SCHEDULES, help="wsd: warmup, constant, then linear "
                   "decay over the last --decay-frac of the budget")
    p.add_argument("--decay-frac", type=positive(float), default=0.2, help="wsd: fraction of the budget that decays")
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW's weight decay of matrices and embeddings")
    p.add_argument("--grad-clip", type=positive(float), default=1.0)
    p.add_argument("--max-steps", type=positive(int), default=2000)
    p.add_argument("--max-seconds", type=positive(float), default=None, help="time-based schedule and budget")
    p.add_argument("--stop-after-steps", type=positive(int), default=None,
                   help="checkpoint and stop after this many steps of this invocation (continue with --resume)")
    p.add_argument("--eval-interval", type=positive(int), default=200)
    p.add_argument("--eval-windows", type=positive(int), default=200, help="validation windows per source")
    p.add_argument("--ckpt-interval", type=positive(int), default=500)
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model and loss")
    p.add_argument("--save-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default=None)
    p.add_argument("--peak-tflops", type=positive(float), default=None,
                   help="the device's peak TFLOP/s in the training precision, for model-FLOP utilization "
                        "(default: measured at the end with a large matmul)")
    args = p.parse_args(argv)
    if args.decay_frac > 1:
        p.error(f"--decay-frac {args.decay_frac}: the decay is a fraction of the budget, at most 1")
    return args


# settings that may change between an interrupted run and its resumption
RESUMABLE = {"resume", "overwrite", "extend", "stop_after_steps", "device", "cache_dir", "peak_tflops"}
EXTENDABLE = ("max_steps", "max_seconds")  # with --extend: a larger budget trains a finished run further


def check_out_dir(args: argparse.Namespace) -> Path:
    """Refuse to overwrite a run, to resume nothing, or to resume with other settings."""
    out = Path(args.out)
    state = out / "train_state.pt"
    holds_run = any((out / f).exists() for f in ("train_state.pt", "model.safetensors", "pretrain_metrics.json"))
    if args.resume:
        if not state.exists():
            raise SystemExit(f"--resume: {state} does not exist; start without --resume")
        saved = load_state(state, "cpu")["args"]
        defaults = vars(parse_args(["--out", args.out]))  # for settings newer than the saved state
        saved = {k: saved.get(k, defaults[k]) for k in defaults}
        differ = {k: (saved[k], v) for k, v in vars(args).items() if k not in RESUMABLE and saved[k] != v}
        longer = {k for k, (a, b) in differ.items() if k in EXTENDABLE and a is not None and b is not None and b > a}
        if args.extend and longer:
            print(f"--extend: the schedule now runs to {', '.join(f'{k} {differ[k][1]}' for k in sorted(longer))} "
                  f"(was {', '.join(str(differ[k][0]) for k in sorted(longer))}); the learning rate follows the "
                  f"{'stretched cosine' if args.schedule == 'cosine' else 'longer stable phase'} from here")
            differ = {k: v for k, v in differ.items() if k not in longer}
        if differ:
            offer = ("; to train it further on purpose, add --extend (the schedule then runs to the new budget)"
                     if set(differ) <= set(EXTENDABLE) else "")
            raise SystemExit(f"--resume with other settings than {state} was trained with: " + "; ".join(
                f"{k}: was {a!r}, now {b!r}" for k, (a, b) in differ.items()) + offer)
    elif holds_run and not args.overwrite:
        raise SystemExit(f"{out} already holds a pretraining run; pass --resume to continue it, --overwrite to "
                         "replace it, or another --out")
    return out


def lm_loss(fwd, x: torch.Tensor, y: torch.Tensor, vocab: int | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of `fwd(x)`'s first `vocab` logits (all by default) against `y`, in fp32."""
    return F.cross_entropy(fwd(x)[..., :vocab].float().flatten(0, 1), y.flatten())


def compiled_loss(run: Pretraining):
    """(loss function of (x, y), the DDP wrapper or None). With --compile the model and loss are compiled
    together (the fp32 logits are then never stored); under DDP only the model is, inside the wrapper."""
    model, args, device, ddp = run.model, run.args, run.device, run.ddp
    fwd = model
    loss = partial(lm_loss, model, vocab=run.vocab)
    if args.compile:
        try:  # compile errors surface at the first call: try one step, fall back to eager
            if ddp:
                fwd = torch.compile(model)
                candidate = partial(lm_loss, fwd, vocab=run.vocab)
            else:
                candidate = torch.compile(loss)
            x, y = run.mixture.batch(args.batch_size, np.random.default_rng(0), device)
            with run.bf16_autocast():
                candidate(x, y).backward()
            loss = candidate
        except Exception as e:  # pragma: no cover - depends on the platform's compiler
            print(f"torch.compile failed ({type(e).__name__}: {e}); training eagerly")
            fwd = model
        model.zero_grad(set_to_none=True)
    if not ddp:
        return loss, None
    from torch.nn.parallel import DistributedDataParallel
    wrapped = DistributedDataParallel(fwd, device_ids=[device.index] if device.type == "cuda" else None)
    return partial(lm_loss, wrapped, vocab=run.vocab), wrapped


def setup_device(args) -> tuple[bool, int, int, torch.device]:
    """(ddp, rank, world size, device); under torchrun the process group is initialized here."""
    if "RANK" not in os.environ:
        return False, 0, 1, torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    import torch.distributed as dist
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return True, dist.get_rank(), dist.get_world_size(), device


def build_model(args, device) -> tuple[GPT, int]:
    """(the model to train, its real vocabulary size: less than the model's with --pad-vocab)."""
    if args.init_from:
        model = GPT.from_pretrained(args.init_from, dtype=torch.float32)
        if model.config.n_positions < args.block_size:
            raise SystemExit(f"--block-size {args.block_size} exceeds {args.init_from}'s context of "
                             f"{model.config.n_positions} positions")
    else:
        model = GPT(GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                              n_positions=args.block_size, dropout=args.dropout))
    vocab = model.config.vocab_size
    if args.pad_vocab:
        pad_vocab(model, args.pad_vocab)
    return fast.enable(model.to(device)), vocab  # the fused CPU kernels (fall back to plain PyTorch elsewhere)


@dataclass
class Pretraining:
    """One pretraining run: its settings, data, model, optimizers, and where it is (saved in train_state.pt)."""
    args: argparse.Namespace
    out: Path
    ddp: bool
    rank: int
    world: int
    device: torch.device
    mixture: Mixture
    model: GPT
    opts: list[torch.optim.Optimizer]  # AdamW, then Muon with --optimizer muon
    gen: np.random.Generator  # draws the training windows
    windows: dict  # source name -> fixed validation windows
    bf16_autocast: Callable
    vocab: int  # the tokenizer's: the model's own less its padding (--pad-vocab)
    train_loss: Callable = None  # (x, y) -> loss; compiled when --compile
    ddp_model: torch.nn.Module | None = None
    step: int = 0
    elapsed: float = 0.0  # training seconds (evaluation and saving not counted)
    tokens_seen: int = 0
    log: list = field(default_factory=list)

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def state_file(self) -> Path:
        return self.out / "train_state.pt"

    @property
    def stable_file(self) -> Path:
        """A WSD run's training state where its decay began: `--extend` continues the stable phase from it."""
        return self.out / "stable_state.pt"

    def progress(self) -> float:
        """Fraction of the budget (seconds or steps) spent."""
        return progress(self.args, self.step, self.elapsed)


def progress(args, step: int, elapsed: float) -> float:
    """Fraction of `args`' budget (seconds or steps) spent after `step` steps and `elapsed` training seconds."""
    return elapsed / args.max_seconds if args.max_seconds else step / args.max_steps


def setup(args: argparse.Namespace) -> Pretraining:
    """Check the output folder, read the sources, build the model and optimizer; resume with --resume."""
    try:
        out = check_out_dir(args)
    except CheckpointError as e:
        raise SystemExit(str(e)) from None
    try:
        sources = resolve_sources(args.source, args.corpus)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    ddp, rank, world, device = setup_device(args)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if ddp:  # process 0 tokenizes; the others read its cache
        if rank == 0:
            [s.load(Path(args.cache_dir)) for s in sources]
        torch.distributed.barrier()
    try:
        mixture = Mixture([s.load(Path(args.cache_dir)) for s in sources], args.block_size)
    except (FileNotFoundError, ValueError) as e:  # a missing, malformed or too short corpus
        raise SystemExit(f"error: {e}") from None
    if rank == 0:
        for d in mixture.describe():
            print(f"source {d['name']}: weight {d['weight']:.3f}, {d['train_tokens']:,} training tokens "
                  f"({d['train_files']} files), {d['val_tokens']:,} validation tokens")
    model, vocab = build_model(args, device)
    opts = make_optimizers(model, args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                           muon_lr=args.muon_lr, muon_weight_decay=args.muon_weight_decay)
    run = Pretraining(args, out, ddp, rank, world, device, mixture, model, opts,
                      gen=np.random.default_rng(args.seed + 1000 * rank),
                      windows={s.name: val_windows(s.val, args.block_size, args.eval_windows) for s in mixture.sources},
                      bf16_autocast=autocast(device, args.bf16), vocab=vocab)
    if args.resume:
        resume(run)
    run.train_loss, run.ddp_model = compiled_loss(run)
    return run


def state_to_resume(run: Pretraining) -> dict:
    """The saved training state to continue: `run.state_file`, or, when `--extend` lengthens a WSD run whose
    decay had begun, the state saved where its stable phase ended (the decayed steps are trained again)."""
    st = load_state(run.state_file, run.device)
    a, old = run.args, argparse.Namespace(**st["args"])
    if not (a.extend and decaying(progress(old, st["step"], st["elapsed"]), a.schedule, a.decay_frac)):
        return st
    if not run.stable_file.exists():
        raise SystemExit(f"error: --extend: {run.state_file} is past the start of its decay and {run.stable_file}, "
                         "the state where its stable phase ended, is missing; resume without --extend, or start "
                         "afresh with --overwrite")
    st = load_state(run.stable_file, run.device)
    if run.master:
        print(f"--extend: continuing the stable phase from {run.stable_file} (step {st['step']}); the decay "
              "moves to the new end")
    return st


def resume(run: Pretraining) -> None:
    """Restore the model, optimizers, counters and random streams of the saved state (`state_to_resume`)."""
    st = state_to_resume(run)
    now = {src.name: src.key for src in run.mixture.sources}
    changed = [n for n, key in (st.get("sources") or {}).items() if now.get(n) != key]
    if changed:
        raise SystemExit(f"error: --resume: the text of source(s) {', '.join(changed)} changed since {run.state_file} "
                         "was saved (their files' fingerprint differs); resume with the text it was trained on, or "
                         "start afresh with --overwrite")
    run.model.load_state_dict(st["model"])
    for opt, key in zip(run.opts, ("optimizer", "muon")):
        opt.load_state_dict(st[key])
    run.step, run.elapsed, run.tokens_seen, run.log = st["step"], st["elapsed"], st["tokens_seen"], st["log"]
    if run.rank < len(st["rng"]) and st["rng"][run.rank] is not None:  # window sampling continues exactly
        run.gen.bit_generator.state = st["rng"][run.rank]
    torch.set_rng_state(st["torch_rng"])
    if run.master:
        print(f"resumed from {run.state_file} at step {run.step} ({run.elapsed:.0f}s, {run.tokens_seen:,} tokens)")


def save_state(run: Pretraining, path: Path | None = None) -> None:
    """Write the training state atomically to `path` (default train_state.pt), with every rank's window
    sampler state, so that a resumed DDP run continues."""
    states = [run.gen.bit_generator.state]
    if run.ddp:
        states = [None] * run.world
        torch.distributed.all_gather_object(states, run.gen.bit_generator.state)
    if run.master:
        st = {"model": run.model.state_dict(), **{k: o.state_dict() for k, o in zip(("optimizer", "muon"), run.opts)},
              "step": run.step,
              "elapsed": run.elapsed, "tokens_seen": run.tokens_seen, "log": run.log, "args": vars(run.args),
              "rng": states, "torch_rng": torch.get_rng_state(),
              "sources": {src.name: src.key for src in run.mixture.sources}}  # what the text was
        atomic_write(path or run.state_file, lambda t: torch.save(st, t))


def log_eval(run: Pretraining) -> float:
    """Held-out loss per source and their weighted mean, appended to the log; returns the mean."""
    by_source = {name: evaluate(run.model, w, EVAL_BATCH, run.device, run.bf16_autocast, run.vocab)
                 for name, w in run.windows.items()}
    vl = float(sum(w * by_source[s.name] for s, w in zip(run.mixture.sources, run.mixture.weights)))
    run.log.append({"step": run.step, "tokens": run.tokens_seen, "elapsed": round(run.elapsed, 1), "val_loss": vl,
                    "val_loss_by_source": by_source})
    return vl


def train_step(run: Pretraining) -> tuple[torch.Tensor, float, torch.Tensor]:
    """One optimizer step (with gradient accumulation); returns (loss, lr, gradient norm), the loss and norm as
    tensors on the device: reading them waits for the device, so the loop reads them only when it logs."""
    a = run.args
    set_lr(run.opts, lr_scale(run.step, run.progress(), a.warmup_steps, a.min_lr_ratio, a.schedule, a.decay_frac))
    lr = run.opts[0].param_groups[0]["lr"]  # AdamW's
    loss_sum = torch.zeros((), device=run.device)
    for micro in range(a.grad_accum):
        x, y = run.mixture.batch(a.batch_size, run.gen, run.device)
        last_micro = micro == a.grad_accum - 1
        sync = nullcontext() if (not run.ddp or last_micro) else run.ddp_model.no_sync()
        with sync, run.bf16_autocast():
            loss = run.train_loss(x, y) / a.grad_accum
        loss.backward()
        loss_sum += loss.detach()
    gnorm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), a.grad_clip)
    for opt in run.opts:
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss_sum, lr, gnorm


def check_finite(run: Pretraining, loss: torch.Tensor, lr: float) -> None:
    """Stop (before anything is saved) once the training loss is not a number; under torchrun every process
    stops at the same step, so that none waits for the others forever."""
    finite = torch.isfinite(loss).to(torch.int32)
    if run.ddp:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    if not finite.item():
        raise SystemExit(f"the training loss became {loss.item()} by step {run.step} (lr {lr:.2e}); nothing was "
                         f"saved past the last checkpoint in {run.out}. Lower --lr or --max-seconds")


def show_step(run: Pretraining, bar: tqdm, loss: torch.Tensor, lr: float, gnorm: torch.Tensor, due: bool) -> None:
    """The progress bar after a step; where `due` (see `read_due`) the loss is read from the device, shown and
    every tenth step logged."""
    a = run.args
    bar.update(1)
    if not due:
        return
    loss, gnorm = loss.item(), gnorm.item()
    left = {"left": f"{max(0.0, a.max_seconds - run.elapsed) / 60:.1f}min"} if a.max_seconds else {}
    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}",
                    tok_s=f"{run.tokens_seen / max(run.elapsed, 1e-9):,.0f}", **left)  # a budget's ETA
    if run.step % 10 == 0:
        run.log.append({"step": run.step, "tokens": run.tokens_seen, "elapsed": round(run.elapsed, 1),
                        "train_loss": loss, "lr": lr, "grad_norm": gnorm})


def agreed_seconds(run: Pretraining) -> float:
    """The largest of the processes' training seconds (under torchrun, each process times itself)."""
    t = torch.tensor([run.elapsed], dtype=torch.float64, device=run.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def read_due(run: Pretraining, stop_at: int | None, interrupted: bool) -> bool:
    """Whether the loop reads this step's loss from the device (every tenth step, before an evaluation or a
    checkpoint, and at the end): reading it waits for the device, so other steps queue their work unread."""
    a = run.args
    return (run.step % 10 == 0 or run.step % a.eval_interval == 0 or run.step % a.ckpt_interval == 0
            or interrupted or run.step == stop_at or run.progress() >= 1.0
            or (not a.max_seconds and run.step >= a.max_steps))


def train(run: Pretraining) -> bool:
    """Steps until the budget is spent (or --stop-after-steps), with evaluations, checkpoints and a progress
    bar; Ctrl-C finishes the step, saves the state and stops. Returns whether it stopped before the budget was spent."""
    a = run.args
    tokens_per_step = a.batch_size * a.grad_accum * a.block_size * run.world
    bar = tqdm(total=a.max_steps if not a.max_seconds else None, initial=run.step, disable=not run.master,
               unit="step", dynamic_ncols=True)
    if run.step == 0 and run.master:
        log_eval(run)
    run.model.train()
    last = time.perf_counter()
    stop_at = run.step + a.stop_after_steps if a.stop_after_steps else None
    stable = not decaying(run.progress(), a.schedule, a.decay_frac)
    try:
        with GracefulInterrupt(enabled=not run.ddp) as interrupt:
            while run.progress() < 1.0 and (a.max_seconds or run.step < a.max_steps) and run.step != stop_at:
                if stable and decaying(run.progress(), a.schedule, a.decay_frac):  # a WSD decay begins
                    save_state(run, run.stable_file)
                    stable, last = False, time.perf_counter()
                loss, lr, gnorm = train_step(run)
                run.step += 1
                run.tokens_seen += tokens_per_step
                now = time.perf_counter()
                run.elapsed += now - last
                last = now
                if run.ddp and a.max_seconds:  # one clock for every process: they stop at the same step
                    run.elapsed = agreed_seconds(run)
                due = read_due(run, stop_at, interrupt.requested)
                if due:
                    check_finite(run, loss, lr)
                if run.master:
                    show_step(run, bar, loss, lr, gnorm, due)
                if run.step % a.eval_interval == 0 and run.master:
                    vl = log_eval(run)
                    bar.write(f"step {run.step}: val loss {vl:.4f} (ppl {math.exp(vl):.1f}), {run.tokens_seen:,} "
                              f"tokens, {run.elapsed:.0f}s")
                    last = time.perf_counter()  # evaluation time is not training time
                if run.step % a.ckpt_interval == 0 or interrupt.requested:
                    save_state(run)
                    last = time.perf_counter()
                if interrupt.requested:  # Ctrl-C: the step it came in finished, and was saved
                    bar.close()
                    raise SystemExit(f"interrupted at step {run.step}: saved {run.state_file}; continue with --resume")
    except KeyboardInterrupt:  # a second Ctrl-C, or any under torchrun: the step it came in is half done
        bar.close()
        kept = f"{run.state_file} keeps the last checkpoint" if run.state_file.exists() else "nothing was saved yet"
        raise SystemExit(f"interrupted during step {run.step + 1}: {kept}; continue with --resume") from None
    bar.close()
    save_state(run)
    return run.step == stop_at and run.progress() < 1.0


def finish(run: Pretraining) -> dict:
    """The final evaluation, the model, pretrain_metrics.json and pretrain_log.jsonl (process 0)."""
    model, args, mixture = run.model, run.args, run.mixture
    vl = log_eval(run)
    sd, config = unpadded(model, run.vocab)
    dtype = getattr(torch, args.save_dtype)
    write_checkpoint(sd, config, run.out, dtype=dtype, max_shard_bytes=shard_size(sd, dtype))  # sharded if large
    by_source = run.log[-1]["val_loss_by_source"]
    sources = mixture.describe()
    for d, s in zip(sources, mixture.sources):  # describe() keeps the sources' order
        d["val_loss"] = by_source[d["name"]]
        d["unigram_val_loss"] = unigram_loss(s.train, s.val)
    result = {"val_loss": vl, "val_ppl": math.exp(vl),
              "unigram_val_loss": float(sum(d["weight"] * d["unigram_val_loss"] for d in sources)),
              "val_loss_by_source": by_source, "sources": sources,
              "steps": run.step, "tokens_seen": run.tokens_seen, "train_seconds": round(run.elapsed, 1),
              "parameters": model.num_parameters() - (model.config.vocab_size - run.vocab) * model.config.n_embd,
              "non_embedding_parameters": non_embedding_params(model),
              "config": vars(args), "device": str(run.device),
              "gpu": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else None,
              "torch": torch.__version__, "world_size": run.world,
              "train_tokens": int(sum(d["train_tokens"] for d in sources)),
              "val_tokens": int(sum(d["val_tokens"] for d in sources)),
              "eval_windows": int(sum(len(w) for w in run.windows.values())), **throughput(run)}
    result["unigram_val_ppl"] = math.exp(result["unigram_val_loss"])
    atomic_write(run.out / "pretrain_metrics.json", lambda t: Path(t).write_text(json.dumps(result, indent=2)))
    atomic_write(run.out / "pretrain_log.jsonl",
                 lambda t: Path(t).write_text("".join(json.dumps(r) + "\n" for r in run.log)))
    print(json.dumps({k: v for k, v in result.items() if k not in ("config", "sources")}, indent=2))
    return result


def flops_per_token(model: GPT, vocab: int, block_size: int) -> int:
    """Model FLOPs of training on one token (forward and backward: 3 x 2 per weight and token), as PaLM's
    appendix B counts them: the blocks' weights and the output layer (`vocab` x n_embd), plus the attention
    scores and their weighted sum over a full context of `block_size` (12 x layers x width x context)."""
    c = model.config
    weights = non_embedding_params(model) + vocab * c.n_embd
    return 6 * weights + 12 * c.n_layer * c.n_embd * block_size


def throughput(run: Pretraining) -> dict:
    """Tokens/s and model-FLOP utilization (MFU): the model FLOPs done per second over the device's peak, given
    by --peak-tflops or measured now with a large matmul in the training precision."""
    a = run.args
    per_second = run.tokens_seen / max(run.elapsed, 1e-9)
    flops = flops_per_token(run.model, run.vocab, a.block_size)
    small = 2048 if run.device.type == "cpu" else None  # a few seconds on a laptop CPU
    peak = a.peak_tflops or matmul_peak(torch.bfloat16 if a.bf16 else torch.float32, run.device, small) / 1e3
    achieved = flops * per_second / 1e12 / run.world  # per device
    steady = steady_rate(run.log)
    return {"tokens_per_second": round(per_second), "model_flops_per_token": flops,
            "model_tflops_per_device": round(achieved, 4), "peak_tflops": round(peak, 3),
            "peak_measured": a.peak_tflops is None, "mfu": round(achieved / peak, 4),
            "steady_tokens_per_second": steady and round(steady),
            "steady_mfu": steady and round(flops * steady / 1e12 / run.world / peak, 4)}


def steady_rate(log: list[dict]) -> float | None:
    """Tokens/s over the second half of the logged training steps, leaving out the first steps' compilation
    and warm-up (which a short run's overall rate includes); None with fewer than 4 logged steps."""
    rows = [r for r in log if "train_loss" in r]
    if len(rows) < 4:
        return None
    a, b = rows[len(rows) // 2], rows[-1]
    return (b["tokens"] - a["tokens"]) / (b["elapsed"] - a["elapsed"]) if b["elapsed"] > a["elapsed"] else None


def main(argv=None) -> dict:
    run = setup(parse_args(argv))
    run.out.mkdir(parents=True, exist_ok=True)
    stopped_early = train(run)
    result = {}
    if stopped_early:
        if run.master:
            print(f"stopped after step {run.step}; continue with --resume")
    elif run.master:
        result = finish(run)
    if run.ddp:
        torch.distributed.destroy_process_group()
    return result


def non_embedding_params(model: GPT) -> int:
    """Parameters outside the token and position embeddings (the usual measure of a model's size)."""
    t = model.transformer
    return model.num_parameters() - t.wte.weight.numel() - t.wpe.weight.numel()


def slice_loss(model: GPT, corpus: Path, *, files: int = 4, chars: int = 20_000, block: int = 256) -> float:
    """Loss (nats/token, fp32) on a fixed slice of the validation books: the first `chars` characters of
    the first `files` val files, tokenized as in pretraining, in non-overlapping `block`-token windows.
    Cheap enough for a test; the model card records it."""
    enc = load_tokenizer()
    block = min(block, model.config.n_positions)
    _, val_files = split_files(corpus)
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

