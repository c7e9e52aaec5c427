"""The paper's Table 1 in a study of baselines (studies/table1): every method's E2E test scores at its dev-chosen lr,
beside the paper's rows and the LoRA paper's, and `pareto.png`, test BLEU against the share of the model's
parameters each method trains (log scale), the paper's points and the template floor drawn in. Read from the
study's result files alone (`python -m experiments.plans report table1`)."""
from __future__ import annotations

import statistics
from pathlib import Path

from minigpt.io import atomic_write

from ..methods import label
from ..paper import FLOORS, LORA_PAPER, LORA_PAPER_TOTAL, TABLE1
from ..plans.collect import unfinished_grid
from ..plans.spec import arm

METRICS = (("bleu", "BLEU", "{:.1f}"), ("nist", "NIST", "{:.2f}"), ("meteor", "METEOR", "{:.1f}"),
           ("rouge_l", "ROUGE-L", "{:.1f}"), ("cider", "CIDEr", "{:.2f}"), ("slot_error_rate", "slot errors (%)", "{:.1f}"))
FIGURE = "pareto.png"


def runs_of(result: dict, row: dict) -> list[dict]:
    """The finished runs behind a table row: its model, task and arm, at its chosen lr, its seeds."""
    return [r for r in result["runs"] if (r["size"], r["task"], r["arm"], r["lr"]) ==
            (row["size"], row["task"], arm(row), row["chosen_lr"]) and r["seed"] in row["seeds"]]


def cell(values: list, fmt: str) -> str:
    """'mean ± sd' of the recorded values ('–' if none was recorded)."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    spread = f" ± {fmt.format(statistics.stdev(values))}" if len(values) > 1 else ""
    return fmt.format(statistics.mean(values)) + spread


def share(row: dict, runs: list[dict], key: str) -> float | None:
    """What the arm trains or keeps (`key`), as % of the base model's parameters."""
    total = next((r["metrics"].get("total_params") for r in runs if r["metrics"].get("total_params")), None)
    return 100 * row[key] / total if total and row.get(key) is not None else None


def table(result: dict, rows: list[dict]) -> list[str]:
    """One line per arm: the five E2E metrics and slot errors (mean ± sd over seeds), its share of parameters
    trained and kept, the epoch of each seed's best dev loss and the seconds a run took (training + decoding)."""
    lines = ["| model | method | lr | n | " + " | ".join(h for _, h, _ in METRICS) +
             " | % trained | % kept | best epoch (each seed) | s per run |", "|" + "---|" * (8 + len(METRICS))]
    for row in rows:
        runs = runs_of(result, row)
        scores = [cell([r.get(k, r["metrics"].get(k)) for r in runs], fmt) for k, _, fmt in METRICS]
        trained, kept = (share(row, runs, k) for k in ("trainable_params", "kept_params"))
        epochs = ", ".join(str(e) if e else "–" for e in row.get("best_epochs", []))
        seconds = cell([r["metrics"].get("train_seconds", 0) + (r["metrics"].get("decode_seconds") or 0)
                        for r in runs], "{:.0f}")
        so_far = f" (so far: {unfinished_grid(row)})" if unfinished_grid(row) else ""
        lines.append(f"| {row['size']} | {label(row['method'])} ({arm(row)}) | {row['chosen_lr']:g}{so_far} | {row['n']} | "
                     + " | ".join(scores) + f" | {pct(trained)} | {pct(kept)} | {epochs} | {seconds} |")
    return lines


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def papers() -> list[str]:
    """The paper's rows (all five metrics) and the LoRA paper's (BLEU), GPT-2 medium."""
    lines = ["", "The papers, GPT-2 medium (345M) on E2E, 5 epochs (Li & Liang 2021, ACL version, Table 1: its "
             "fine-tuning, adapter 0.1% and prefix rows; the LoRA paper, Hu et al. 2022, BLEU only: its other rows are "
             "Li & Liang's arXiv numbers):", "", "| source | method | " + " | ".join(h for _, h, _ in METRICS[:5]) + " | % trained |",
             "|---|---|" + "---|" * 6]
    for name, row in TABLE1.items():
        lines.append(f"| Li & Liang | {name} | " + " | ".join(fmt.format(row[k]) for k, _, fmt in METRICS[:5])
                     + f" | {pct(row['percent'])} |")
    for name, (bleu, n) in LORA_PAPER.items():
        lines.append(f"| LoRA paper | {name} | {bleu} | | | | | {pct(100 * n / LORA_PAPER_TOTAL)} |")
    return lines


def lines(result: dict) -> list[str]:
    """The Table 1 section of the study's RESULTS.md: the full-budget arms (their lr chosen on a grid arm), then
    the grid arms themselves, then the papers' rows."""
    rows = [r for r in result["table"] if r["task"] == "e2e"]
    full, grids = [r for r in rows if r.get("lr_from")], [r for r in rows if not r.get("lr_from")]
    out = ["", "## Table 1: E2E test scores at the paper's budget", "",
           "Each method's lr was chosen on dev loss by its grid arm (seed 0 on a subset, below); then it trained on "
           "the whole E2E training set for up to 5 epochs with early stopping on dev loss (the best epoch kept), seeds "
           "0-2. Mean ± sd over the seeds; % of the base model's parameters; seconds on the machines the runs name.",
           "", f"![BLEU against parameters trained]({FIGURE})", ""]
    out += table(result, full) if full else [
        "No full-budget run has finished yet: `python -m experiments.plans plan table1` lists what is left."]
    if grids:
        out += ["", "### The grid arms: each lr chosen here, on the first 5,000 training pairs for 2 epochs, seed 0",
                "", "Scores at the chosen lr of a grid that trained on an eighth of the data; they are not Table 1.",
                ""] + table(result, grids)
    return out + papers()


def pareto(result: dict, path: Path) -> None:
    """Test BLEU (mean ± sd over seeds) against % of parameters trained, log x: filled markers for the full-budget
    arms, hollow for the grid arms, one colour per base model; the papers' points in black; the template floor."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in result["table"] if r["task"] == "e2e"]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(8, 5.5))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    for row in rows:
        runs = runs_of(result, row)
        x, kept = share(row, runs, "trainable_params"), share(row, runs, "kept_params")
        if x is None:
            continue
        color, full = f"C{sizes.index(row['size']) % 10}", bool(row.get("lr_from"))
        ax.errorbar([x], [row["mean"]], yerr=[row["sd"] or 0.0], fmt="o", capsize=3, color=color,
                    mfc=color if full else "white")
        note = f" ({kept:.2g}% kept)" if kept is not None and kept < 0.5 * x else ""  # the prefix: its table only
        ax.annotate(f"{arm(row)}{note}", (x, row["mean"]), textcoords="offset points",
                    xytext=(5, 3), fontsize=7, color=color)
    for name, row in TABLE1.items():
        ax.plot([row["percent"]], [row["bleu"]], "*", ms=10, c="black")
        ax.annotate(f"paper: {name}", (row["percent"], row["bleu"]), textcoords="offset points", xytext=(5, -9),
                    fontsize=7)
    ax.plot([100 * LORA_PAPER["lora"][1] / LORA_PAPER_TOTAL], [LORA_PAPER["lora"][0]], "P", ms=9, c="black")
    ax.annotate("LoRA paper: LoRA", (100 * LORA_PAPER["lora"][1] / LORA_PAPER_TOTAL, LORA_PAPER["lora"][0]),
                textcoords="offset points", xytext=(5, 3), fontsize=7)
    for y, text in FLOORS["e2e"]:
        ax.axhline(y, ls=":", c="gray")
        ax.annotate(text, (0.01, y), xycoords=("axes fraction", "data"), va="bottom", fontsize=7, color="gray")
    handles = [plt.Line2D([], [], marker="o", ls="", color=f"C{i}", label=f"base: {s}") for i, s in enumerate(sizes)]
    handles += [plt.Line2D([], [], marker="o", ls="", color="gray", mfc="white", label="grid arm (5,000 pairs, 2 epochs)"),
                plt.Line2D([], [], marker="*", ls="", color="black", label="the papers, GPT-2 medium")]
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4)
    ax.set(xscale="log", xlabel="parameters trained (% of the base model)", ylabel="E2E test BLEU",
           title="E2E: test BLEU against parameters trained (mean ± sd over seeds, lr chosen on dev loss)")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, dpi=120, format="png"))
    plt.close(fig)
