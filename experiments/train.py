"""The training loop shared by every method: prefix-tuning, embedding-only prompts and full fine-tuning.

`net` is anything with `hidden_states(input_ids) -> (B, T, C)` whose trainable parameters are the
ones to learn (a `prefix.PrefixTuner`, the `GPT` itself for fine-tuning, or a classifier around either);
an objective turns hidden states into a summed loss (`LMObjective` here: logits only at positions that
carry a target, which is most of the saving on a 50,257-way output layer). Batches are right-padded:
causal attention never lets a real token see the padding after it, so no attention mask is needed.

Runs resume exactly (`state.pt`: trainable weights, optimizer, RNG, position in the epoch) and run under
`torchrun` unchanged: each process takes its share of every global batch, and the loss is normalized by
the global number of target tokens, so N processes follow the same trajectory as one. Ctrl-C finishes the
current step, saves `state.pt` and stops; a loss that becomes inf or nan stops the run (`TrainingDiverged`).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from minigpt import IGNORE
from minigpt.fast.optim import adamw
from minigpt.fast.step import CompiledLoss
from minigpt.runtime import GracefulInterrupt, autocast, evaluating, rank_and_world
from minigpt.io import CheckpointError, atomic_write, load_state

from .data import bucket_batches
from .runid import RunId, recorded_settings



class Objective(Protocol):
    """What `fit` trains on: items (e.g. (input_ids, labels) pairs) and a summed loss over a batch of them."""

    def length(self, item) -> int:
        """The item's length in tokens (batches group similar lengths)."""

    def count(self, items) -> int:
        """How many scored positions `items` hold (the loss is normalized by it)."""

    def loss(self, hidden: Callable[[torch.Tensor], torch.Tensor], items, device) -> torch.Tensor:
        """The loss summed over `items`; `hidden` maps input ids (B, T) to hidden states (B, T, C)."""


@dataclass
class Progress:
    """Where training is, saved in `state.pt` (as a dict) so that a run resumes exactly."""
    epoch: int = 0
    batch: int = 0  # next batch of this epoch
    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # training seconds
    tokens: int = 0
    best_dev: float = math.inf
    best: dict | None = None  # trainable weights at the best dev loss
    bad_epochs: int = 0  # epochs since the dev loss last improved
    dev: list = field(default_factory=list)  # dev loss per epoch


class TrainingDiverged(RuntimeError):
    """The training or dev loss became inf or nan: the run stops and is not scored."""


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (input_ids, labels) pairs -> ids (B, T), labels (B, T) with IGNORE on padding."""
    T = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), T), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), T), IGNORE, dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
    return ids, labels


class Hidden(nn.Module):
    """`net.hidden_states` as a module's forward, so DistributedDataParallel sees the call."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.net.hidden_states(ids)


class LMObjective:
    """Next-token cross-entropy on the target part of (input_ids, labels) pairs, with logits computed
    only at target positions and a few rows at a time (`GPT.loss`): the 50,257-way output layer is most
    of the cost otherwise."""

    def __init__(self, model, pad_id: int):
        self.model, self.pad_id = model, pad_id  # the GPT whose (tied) output layer scores the targets
        self.compiled: CompiledLoss | None = None  # set by `compile`: the training loss, compiled

    @staticmethod
    def length(item) -> int:
        return len(item[0])

    @staticmethod
    def count(items) -> int:
        """Number of scored positions (the loss shifts labels by one)."""
        return sum(sum(y != IGNORE for y in labels[1:]) for _, labels in items)

    def compile(self, hidden, rows: int) -> None:
        """Compute the training loss (where gradients are on) with `minigpt.fast.step.CompiledLoss` over
        `hidden`, batches padded to `rows`; the dev loss stays eager."""
        self.compiled = CompiledLoss(hidden, self.model, rows, pad_id=self.pad_id)

    def loss(self, hidden, items, device) -> torch.Tensor:
        """Summed loss over `items`; hidden: callable ids (B, T) -> hidden states (B, T, C)."""
        ids, labels = collate(items, self.pad_id)
        if self.compiled is not None and torch.is_grad_enabled():
            return self.compiled(ids, labels)
        return self.model.target_loss(hidden(ids.to(device)), labels.to(device), reduction="sum")


class InfixObjective:
    """LMObjective's loss for an infix tuner (`prefix.infix.InfixTuner`): each (input_ids, labels) pair is cut
    where its labels start (the source is the part labelled IGNORE); sources are left-padded and targets
    right-padded, so that the infix sits right after every source."""

    def __init__(self, tuner, pad_id: int):
        self.tuner, self.pad_id = tuner, pad_id
        if rank_and_world()[1] > 1:
            raise SystemExit("infix runs train in one process: run them without torchrun")

    length = staticmethod(LMObjective.length)

    @staticmethod
    def count(items) -> int:
        """Number of scored positions: every target token (the first is predicted from the infix)."""
        return sum(sum(y != IGNORE for y in labels) for _, labels in items)

    def loss(self, hidden, items, device) -> torch.Tensor:
        """Summed loss over `items` (`hidden`, the net's hidden states, is not used: the split needs the tuner)."""
        cut = [next(i for i, y in enumerate(labels) if y != IGNORE) for _, labels in items]
        Ts, Ty = max(cut), max(len(ids) - c for (ids, _), c in zip(items, cut))
        source = torch.full((len(items), Ts), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(items), Ts, dtype=torch.long)
        target = torch.full((len(items), Ty), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), Ty), IGNORE, dtype=torch.long)
        for row, ((ids, ys), c) in enumerate(zip(items, cut)):
            source[row, Ts - c:], mask[row, Ts - c:] = torch.tensor(ids[:c]), 1
            target[row, :len(ids) - c], labels[row, :len(ids) - c] = torch.tensor(ids[c:]), torch.tensor(ys[c:])
        return self.tuner.loss(source.to(device), mask.to(device), target.to(device), labels.to(device),
                               reduction="sum")


def trainable_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}


@torch.no_grad()
def dev_loss(net, objective: Objective, items, batch_size, bf16_autocast, device="cpu") -> float:
    """Mean loss per scored position on held-out items (eval mode)."""
    total = 0.0
    with evaluating(net):
        for i in range(0, len(items), batch_size):
            with bf16_autocast():
                total += objective.loss(net.hidden_states, items[i:i + batch_size], device).item()
    loss = total / max(objective.count(items), 1)
    if not math.isfinite(loss):
        raise TrainingDiverged(f"the dev loss is {loss}: the model diverged and the run is not scored; "
                               "try a lower lr")
    return loss


WARMUP_SHARE = 0.2  # warmup never takes more than this share of a run's optimizer steps


def warmup_for(total: int, warmup_steps: int) -> int:
    """The warmup a run of `total` optimizer steps uses: `warmup_steps`, capped at WARMUP_SHARE of the run,
    so a 50-step run warms up for 10 steps, not 100 (a 500-step run keeps the default 100)."""
    return min(warmup_steps, int(total * WARMUP_SHARE))


def linear_schedule(step: int, total: int, warmup: int) -> float:
    """Linear warmup then linear decay to 0 (the paper's schedule); a multiplier of the peak lr."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def fit(net: nn.Module, objective: Objective, train_items: list, dev_items: list, cfg, run_dir: Path,
        log=print) -> dict:
    """Train `net`'s trainable parameters on `objective` (e.g. `LMObjective`); returns a summary.

    Resumes from `run_dir/state.pt`."""
    loop = Loop(net, objective, train_items, cfg, run_dir, log)
    st = loop.st
    with GracefulInterrupt(enabled=not loop.ddp) as interrupt:
        while st.epoch < cfg.epochs and not (cfg.patience and st.bad_epochs >= cfg.patience):
            batches = bucket_batches(loop.lengths, cfg.batch_size, cfg.seed + st.epoch)
            while st.batch < len(batches):
                loop.step(batches[st.batch])
                if st.step % cfg.ckpt_every == 0 or interrupt.requested:
                    loop.save()
                interrupt.stop_if_requested(log, loop.state_file)
            loop.end_epoch(dev_items)  # dev loss, keep the best, stop early when it stops improving
            loop.save()
            interrupt.stop_if_requested(log, loop.state_file)
    loop.bar.close()
    if st.best is not None:
        net.load_state_dict(st.best, strict=False)
    return {"steps": st.step, "warmup_steps": loop.warmup, "epochs_run": st.epoch,
            "train_seconds": round(st.elapsed, 1), "train_tokens": st.tokens, "dev_loss": st.dev,
            "best_dev_loss": st.best_dev, "tokens_per_second": round(st.tokens / max(st.elapsed, 1e-9))}


class Loop:
    """What `fit` keeps between steps: the optimizer, the schedule, the progress (`st`) and its bar."""

    def __init__(self, net: nn.Module, objective: Objective, train_items: list, cfg, run_dir: Path, log):
        self.net, self.objective, self.items, self.cfg, self.log = net, objective, train_items, cfg, log
        self.rank, self.world = rank_and_world()
        self.ddp, self.master = "RANK" in os.environ and self.world > 1, self.rank == 0
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.opt = adamw(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.hidden = net.hidden_states
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel
            self.hidden = DistributedDataParallel(Hidden(net))
        self.device = next(net.parameters()).device
        if getattr(cfg, "compile", "off") != "off" and cfg.compiled(self.device):
            if isinstance(objective, LMObjective) and not self.ddp:
                objective.compile(self.hidden, cfg.batch_size)
            elif self.master:
                log(f"compile={cfg.compile}: this run's loss ({type(objective).__name__}"
                    f"{', under torchrun' if self.ddp else ''}) trains eagerly; only LMObjective in one process "
                    "compiles")
        self.bf16_autocast = autocast(self.device, cfg.bf16)
        self.lengths = [objective.length(item) for item in train_items]
        self.total = cfg.epochs * len(bucket_batches(self.lengths, cfg.batch_size, cfg.seed))
        self.warmup = warmup_for(self.total, cfg.warmup_steps)
        if self.warmup < cfg.warmup_steps and self.master:
            log(f"warmup: {self.warmup} steps, not {cfg.warmup_steps}: at most {WARMUP_SHARE:.0%} of this run's "
                f"{self.total} steps")
        self.state_file = run_dir / "state.pt"
        self.st = resume(net, self.opt, self.state_file, self.device, log if self.master else lambda item: None)
        net.train()
        self.bar = tqdm(total=self.total, initial=self.st.step, disable=not self.master, unit="step",
                        dynamic_ncols=True, desc=run_dir.name[:40])

    def save(self) -> None:
        if self.master:  # with the run's record (run.json: settings, data and model), to check a resumption
            s = {"trainable": trainable_state(self.net), "optimizer": self.opt.state_dict(),
                 "torch_rng": torch.get_rng_state(), "progress": vars(self.st), "run": run_record(self.state_file)}
            atomic_write(self.state_file, lambda t: torch.save(s, t))

    def step(self, batch: list[int]) -> None:
        """One optimizer step on the global batch `batch` (this process computes its share of it)."""
        st, cfg, world = self.st, self.cfg, self.world
        t0 = time.perf_counter()
        n_targets = self.objective.count([self.items[i] for i in batch])
        mine = batch[self.rank::world]  # this process's share of the global batch
        lr = cfg.lr * linear_schedule(st.step, self.total, self.warmup)
        for g in self.opt.param_groups:
            g["lr"] = lr
        if mine:
            with self.bf16_autocast():
                loss = self.objective.loss(self.hidden, [self.items[i] for i in mine], self.device) / n_targets * world
            if not torch.isfinite(loss):  # before the update: the saved state stays the last finite one
                raise TrainingDiverged(f"the training loss is {loss.item()} at step {st.step + 1} (lr "
                                       f"{lr:.3g}): the run diverged and is not scored; try a lower lr")
            loss.backward()
        else:  # pragma: no cover - more processes than rows in a batch
            (sum(p.sum() for p in self.params) * 0).backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        st.batch += 1
        st.step += 1
        st.tokens += sum(self.lengths[i] for i in batch)
        st.elapsed += time.perf_counter() - t0
        if self.master:
            value = loss.item() / world if mine else float("nan")
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{st.tokens / st.elapsed:,.0f}")
            if st.step % cfg.log_every == 0:
                self.log({"step": st.step, "epoch": st.epoch, "train_loss": value, "lr": lr,
                          "tokens_per_second": round(st.tokens / st.elapsed)})

    def end_epoch(self, dev_items: list) -> None:
        """The dev loss; keep the weights if it is the best so far, count the epochs without improvement."""
        st = self.st
        dl = dev_loss(self.net, self.objective, dev_items, self.cfg.batch_size * 2, self.bf16_autocast, self.device)
        st.dev.append(dl)
        if dl < st.best_dev:
            st.best_dev, st.best, st.bad_epochs = dl, trainable_state(self.net), 0
        else:
            st.bad_epochs += 1
        if self.master:
            self.log({"epoch": st.epoch, "step": st.step, "dev_loss": dl})
            self.bar.write(f"epoch {st.epoch}: dev loss {dl:.4f}")
        st.epoch += 1
        st.batch = 0


def run_record(state_file: Path) -> dict | None:
    """The record of the run that owns this training state (`run.json` beside it), or None without one."""
    try:
        return json.loads((state_file.parent / "run.json").read_text())
    except (OSError, ValueError):
        return None


def check_same_run(saved: dict | None, now: dict | None, state_file: Path) -> None:
    """Refuse to resume a training state made by another run than this one (its record edited, or files
    replaced): the settings and the model and data fingerprints must be those it was saved with."""
    if not saved or not now:  # a state saved before records were kept, or a run without a record
        return
    diffs = RunId(now.get("settings", {}), now.get("inputs", {})).differences(
        RunId(recorded_settings(saved.get("settings", {})), saved.get("inputs", {})))
    if diffs:
        raise SystemExit(f"error: {state_file} was saved by a run with other settings or files ({'; '.join(diffs)})"
                         f"; resuming would mix them: delete {state_file.parent} to start this run afresh")


def resume(net: nn.Module, opt, state_file: Path, device, log) -> Progress:
    """The training progress saved in `state_file` (restoring the weights, optimizer and RNG it holds), or a
    fresh start's; a `JsonLog` keeps only the lines logged up to that point."""
    st = Progress()
    if state_file.exists():
        try:
            saved = load_state(state_file, device)
        except CheckpointError as e:
            raise SystemExit(str(e)) from None
        check_same_run(saved.get("run"), run_record(state_file), state_file)
        net.load_state_dict(saved["trainable"], strict=False)
        opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"].cpu())
        st = Progress(**saved["progress"])
        log(f"resuming {state_file.parent.name} at epoch {st.epoch}, batch {st.batch} (step {st.step})")
    if isinstance(log, JsonLog):
        log.rewind(st)
    return st


class JsonLog:
    """A run's `log` callable: dict -> one JSON line appended to `path` (flushed); str -> printed.

    `rewind(progress)` keeps only the lines logged up to a saved training state, so that a run resumed
    from its last checkpoint does not repeat the lines it logged after it."""

    def __init__(self, path: Path, master: bool = True):
        self.path, self.master = path, master

    def __call__(self, item) -> None:
        if not self.master:
            return
        if isinstance(item, str):
            tqdm.write(item)
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(item) + "\n")

    def rewind(self, progress: Progress) -> None:
        if not self.master or not self.path.exists():
            return
        kept = [line + "\n" for line in self.path.read_text().splitlines() if logged_before(line, progress)]
        atomic_write(self.path, lambda t: Path(t).write_text("".join(kept)))


def logged_before(line: str, progress: Progress) -> bool:
    """Whether a log line belongs to the training history up to `progress` (a saved state's)."""
    try:
        item = json.loads(line)
        if "dev_loss" in item:  # logged at the end of its epoch; the state saved after it counts the epoch done
            return item["epoch"] < progress.epoch
        return item["step"] <= progress.step
    except (json.JSONDecodeError, KeyError, TypeError):  # e.g. a line cut short by a kill
        return False
