"""One experiment, end to end: train, decode the test set, score, and write the run's result files.

    python -m experiments.run [diff.json ...] [--key=value ...]      (see configs/defaults.json)
    make experiment LEN=10 DEPTH=all REPARAM=mlp SEED=0

Writes `<results_dir>/<run>/{config.json, metrics.json, predictions.txt, log.jsonl}` (predictions: one
line per test table, in the order tables first appear), keeps resumable training state in
`<runs_dir>/<run>/`, and prints a short table. A run with the same settings, model and data files
(`runid.py`) that has finished is not run again, and one that was interrupted resumes; a folder under the
run's name holding a run with other settings is refused (pass --name=..., or delete both folders).
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import torch

from minigpt import EOT, GPT, GPTConfig, load_tokenizer
from minigpt import fast
from minigpt.fast.allocator import keep_freed_memory
from minigpt.runtime import rank_and_world
from minigpt.io import CheckpointError, ProcessLock
from minigpt.weights import load_config, local_checkpoint, read_config
from prefix.parts import base_parameter_count

from .config import REFERENCE, ExperimentConfig, parse_cli
from .classify import LABEL_WORDS, ClassificationObjective, Classifier, accuracy_f1, encode_example
from .data import DataError, encode_pair, encode_source
from .decode import decode
from .metrics import corpus_metrics
from .provenance import commit, machine
from .results import check_writable, write_results
from .runid import claim_run_dir, finished_metrics, identify, reference_run
from . import tasks
from .tasks import task_splits
from .methods import method_for
from .train import JsonLog, LMObjective, TrainingDiverged, fit


class Trained(NamedTuple):
    """What a task's training and scoring gives back to `run`."""
    net: torch.nn.Module  # what was trained (a PrefixTuner, the GPT, or a Classifier around either)
    scores: dict  # test metrics
    predictions: list[str]  # one line per test item
    n_train: int
    n_test: int
    summary: dict  # fit's summary (steps, seconds, tokens, dev losses) and decode seconds
    scored_bf16: bool = False  # the test predictions were made under bf16 autocast (decoding with bf16 on)


class BaseModel(NamedTuple):
    """A run's base model, resolved once and passed along: its local folder, and its shape read from it (both
    None for a hub id, until it is downloaded and loaded)."""
    folder: Path | None
    config: GPTConfig | None


def resolve_base(cfg: ExperimentConfig) -> BaseModel:
    """The base model's folder and shape, its depth checked against them before anything heavy loads."""
    folder = local_checkpoint(cfg.model)
    try:
        config = read_config(folder) if folder is not None else None
    except CheckpointError as e:
        raise SystemExit(f"MODEL={cfg.model!r} cannot be loaded: {e}") from None
    check_depth(cfg, config.n_layer if config is not None else None)
    return BaseModel(folder, config)


def load_base(cfg: ExperimentConfig, resolved: BaseModel | None = None) -> GPT:
    """The pretrained model (or, with random_init, a freshly initialized one of its shape: its weights are never
    read). A hub id's depth is checked here, once the model is there."""
    resolved = resolved or resolve_base(cfg)
    try:
        if cfg.random_init:
            torch.manual_seed(cfg.seed)
            model = GPT(resolved.config or load_config(cfg.model))
        else:
            model = GPT.from_pretrained(resolved.folder or cfg.model)
    except CheckpointError as e:
        raise SystemExit(f"MODEL={cfg.model!r} cannot be loaded: {e}") from None
    if resolved.config is None:
        check_depth(cfg, model.config.n_layer)
    # a frozen base needs no fp32 copy: bf16 weights make every matmul cheaper (the prefix stays fp32)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # the speed layer (minigpt/fast): the same model, faster on CPU; plain PyTorch where it does not apply
    return fast.enable(model.to(device, dtype=getattr(torch, cfg.model_dtype)))


def build_net(cfg: ExperimentConfig, base: GPT, enc):
    """What gets trained, as the run's method builds it (experiments/methods/): a PrefixTuner around the frozen
    base, the base itself (fine-tuning), ..."""
    return method_for(cfg).build(cfg, base, enc)


def check_depth(cfg: ExperimentConfig, n_layer: int | None) -> None:
    """Refuse a DEPTH list naming layers the model does not have."""
    if cfg.method == "prefix" and isinstance(cfg.depth, list) and n_layer is not None and max(cfg.depth) >= n_layer:
        raise SystemExit(f"error: DEPTH={cfg.depth} names layers that {cfg.model} does not have: it has {n_layer} "
                         f"layers (0..{n_layer - 1})")


def check_lengths(cfg: ExperimentConfig, base: GPT, train_lengths: list[int], test_lengths: list[int]) -> None:
    """Refuse settings whose sequences would not fit the context once the prefix is added."""
    P = method_for(cfg).positions(cfg)
    ctx = base.config.n_positions
    for what, n in (("training example", max(train_lengths)), ("test input (+ max_new_tokens)", max(test_lengths))):
        if P + n > ctx:
            raise SystemExit(f"LEN={P} is too long: the longest {what} has {n} tokens, and {P} + {n} exceeds "
                             f"the model's context of {ctx} positions; use LEN <= {ctx - n}")


def check_device(device: str | None) -> None:
    """Refuse a device this machine's PyTorch cannot use, before anything loads."""
    kind = (device or "cpu").split(":")[0]
    usable = {"cpu": True, "cuda": torch.cuda.is_available(),
              "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not usable.get(kind, False):
        why = "this PyTorch build has no CUDA" if kind == "cuda" and torch.version.cuda is None else "none is found"
        raise SystemExit(f"error: --device={device}: {kind} is not available here ({why}); use --device=cpu, or "
                         "leave device unset (null) to use a GPU when there is one")
    if kind == "cuda" and ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise SystemExit(f"error: --device={device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def run(cfg: ExperimentConfig) -> dict:
    check_device(cfg.device)
    run_dir = Path(cfg.runs_dir) / cfg.run_name
    commit()  # read as the run starts: the code it runs, even if the checkout moves on while it trains
    resolved = resolve_base(cfg)  # the base's folder and shape, read once; the depth checked against them
    try:
        this = identify(cfg, resolved.folder)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    master = rank_and_world()[0] == 0
    if master:
        check_writable(Path(cfg.runs_dir), "the training state", "runs_dir")
    # one process per run: a second start of the same run is refused while the first lives (minigpt.io)
    with ProcessLock(run_dir / "lock", f"the run {cfg.run_name}") if master else nullcontext():
        return run_locked(cfg, this, resolved, master)


def run_locked(cfg: ExperimentConfig, this, resolved: BaseModel, master: bool) -> dict:
    """`run`, holding the run's lock: print a finished run, else train (or resume), decode, score and write."""
    out, run_dir = Path(cfg.results_dir) / cfg.run_name, Path(cfg.runs_dir) / cfg.run_name
    done = finished_metrics(out, this, cfg)
    if done is not None:
        print(f"{cfg.run_name}: already done with these settings, model and data ({out / 'metrics.json'}, commit "
              f"{done.get('commit')}); to train it again, give it another name (ARGS=--name=...) or delete {out} "
              f"and {run_dir}")
        compare_with_reference(cfg, this, done)
        return done
    if master:
        check_writable(Path(cfg.results_dir), "results", "results_dir")  # not a traceback after hours of training
        claim_run_dir(run_dir, this, cfg)
    torch.manual_seed(cfg.seed)
    enc = load_tokenizer(bpe_dir(cfg))
    base = load_base(cfg, resolved)
    log = JsonLog(run_dir / "log.jsonl", master)
    try:
        kind = tasks.get(cfg.task).kind
        job = (classification if kind == "classification" else generation)(cfg, base, enc, run_dir, log)
    except (FileNotFoundError, DataError, TrainingDiverged) as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted: rerun the same command to resume from {run_dir / 'state.pt'}") from None
    if job is None:  # under torchrun, process 0 evaluates and writes the results
        return {}
    trainable, total = param_counts(job.net, base)
    # what a deployed run stores (a prefix: the table its MLP computes), saved in run_dir by the method
    kept = method_for(cfg).keep(job.net, cfg, run_dir, job.scored_bf16)
    metrics = {**job.scores, "trainable_params": trainable, "kept_params": kept, "total_params": total,
               **job.summary, "split": "test", "n_test": job.n_test, "n_train": job.n_train, "seed": cfg.seed,
               "commit": commit(), "machine": machine(), "inputs": this.inputs,
               "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        write_results(out, cfg, job.predictions, run_dir / "log.jsonl", metrics)
    except OSError as e:  # the disk filled up while the run trained: its training state is kept
        raise SystemExit(f"error: the run finished but its results cannot be written to {out} ({e.strerror or e}); "
                         f"free some space and rerun the same command: it resumes from {run_dir / 'state.pt'} and "
                         "decodes again") from None
    compare_with_reference(cfg, this, metrics)
    print(f"results: {out}/ (metrics.json, predictions.txt, config.json, log.jsonl); {where(metrics)}")
    return metrics


def where(m: dict) -> str:
    """'trained 410 s, decoded 39 s on a 2-core CPU (2 threads)': how long a run took, and on what."""
    mach = m.get("machine", {})
    cpu = f"{mach.get('cpus', '?')} cores of {mach.get('cpu') or 'a CPU'} ({mach.get('threads', '?')} threads)"
    on = mach.get("gpu") or cpu
    took = f"trained {m['train_seconds']:.0f} s" if m.get("train_seconds") is not None else "trained"
    decoded = f", decoded {m['decode_seconds']:.0f} s" if m.get("decode_seconds") is not None else ""
    return f"{took}{decoded} on {on}"


def compare_with_reference(cfg: ExperimentConfig, this, metrics: dict) -> None:
    """Print the run's scores, and beside them the shipped reference run with the same settings, model and
    data (studies/reference/results/), so that a user sees whether they reproduced it."""
    ref = reference_run(this, skip=Path(cfg.results_dir) / cfg.run_name)
    if ref is None:
        print_table([(cfg.run_name, metrics)])
        print(f"(no shipped run in {REFERENCE}/ has these settings, model and data to compare with)")
        return
    folder, m = ref
    print_table([(f"this run ({metrics.get('commit', '?')})", metrics), (f"reference ({m.get('commit', '?')})", m)])
    print(f"reference: {folder}/, {where(m)}")


def bpe_dir(cfg: ExperimentConfig) -> Path | None:
    """`<data_dir>/gpt2` when --data_dir holds the GPT-2 BPE files there (else the usual search)."""
    folder = Path(cfg.data_dir).expanduser() / "gpt2" if cfg.data_dir else None
    return folder if folder is not None and (folder / "vocab.bpe").is_file() else None


def param_counts(net, base) -> tuple[int, int]:
    """(trainable parameters of what is trained, parameters of the base model: its own, not what a method adds
    to it, such as LoRA updates or adapters)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad), base_parameter_count(base)


def announce(cfg, net, base, n_train: int, n_test: int, sizes: dict[str, dict[str, int]]) -> None:
    """Print what the run trains and scores: the data files' counts, the limits' share, the parameters."""
    files = "; ".join(f"{split} " + ", ".join(f"{n:,} {unit}" for unit, n in counts.items())
                      for split, counts in sizes.items())
    print(f"{cfg.task} data files: {files}")
    trainable, total = param_counts(net, base)
    print(f"{cfg.run_name}: {n_train:,} training examples, {n_test:,} test items; "
          f"trainable params {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)")


def generation(cfg, base, enc, run_dir, log):
    """Table-to-text: train on (table, text) pairs, beam-decode the test tables, score with the E2E metrics."""
    train, dev, test, subsets, sizes = task_splits(cfg.task, cfg.data_dir, cfg.max_train, cfg.max_dev, cfg.max_test,
                                                   cfg.train_seed)
    train_pairs = [encode_pair(enc, table, text) for table, text in train]
    dev_pairs = [encode_pair(enc, table, text) for table, text in dev]
    test_sources = [encode_source(enc, table) for table, _ in test]
    check_lengths(cfg, base, [len(ids) for ids, _ in train_pairs],
                  [len(s) + cfg.max_new_tokens for s in test_sources])
    net = build_net(cfg, base, enc)
    announce(cfg, net, base, len(train_pairs), len(test), sizes)
    method = method_for(cfg)
    objective = method.objective(net, base) if method.objective else LMObjective(base, EOT)
    summary = fit(net, objective, train_pairs, dev_pairs, cfg, run_dir, log=log)
    if rank_and_world()[0] != 0:
        return None
    t0 = time.perf_counter()
    predictions = decode(net, enc, test_sources, num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens,
                         batch_size=cfg.decode_batch_size, bf16=cfg.bf16, desc=f"decoding {cfg.task} test",
                         decoder="compiled" if cfg.compiled(next(net.parameters()).device) else "eager")
    summary["decode_seconds"] = round(time.perf_counter() - t0, 1)
    scores = corpus_metrics(predictions, [refs for _, refs in test])
    task = tasks.get(cfg.task)
    if task.score:  # e.g. E2E's table values left out or added (experiments/slots.py)
        scores.update(task.score(predictions, test, cfg.data_dir))
    for name, idx in subsets.items():  # e.g. WebNLG seen / unseen categories
        if idx:
            sub = corpus_metrics([predictions[i] for i in idx], [test[i][1] for i in idx])
            scores.update({f"{k}_{name}": v for k, v in sub.items()})
    return Trained(net, scores, predictions, len(train_pairs), len(test), summary, scored_bf16=cfg.bf16)


def classification(cfg, base, enc, run_dir, log):
    """SST-2: train the prefix (and a linear head, if chosen) on the template, score dev and test."""
    s = task_splits(cfg.task, cfg.data_dir, cfg.max_train, cfg.max_dev, cfg.max_test, cfg.train_seed)
    sizes = s.sizes
    items = {name: [(encode_example(enc, text), label) for label, text in rows]
             for name, rows in (("train", s.train), ("dev", s.dev), ("test", s.test))}
    check_lengths(cfg, base, [len(ids) for ids, _ in items["train"]],
                  [len(ids) for split in ("dev", "test") for ids, _ in items[split]])
    net = Classifier(build_net(cfg, base, enc), base.lm_head, cfg.head, enc, base.config.n_embd)
    announce(cfg, net, base, len(items["train"]), len(items["test"]), sizes)
    # dev loss for early stopping uses at most max_dev examples; accuracy is reported on the whole dev split
    summary = fit(net, ClassificationObjective(net), items["train"], items["dev"], cfg, run_dir, log=log)
    if rank_and_world()[0] != 0:
        return None
    scores = {}
    for split in ("dev", "test"):
        probs = net.predict([ids for ids, _ in items[split]])
        result = accuracy_f1(probs.argmax(-1).tolist(), [y for _, y in items[split]])
        scores.update(result if split == "test" else {f"dev_{k}": v for k, v in result.items()})
    predictions = [f"{LABEL_WORDS[int(p.argmax())].strip()}\t{float(p[1]):.4f}" for p in probs]
    return Trained(net, scores, predictions, len(items["train"]), len(items["test"]), summary)


def print_table(rows: list[tuple[str, dict]]) -> None:
    generation = [("bleu", "BLEU", "{:.1f}"), ("nist", "NIST", "{:.2f}"), ("meteor", "METEOR", "{:.1f}"),
                  ("rouge_l", "ROUGE-L", "{:.1f}"), ("cider", "CIDEr", "{:.2f}")]
    classification = [("dev_accuracy", "dev acc", "{:.1f}"), ("accuracy", "test acc", "{:.1f}"),
                      ("macro_f1", "test F1", "{:.1f}")]
    cols = [*(classification if "accuracy" in rows[0][1] else generation),
            ("trainable_params", "trainable", "{:,}"), ("train_seconds", "train s", "{:.0f}")]
    width = max(len(name) for name, _ in rows)
    print(f"{'run':<{width}}  " + "  ".join(f"{h:>9}" for _, h, _ in cols))
    for name, m in rows:
        cells = [fmt.format(m[k]) if m.get(k) is not None else "n/a" for k, _, fmt in cols]
        print(f"{name:<{width}}  " + "  ".join(f"{c:>9}" for c in cells))


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_cli(sys.argv[1:] if argv is None else argv)
    ddp = "RANK" in os.environ
    if ddp:
        torch.distributed.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    try:
        return run(cfg)
    finally:
        if ddp:
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    keep_freed_memory()  # a training process: reuse freed memory across steps (minigpt/fast/allocator.py)
    main()
