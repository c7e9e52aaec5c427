"""The findings drawn: one figure of eight panels, each a row of the findings table."""
from __future__ import annotations

from pathlib import Path

from ..paper import E2E, WEBNLG, draw_floors
from ..paper import EMBEDDING as PAPER_EMBEDDING
from ..paper import EVERY as PAPER_EVERY
from ..paper import INFIX as PAPER_INFIX
from ..plans.spec import fmt_lr
from .findings import Arm, Plan, load


CAPTION = ("Each arm at its own lr, chosen on dev loss (legend; per point on the curves; \"edge\": the grid's "
           "smallest or largest). Bars and points: mean ± sd over n seeds at that lr; dots: each seed (a collapsed "
           "seed stays in view). ★: the paper's value (GPT-2 medium, 5 epochs; ours: a 19M model). Dotted: floors. "
           "Every number read from the plans' result files by experiments/findings.py.")


def lr_label(label: str, a: Arm) -> str:
    return f"{label} (lr {fmt_lr(a.lr)}{', edge' if a.edge else ''}; n={len(a.values)})"


def bar(ax, x: float, a: Arm | None, label: str, color: str, width: float = 0.7) -> None:
    """One arm as a bar (mean ± sd) with its seeds as dots; nothing where the arm has no runs."""
    if a is None:
        return
    ax.bar(x, a.mean, width, yerr=a.err, capsize=3, color=color, alpha=0.75,
           label=lr_label(label, a))
    ax.plot([x + (i - (len(a.values) - 1) / 2) * width / 8 for i in range(len(a.values))], a.values, "o", ms=3,
            c="black", zorder=3)


def line(ax, xs: list, arms: list[Arm | None], label: str, color: str, shift: float = 1.0, marker: str = "o") -> None:
    """Arms along x (mean ± sd, seeds as dots, each point's lr beside it); points without runs are left out.
    `shift` scales x (on a log axis: a small sideways offset, so that series at the same x stay apart)."""
    pts = [(x * shift, a) for x, a in zip(xs, arms) if a is not None]
    if not pts:
        return
    ax.errorbar([x for x, _ in pts], [a.mean for _, a in pts], yerr=[a.err for _, a in pts],
                marker=marker, capsize=3, c=color, label=f"{label} (lr beside each point)")
    for x, a in pts:
        ax.plot([x] * len(a.values), a.values, ".", c=color, ms=4, alpha=0.6)
        ax.annotate(fmt_lr(a.lr) + ("*" if a.edge else ""), (x, a.mean), textcoords="offset points", xytext=(4, -9),
                    fontsize=6, color=color)


def paper_star(ax, x: float, y: float | None, label: str | None = None, color: str = "black") -> None:
    if y is not None:
        ax.plot([x], [y], "*", ms=10, c=color, mec="black", mew=0.5, label=label, zorder=4)


def empty(ax, plan: Plan, what: str, arms: list) -> None:
    """Say in the panel that its runs are missing (and how to make them), where none of `arms` has runs."""
    if any(a is not None for a in arms):
        return
    ax.text(0.5, 0.5, f"{what}: no arm finished yet\n{plan.command().strip('`')}", transform=ax.transAxes, ha="center",
            va="center", fontsize=7, color="gray", wrap=True)


def log_ticks(ax, xs: list) -> None:
    """Label a log x axis with the values that were run (1, 10, 20 rather than 10^0, 10^1)."""
    ax.set_xticks(xs, [fmt_lr(x) if x < 1 else str(x) for x in xs])
    ax.minorticks_off()


def full_data(ax_e2e, ax_sst, full: Plan) -> None:
    """1. prefix vs fine-tuning on the full training sets, E2E and SST-2."""
    for ax, task in ((ax_e2e, "e2e"), (ax_sst, "sst2")):
        arms = [full.arm(task, arm) for arm in ("prefix", "finetune")]
        for i, (a, label) in enumerate(zip(arms, ("prefix", "fine-tuning"))):
            bar(ax, i, a, label, f"C{i}")
        empty(ax, full, "full data", arms)
    paper_star(ax_e2e, 0, E2E["prefix"], "paper: prefix, fine-tuning", "C0")
    paper_star(ax_e2e, 1, E2E["finetune"], None, "C1")
    ax_e2e.set(title="1. full data, 2 epochs: E2E", ylabel="test BLEU", xticks=[0, 1],
               xticklabels=["prefix", "fine-tuning"])
    ax_sst.set(title="1. full data, 2 epochs: SST-2 (not in the paper)", ylabel="test accuracy (%)", xticks=[0, 1],
               xticklabels=["prefix", "fine-tuning"], ylim=(40, 100))


def low_data(ax, low: Plan) -> None:
    """2. 50-500 training pairs: random vs real-word init vs fine-tuning, and 500 pairs at 5x the steps."""
    ns, drawn = [50, 100, 200, 500], []
    for arm, label, color, shift in (("prefix-n{}", "prefix, random init", "C0", 0.93),
                                     ("prefix-text-n{}", "prefix, real-word init", "C2", 1.0),
                                     ("finetune-n{}", "fine-tuning", "C1", 1.07)):
        drawn += [low.arm("e2e", arm.format(n)) for n in ns]
        line(ax, ns, drawn[-len(ns):], label, color, shift)
    for arm, label, color, shift in (("prefix-n500-long", "prefix, 5x the steps", "C0", 1.2),
                                     ("finetune-n500-long", "fine-tuning, 5x the steps", "C1", 1.32)):
        drawn.append(low.arm("e2e", arm))
        line(ax, [500], drawn[-1:], label, color, shift, marker="s")
    empty(ax, low, "low data", drawn)
    ax.set(title="2. low data: E2E (paper: prefix +2.9 BLEU on average)", xscale="log", xlabel="training pairs "
           "(each seed its own sample; ~200 steps, squares 1,000)", ylabel="test BLEU")
    log_ticks(ax, ns)


def extrapolation(ax, web: Plan) -> None:
    """3. WebNLG: BLEU on the categories seen in training and on the unseen ones."""
    drawn = []
    for i, (arm, label) in enumerate((("prefix", "prefix"), ("finetune", "fine-tuning"))):
        for j, metric in enumerate(("bleu_seen", "bleu_unseen")):
            drawn.append(web.arm("webnlg", arm, metric))
            bar(ax, j + (i - 0.5) * 0.4, drawn[-1], label if j == 0 else "_", f"C{i}", width=0.38)
    empty(ax, web, "WebNLG", drawn)
    for j, part in enumerate(("seen", "unseen")):
        for i, method in enumerate(("prefix", "finetune")):
            paper_star(ax, j + (i - 0.5) * 0.4, WEBNLG[method][part],
                       "paper: prefix, fine-tuning" if i == j == 0 else None, f"C{i}")
    ax.set(title="3. extrapolation: WebNLG 2017", ylabel="test BLEU", xticks=[0, 1],
           xticklabels=["seen categories", "unseen categories"])


def length(ax, abl: Plan) -> None:
    """4. the length curve, with fine-tuning on the same data as a band and the float32-base check."""
    lengths = [1, 2, 5, 10, 20, 40]
    drawn = [abl.arm("e2e", f"every-mlp-len{n}") for n in lengths]
    line(ax, lengths, drawn, "prefix, every layer, MLP", "C0")
    ft = abl.arm("e2e", "finetune")
    if ft is not None:
        ax.axhspan(ft.mean - ft.err, ft.mean + ft.err, color="C1", alpha=0.25,
                   label=lr_label("fine-tuning, same data", ft))
    fp32 = abl.arm("e2e", "every-mlp-len10-fp32base")
    if fp32 is not None:
        ax.errorbar([11], [fp32.mean], yerr=[fp32.err], fmt="s", c="C4", capsize=3,
                    label=lr_label("len 10 on a float32 base", fp32))
    paper_star(ax, 10, PAPER_EVERY[10], "paper: len 10 (peak near 10)")
    empty(ax, abl, "length", drawn)
    ax.set(title="4. prefix length: E2E, 5,000 pairs, 1 epoch", xscale="log", xlabel="prefix length (virtual "
           "tokens)", ylabel="test BLEU")
    log_ticks(ax, lengths)


def depth_and_position(ax, abl: Plan) -> None:
    """5-6. every layer vs infix vs embedding only, by length; the embedding-only prompt through the MLP."""
    pos, drawn = [1, 10, 20], []
    for arm, label, color, paper in (("every-mlp-len{}", "prefix, every layer", "C0", PAPER_EVERY),
                                     ("infix-mlp-len{}", "infix, every layer", "C3", PAPER_INFIX),
                                     ("embedding-len{}", "embedding only (direct)", "C7", PAPER_EMBEDDING)):
        drawn += [abl.arm("e2e", arm.format(n)) for n in pos]
        line(ax, pos, drawn[-len(pos):], label, color)
        for n, y in paper.items():
            paper_star(ax, n, y, f"paper: {label.split(',')[0]}" if n == 10 else None, color)
    emb_mlp = abl.arm("e2e", "embedding-mlp-len10")
    if emb_mlp is not None:
        ax.errorbar([11], [emb_mlp.mean], yerr=[emb_mlp.err], fmt="D", c="C8",
                    capsize=3, label=lr_label("embedding only, MLP, len 10", emb_mlp))
    empty(ax, abl, "depth and position", drawn)
    ax.set(title="5-6. depth and position: E2E, 5,000 pairs", xscale="log", xlabel="length (virtual tokens)",
           ylabel="test BLEU")
    log_ticks(ax, pos)


def stability(ax, abl: Plan) -> None:
    """7. MLP vs direct table: the first seed over each lr grid, and every seed at the chosen lr."""
    drawn = []
    for arm, label, color in (("every-mlp-len10", "MLP", "C0"), ("every-direct-len10", "direct table", "C5")):
        first = abl.first_seed_by_lr("e2e", arm)
        a = abl.arm("e2e", arm)
        drawn.append(a)
        if not first or a is None:
            continue
        ax.plot([lr for lr, _ in first], [s for _, s in first], "o--", c=color, label=f"{label}: first seed, "
                "every lr of its grid")
        ax.plot([a.lr] * len(a.values), a.values, "x", c=color, ms=8, label=lr_label(f"{label}: each seed at "
                "the chosen lr", a))
    empty(ax, abl, "reparameterization", drawn)
    ax.set(title="7. stability: MLP vs direct table, len 10, E2E", xscale="log", xlabel="peak learning rate",
           ylabel="test BLEU")
    if any(drawn):  # the grids' lrs as ticks (after the log scale, which resets them)
        grid = sorted({r["lr"] for r in abl.result["runs"] if r["arm"] in ("every-mlp-len10", "every-direct-len10")})
        ax.set_xticks(grid, [fmt_lr(lr) for lr in grid])
        ax.minorticks_off()


def adaptation(ax, adapt: Plan) -> None:
    """9. (ours) the plain base vs the base adapted on the tasks' unlabeled text, prefix and fine-tuning."""
    drawn = []
    for i, (size, label) in enumerate((("none", "plain base"), ("shared", "base adapted on task text"))):
        for j, (arm, name) in enumerate((("prefix", "prefix"), ("finetune", "fine-tuning"))):
            drawn.append(adapt.arm("e2e", arm, size=size))
            bar(ax, i + (j - 0.5) * 0.4, drawn[-1], f"{name}, {label}", f"C{j}" if i == 0 else ("C9", "C6")[j],
                width=0.38)
    empty(ax, adapt, "adaptation", drawn)
    ax.set(title="9. ours: adapt the base on unlabeled task text, E2E", ylabel="test BLEU", xticks=[0, 1],
           xticklabels=["plain base", "adapted base"])


# each finding's panel: (draw(axes..., plan), the study it reads, the task of each axis: its floors and y scale)
PANELS = {"full data": (full_data, 0, ("e2e", "sst2")), "low data": (low_data, 1, ("e2e",)),
          "extrapolation": (extrapolation, 2, (None,)), "length": (length, 3, ("e2e",)),
          "depth and position": (depth_and_position, 3, ("e2e",)), "stability": (stability, 3, ("e2e",)),
          "adaptation": (adaptation, 4, ("e2e",))}


def finish(ax, task: str | None, fontsize: float) -> None:
    """Floors, the shared BLEU scale (the paper's values in view) and the legend of one panel."""
    if task:
        draw_floors(ax, task, fontsize=fontsize)
    if task != "sst2":
        ax.set_ylim(0, 88)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize, loc="best")


def figure(plans: list[Plan] | None = None):
    """The findings as one figure of eight panels (the table's rows, drawn); returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    plans = plans or load()
    fig, axes = plt.subplots(2, 4, figsize=(20, 9.5))
    free = iter(axes.flat)
    for draw, study, tasks in PANELS.values():
        panel_axes = [next(free) for _ in tasks]
        draw(*panel_axes, plans[study])
        for ax, task in zip(panel_axes, tasks):
            finish(ax, task, 6)
            ax.title.set_fontsize(9)
    fig.text(0.5, 0.005, CAPTION, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def finding_figure(name: str, plans: list[Plan] | None = None):
    """One finding's panel as a figure of its own, its labels legible at 100% (for notebooks and slides)."""
    import matplotlib.pyplot as plt
    if name not in PANELS:
        raise ValueError(f"no finding panel {name!r}; the panels are: {', '.join(PANELS)}")
    draw, study, tasks = PANELS[name]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7.5, 4.6 * len(tasks)), dpi=100, squeeze=False)
    draw(*axes[:, 0], (plans or load())[study])
    for ax, task in zip(axes[:, 0], tasks):
        finish(ax, task, 8)
        ax.title.set_fontsize(11)
        for text in ax.texts:  # the lrs beside the points, the floors' names
            text.set_fontsize(max(text.get_fontsize(), 8))
    fig.tight_layout()
    return fig


def save_figure(path: Path, plans: list[Plan] | None = None) -> None:
    """`figure()` written to `path` (PNG), atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minigpt.io import atomic_write
    fig = figure(plans)
    atomic_write(path, lambda t: fig.savefig(t, dpi=110, format="png"))
    plt.close(fig)
