"""Adapt a base model once on unlabeled task text, then prefix-tune (or fine-tune) on top of it.

    python -m experiments.adapt --tasks e2e --tokens 600000                   # per task
    python -m experiments.adapt --tasks e2e,webnlg,sst2 --tokens 600000       # shared by the tasks
    python -m experiments.run --model=checkpoints/<name> ...                  # then train on it

Continues the base model's language-model training (`minigpt.pretraining --init-from`) on the *target side*
of the chosen tasks' training sets only: the E2E and WebNLG references and the SST-2 sentences, never
their tables, labels, dev or test splits. Each task's text is one source of the mixture (weighted by its
size, or equally with --equal-weights); its last 10% of tokens is held out for the validation loss. The
result is an ordinary checkpoint with a model card that says what it read, written to
`checkpoints/<base>-<tasks>-<tokens>` beside the shipped model unless --out names another folder (an existing
one is refused, or continued with --resume). Runs trained on it record its path as their `model`.

Domain- and task-adaptive pretraining (Gururangan et al. 2020) meets prefix-tuning: a prefix can only
steer what the frozen model can already say.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from minigpt.io import atomic_write

from . import tasks
from .provenance import cpu_description


def task_texts(task: str, data_dir: str | None = None) -> list[str]:
    """The target-side texts of a task's training split, in file order (the task's `texts`)."""
    found = tasks.get(task)
    if found.texts is None:
        raise SystemExit(f"task {task!r} has no unlabeled text to adapt on; adapt on {', '.join(adaptable())}")
    return found.texts(data_dir)


def adaptable() -> list[str]:
    return [name for name, task in tasks.load().items() if task.texts is not None]


def export_texts(task: str, folder: Path, data_dir: str | None = None) -> Path:
    """Write the task's training texts as JSONL (one document per text) and return the file."""
    path = folder / f"{task}-train-targets.jsonl"
    lines = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in task_texts(task, data_dir))
    if not path.exists() or path.read_text(encoding="utf-8") != lines:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda t: Path(t).write_text(lines, encoding="utf-8"))
    return path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", required=True, help="comma-separated: " + ", ".join(adaptable()))
    p.add_argument("--model", default="checkpoints/minigpt-gutenberg", help="the base model to adapt")
    p.add_argument("--tokens", type=int, default=600_000, help="adaptation budget in training tokens")
    p.add_argument("--out", default=None, help="output folder (default: checkpoints/<base>-<tasks>-<tokens>)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--block-size", type=int, default=128, help="window length (the texts are short)")
    p.add_argument("--equal-weights", action="store_true", help="draw every task equally often, not by size")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=".cache/adapt")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-bf16", action="store_true", help="train in fp32")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not args.tasks or len(set(args.tasks)) != len(args.tasks):
        raise SystemExit(f"--tasks must name distinct tasks, got {args.tasks}")
    for name, v in (("--tokens", args.tokens), ("--batch-size", args.batch_size), ("--block-size", args.block_size)):
        if v < 1:
            raise SystemExit(f"{name} must be >= 1, got {v}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise SystemExit(f"--lr must be a finite number > 0, got {args.lr}")
    return args


def default_out(args) -> Path:
    return Path("checkpoints") / f"{Path(args.model).name}-{'+'.join(args.tasks)}-{args.tokens // 1000}k"


def pretrain_argv(args, out: Path, sources: dict[str, Path]) -> list[str]:
    steps = max(1, math.ceil(args.tokens / (args.batch_size * args.block_size)))
    argv = ["--init-from", args.model, "--out", str(out), "--lr", str(args.lr), "--batch-size", str(args.batch_size),
            "--block-size", str(args.block_size), "--max-steps", str(steps), "--warmup-steps", str(max(1, steps // 10)),
            "--eval-interval", str(max(1, steps // 10)), "--eval-windows", "50",
            "--ckpt-interval", str(max(1, steps // 5)),
            "--cache-dir", str(Path(args.cache_dir) / "tokens"), "--seed", str(args.seed)]
    for task, path in sources.items():
        argv += ["--source", f"{task}={path}" + (":1" if args.equal_weights else "")]
    if args.no_bf16:
        argv.append("--no-bf16")
    if args.resume:
        argv.append("--resume")
    return argv


def main(argv=None) -> Path:
    cli = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(cli)
    from minigpt.pretraining.model_card import main as write_card
    from minigpt.pretraining import main as pretrain

    out = Path(args.out) if args.out else default_out(args)
    sources = {t: export_texts(t, Path(args.cache_dir) / "text", args.data_dir) for t in args.tasks}
    train_argv = pretrain_argv(args, out, sources)
    result = pretrain(train_argv)
    if not result:  # stopped early (a resumable state is saved)
        return out
    notes = (f"**Task adaptation.** `{args.model}` trained on for {result['tokens_seen']:,} tokens on the training "
             f"targets of {', '.join(args.tasks)} (the texts only: no tables, labels, dev or test data), each task "
             "one source; each source's last 10% of tokens is held out as its validation text. Made by "
             f"`python -m experiments.adapt {' '.join(cli)}`.")
    write_card([str(out), "--command", "python -m minigpt.pretraining " + " ".join(train_argv), "--hardware",
                result["gpu"] or cpu_description(), "--notes", notes])
    record = {"base": args.model, "tasks": args.tasks, "tokens": args.tokens, "sources": result["sources"],
              "train_seconds": result["train_seconds"], "tokens_seen": result["tokens_seen"]}
    atomic_write(out / "adaptation.json", lambda t: Path(t).write_text(json.dumps(record, indent=2) + "\n"))
    print(f"adapted model: {out} (use it with --model={out})")
    return out


if __name__ == "__main__":
    main()
