"""One experiment, end to end: train, decode the test set, score, and write the run's result files.

    python -m experiments.run [diff.json ...] [--key=value ...]      (see configs/defaults.json)
    make experiment LEN=10 DEPTH=all REPARAM=mlp SEED=0

Writes `<results_dir>/<run>/{config.json, metrics.json, predictions.txt, log.jsonl}` (predictions: one
line per test table, in the order tables first appear), keeps resumable training state in
`<runs_dir>/<run>/`, and prints a short table. A run whose metrics.json exists is not run again
(delete the folder, or pass --name=..., to rerun).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from minigpt import EOT, GPT, load_tokenizer
from minigpt.weights import CheckpointError, atomic_write
from prefix import PrefixConfig, PrefixTuner

from .config import ExperimentConfig, parse_cli
from .data import encode_pair, encode_source
from .decode import decode
from .metrics import corpus_metrics
from .tasks import task_splits
from .train import fit, write_jsonl_logger


def load_base(cfg: ExperimentConfig) -> GPT:
    """The pretrained model (or, with random_init, a freshly initialized one of the same shape)."""
    try:
        model = GPT.from_pretrained(cfg.model)
    except CheckpointError as e:
        raise SystemExit(f"MODEL={cfg.model!r} cannot be loaded: {e}") from None
    if cfg.random_init:
        torch.manual_seed(cfg.seed)
        model = GPT(model.config)
    return model.to(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def build_net(cfg: ExperimentConfig, base: GPT, enc):
    """What gets trained: a PrefixTuner around the frozen base, or the base itself (fine-tuning)."""
    if cfg.method == "finetune":
        return base.requires_grad_(True)
    pcfg = PrefixConfig(num_virtual_tokens=cfg.prefix_len, prefix_projection=cfg.reparam == "mlp",
                        encoder_hidden_size=cfg.encoder_hidden_size, depth=cfg.depth, init=cfg.init,
                        init_text=cfg.init_text if cfg.init == "text" else None,
                        prefix_dropout=cfg.prefix_dropout)
    return PrefixTuner(base, pcfg, tokenizer=enc)


def check_lengths(cfg: ExperimentConfig, base: GPT, train_pairs, test_sources) -> None:
    """Refuse settings whose sequences would not fit the context once the prefix is added."""
    P = cfg.prefix_len if cfg.method == "prefix" else 0
    ctx = base.config.n_positions
    longest_train = max(len(ids) for ids, _ in train_pairs)
    longest_test = max(len(s) for s in test_sources) + cfg.max_new_tokens
    for what, n in (("training example", longest_train), ("test source + max_new_tokens", longest_test)):
        if P + n > ctx:
            raise SystemExit(f"LEN={P} is too long: the longest {what} has {n} tokens, and {P} + {n} exceeds "
                             f"the model's context of {ctx} positions; use LEN <= {ctx - n}")


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, "threads": torch.get_num_threads()}


def run(cfg: ExperimentConfig) -> dict:
    out = Path(cfg.results_dir) / cfg.run_name
    if (out / "metrics.json").exists():
        print(f"{cfg.run_name}: already done ({out / 'metrics.json'})")
        return json.loads((out / "metrics.json").read_text())
    run_dir = Path(cfg.runs_dir) / cfg.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    enc = load_tokenizer()
    base = load_base(cfg)
    try:
        train, dev, test, subsets = task_splits(cfg.task, cfg.data_dir, cfg.max_train, cfg.max_dev, cfg.max_test)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    train_pairs = [encode_pair(enc, table, text) for table, text in train]
    dev_pairs = [encode_pair(enc, table, text) for table, text in dev]
    test_sources = [encode_source(enc, table) for table, _ in test]
    check_lengths(cfg, base, train_pairs, test_sources)
    net = build_net(cfg, base, enc)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    total = sum(p.numel() for p in base.parameters())
    print(f"{cfg.run_name}: {len(train_pairs):,} training pairs, {len(test):,} test tables; "
          f"trainable params {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)")
    master = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    log = write_jsonl_logger(run_dir / "log.jsonl", master)
    summary = fit(net, base.lm_head, train_pairs, dev_pairs, cfg, run_dir, pad_id=EOT, log=log)
    if not master:  # under torchrun, process 0 decodes and writes the results
        return summary
    t0 = time.perf_counter()
    predictions = decode(net, enc, test_sources, num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens,
                         batch_size=cfg.decode_batch_size, bf16=cfg.bf16, desc=f"decoding {cfg.task} test")
    decode_seconds = time.perf_counter() - t0
    scores = corpus_metrics(predictions, [refs for _, refs in test])
    for name, idx in subsets.items():  # e.g. WebNLG seen / unseen categories
        if idx:
            sub = corpus_metrics([predictions[i] for i in idx], [test[i][1] for i in idx])
            scores.update({f"{k}_{name}": v for k, v in sub.items()})
    metrics = {**scores, "trainable_params": trainable, "total_params": total, **summary,
               "decode_seconds": round(decode_seconds, 1), "split": "test", "n_test": len(test),
               "n_train": len(train_pairs), "seed": cfg.seed, "commit": git_commit(), "machine": machine(),
               "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if cfg.method == "prefix":
        net.materialize().save(run_dir / "prefix", base_model_name_or_path=cfg.model)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.json", lambda t: Path(t).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n"))
    atomic_write(out / "predictions.txt", lambda t: Path(t).write_text("".join(p + "\n" for p in predictions)))
    log_text = (run_dir / "log.jsonl").read_text() if (run_dir / "log.jsonl").exists() else ""
    atomic_write(out / "log.jsonl", lambda t: Path(t).write_text(log_text))
    atomic_write(out / "metrics.json", lambda t: Path(t).write_text(json.dumps(metrics, indent=2) + "\n"))
    print_table([(cfg.run_name, metrics)])
    return metrics


def print_table(rows: list[tuple[str, dict]]) -> None:
    cols = [("bleu", "BLEU", "{:.1f}"), ("nist", "NIST", "{:.2f}"), ("meteor", "METEOR", "{:.1f}"),
            ("rouge_l", "ROUGE-L", "{:.1f}"), ("cider", "CIDEr", "{:.2f}"),
            ("trainable_params", "trainable", "{:,}"), ("train_seconds", "train s", "{:.0f}")]
    width = max(len(name) for name, _ in rows)
    print(f"{'run':<{width}}  " + "  ".join(f"{h:>9}" for _, h, _ in cols))
    for name, m in rows:
        cells = [fmt.format(m[k]) if m.get(k) is not None else "n/a" for k, _, fmt in cols]
        print(f"{name:<{width}}  " + "  ".join(f"{c:>9}" for c in cells))


def main(argv: list[str] | None = None) -> dict:
    try:
        cfg = parse_cli(sys.argv[1:] if argv is None else argv)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    ddp = "RANK" in os.environ
    if ddp:
        torch.distributed.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    try:
        return run(cfg)
    finally:
        if ddp:
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
