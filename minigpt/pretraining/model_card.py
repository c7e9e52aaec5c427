"""Write a pretrained checkpoint's model card: metrics, loss curve, fixed-slice val loss, samples.

    python -m minigpt.pretraining.model_card checkpoints/minigpt-gutenberg --command "..." --hardware "..."

Reads `pretrain_metrics.json` and `pretrain_log.jsonl` from the checkpoint directory (written by
`minigpt.pretraining`) and writes `loss_curve.png`, `model_card.json` and `README.md` beside them.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..datadir import find_data  # noqa: E402
from ..io import atomic_write  # noqa: E402
from ..model import GPT  # noqa: E402
from ..tokenizer import load_tokenizer  # noqa: E402
from .train import slice_loss  # noqa: E402

PROMPTS = ["It was a dark and stormy night", "The little girl looked at the", "Holmes took the letter and"]


def plot_loss(log: list[dict], unigram: float, out: Path) -> None:
    train = [(r["tokens"], r["train_loss"]) for r in log if "train_loss" in r]
    val = [r for r in log if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([t / 1e6 for t, _ in train], [v for _, v in train], lw=0.8, alpha=0.7, label="train (batch)")
    by_source = val[-1].get("val_loss_by_source") if val else None
    if by_source and len(by_source) > 1:  # a mixture: each source's held-out loss
        for name in by_source:
            ax.plot([r["tokens"] / 1e6 for r in val], [r["val_loss_by_source"][name] for r in val], "o-", ms=3,
                    label=f"validation: {name}")
    ax.plot([r["tokens"] / 1e6 for r in val], [r["val_loss"] for r in val], "o-",
            label="validation (weighted mean)" if by_source and len(by_source) > 1 else "validation (held-out text)")
    ax.axhline(unigram, ls="--", c="gray", label=f"unigram baseline ({unigram:.2f})")
    ax.set(xlabel="tokens seen (millions)", ylabel="loss (nats/token)", ylim=(2.5, 11), title="Pretraining loss")
    ax.legend()
    fig.tight_layout()
    atomic_write(out, lambda t: fig.savefig(t, dpi=120, format="png"))
    plt.close(fig)


def samples(model: GPT) -> list[dict]:
    enc = load_tokenizer()
    out = []
    for i, p in enumerate(PROMPTS):
        x = torch.tensor([enc.encode_ordinary(p)])
        greedy = model.generate(x, 40)
        sampled = model.generate(x, 40, do_sample=True, temperature=0.8, top_k=50,
                                 generator=torch.Generator().manual_seed(i))
        out.append({"prompt": p, "greedy": enc.decode(greedy[0, x.shape[1]:].tolist()),
                    "sampled (T=0.8, top-k 50, seed %d)" % i: enc.decode(sampled[0, x.shape[1]:].tolist())})
    return out


def data_lines(m: dict) -> list[str]:
    sources = m.get("sources")
    if not sources:  # a run from before mixtures: one corpus of books
        return [f"`corpus/gutenberg` (426 public-domain English books): {m['train_tokens']:,} training tokens "
                f"from the `train/` books; validation on the {m['val_tokens']:,} tokens of the 13 held-out `val/` "
                "books (split by book, `index.tsv`)."]
    lines = ["A mixture of sources; each training row is drawn from a source with the probability given.", "",
             "| source | path | weight | training tokens | files | validation tokens |", "|---|---|---|---|---|---|"]
    lines += [f"| {d['name']} | `{d['path']}` | {d['weight']:.3f} | {d['train_tokens']:,} | {d['train_files']} | "
              f"{d['val_tokens']:,} |" for d in sources]
    return lines


def result_lines(m: dict, card: dict, c: dict) -> list[str]:
    lines = ["| | loss (nats/token) | perplexity | unigram baseline |", "|---|---|---|---|"]
    for d in m.get("sources") or []:
        lines.append(f"| validation: {d['name']} ({m['config']['eval_windows']} windows of "
                     f"{m['config']['block_size']} tokens) | {d['val_loss']:.3f} | {math.exp(d['val_loss']):.1f} | "
                     f"{d['unigram_val_loss']:.3f} |")
    what = "weighted mean over sources" if m.get("sources") else f"validation books ({m['eval_windows']} windows)"
    lines.append(f"| {what} | {m['val_loss']:.3f} | {m['val_ppl']:.1f} | {m['unigram_val_loss']:.3f} |")
    if "val_slice_loss" in card:
        lines.append(f"| fixed slice of the Gutenberg validation books (`val_slice_loss` in `model_card.json`, "
                     f"checked by the tests) | {card['val_slice_loss']:.3f} | "
                     f"{math.exp(card['val_slice_loss']):.1f} | |")
    lines.append("")
    lines.append("Unigram baseline: add-one smoothed counts of the source's training tokens, scored on all of its "
                 "validation tokens.")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--command", required=True, help="the pretraining command that produced it")
    p.add_argument("--hardware", required=True)
    p.add_argument("--corpus", default=None)
    p.add_argument("--notes", default="")
    args = p.parse_args(argv)
    ckpt = Path(args.checkpoint)
    m = json.loads((ckpt / "pretrain_metrics.json").read_text())
    log = [json.loads(line) for line in (ckpt / "pretrain_log.jsonl").read_text().splitlines()]
    corpus = Path(args.corpus) if args.corpus else find_data("corpus/gutenberg")
    model = GPT.from_pretrained(ckpt).eval()
    card = {"samples": samples(model)}
    if corpus is not None and corpus.exists():
        card = {"val_slice_loss": slice_loss(model, corpus), "val_slice": "first 20,000 characters of the first 4 "
                "val books of corpus/gutenberg (sorted by file name), 256-token windows, fp32 "
                "(minigpt.pretraining.slice_loss)", **card}
    atomic_write(ckpt / "model_card.json", lambda t: Path(t).write_text(json.dumps(card, indent=2) + "\n"))
    plot_loss(log, m["unigram_val_loss"], ckpt / "loss_curve.png")
    c = json.loads((ckpt / "config.json").read_text())
    size_mb = (ckpt / "model.safetensors").stat().st_size / 1e6
    lines = [
        f"# {ckpt.name}", "",
        f"A GPT-2-architecture model ({m['parameters'] / 1e6:.1f}M parameters: {c['n_layer']} layers, "
        f"{c['n_head']} heads, {c['n_embd']} wide, {c['n_positions']} positions, GPT-2's 50,257-token BPE; "
        f"{m.get('non_embedding_parameters', 0) / 1e6:.1f}M outside the embeddings) pretrained by this project "
        "so that everything runs offline. It loads with "
        "`minigpt.GPT.from_pretrained` and with `transformers.GPT2LMHeadModel.from_pretrained`.", "",
        "## Data", "", *data_lines(m), "",
        "## Training", "",
        f"- command: `{args.command}`",
        *([f"- initialized from `{m['config']['init_from']}` (continued pretraining; the counts below are this "
           "run's alone)"] if m.get("config", {}).get("init_from") else []),
        f"- hardware: {args.hardware}",
        f"- steps: {m['steps']:,}; tokens seen: {m['tokens_seen']:,} (~{m['tokens_seen'] / m['train_tokens']:.1f} "
        "epochs)",
        f"- wall time (training only): {m['train_seconds']:.0f} s; throughput {m['tokens_per_second']:,} tokens/s",
        f"- weights: {c.get('torch_dtype', 'float32')}, {size_mb:.1f} MB", ""]
    if args.notes:
        lines += [args.notes, ""]
    lines += [
        "## Results", "", *result_lines(m, card, c), "",
        "![loss curve](loss_curve.png)", "",
        "## Samples", ""]
    for s in card["samples"]:
        lines.append(f"**{s['prompt']}**")
        for k, v in s.items():
            if k != "prompt":
                lines.append(f"- {k}: {v!r}")
        lines.append("")
    atomic_write(ckpt / "README.md", lambda t: Path(t).write_text("\n".join(lines)))
    print((ckpt / "README.md").read_text())


if __name__ == "__main__":
    main()
