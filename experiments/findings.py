"""The paper's findings beside ours, each with a verdict: the table of studies/RESULTS.md.

    python -m experiments.findings [--plot PNG]   (prints the table, draws the figure; `make plots` writes both
                                                  to studies/RESULTS.md and studies/paper-findings.png)

Reads only the result files of the studies that measure the findings under one protocol (every arm's lr
chosen on dev loss from its own grid, the same data and steps for the arms compared, 3 or more seeds):

    studies/fulldata      1  prefix vs fine-tuning, full data, 2 epochs (E2E, SST-2)
    studies/lowdata       2  50-500 training pairs; real-word vs random init
    studies/webnlg        3  BLEU on seen vs unseen WebNLG categories
    studies/findings      4-8  length, depth, infix, reparameterization, parameters;
                               the bfloat16 vs float32 frozen base
    studies/adaptation    9  ours, not the paper's: adapting the base on task text

each run with `python -m experiments.scale run <study>`. A finding whose runs are missing says so and
names the command; it is never filled from runs made with other settings.

Verdicts compare means with their standard error, se = sqrt(sd_a^2 / n_a + sd_b^2 / n_b):
"reproduced" when the difference is more than 2 se in the paper's direction, "opposite" when it is more
than 2 se the other way, "not reproduced" when it is within 2 se. Two arms less than 3 points apart need
5 seeds each (the protocol's rule); with fewer the verdict is "not settled": add seeds 3 and 4 to both
arms' "seeds" in the plan and run it again (finished runs are kept; the new seeds run at the chosen lr).
An arm whose runs ended on their budget while dev loss still fell (by more than 1% in the last epoch) says
so in how many: more steps would likely score higher, so a verdict against it holds at this budget only.
"""
from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from .scale import arm as arm_name
from .scale import STUDIES, at_edge, collect, draw_floors, fmt_lr, load_plan

# the plans are the project's own (the results may be read from elsewhere: `root`)
PROJECT = Path(__file__).resolve().parents[1]
CLOSE, CLOSE_SEEDS = 3.0, 5  # arms closer than 3 points need 5 seeds
# The paper's E2E ablation (PAPER.md): the every-layer prefix has a number only at length 10
PAPER_EVERY, PAPER_EMBEDDING, PAPER_INFIX = {10: 70.3}, {1: 48.1, 10: 62.2, 20: 61.9}, {1: 67.9, 10: 67.2, 20: 66.7}
FIGURE = "paper-findings.png"  # beside studies/RESULTS.md
PLANS = ("fulldata", "lowdata", "webnlg", "findings", "adaptation")  # studies, in the order of the findings


@dataclass
class Arm:
    """One arm's test scores over seeds at its dev-chosen lr."""
    name: str
    lr: float
    values: list[float]
    edge: bool = False  # the lr is the smallest or largest of its grid (scale.at_edge)
    planned: int = 0  # the seeds the plan wants (more than have run: the text says how many ran)
    learning: int = 0  # runs stopped by their budget while dev loss still fell (`still_learning`)

    @property
    def mean(self) -> float:
        return statistics.mean(self.values)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else float("nan")

    @property
    def err(self) -> float:
        """The error bar to draw: the sd, 0 for a single seed."""
        return self.sd if len(self.values) > 1 else 0.0

    def text(self) -> str:
        spread = f" ± {self.sd:.1f}" if len(self.values) > 1 else ""
        edge = ", at the grid's edge" if self.edge else ""
        each = ", ".join(f"{v:.1f}" for v in self.values)  # every seed, so that a collapsed one stays in view
        ran = f"; {len(self.values)} of {self.planned} seeds run" if self.planned > len(self.values) else ""
        learning = (f"; dev loss still falling at the end in {self.learning} of {len(self.values)}"
                    if self.learning else "")
        return f"{self.mean:.1f}{spread} (n={len(self.values)}: {each}; lr {fmt_lr(self.lr)}{edge}{ran}{learning})"


def still_learning(dev_loss) -> bool:
    """Whether a run's last dev evaluation improved on every earlier one by more than 1%: its budget, not early
    stopping, ended it, and more steps would likely have scored higher (a run with one evaluation can't say)."""
    return isinstance(dev_loss, list) and len(dev_loss) > 1 and dev_loss[-1] < 0.99 * min(dev_loss[:-1])


class Plan:
    """A study's plan (the project's) and its finished runs, read from the study's result files under `root`."""

    def __init__(self, name: str, root: Path = Path("."), links: str = ""):
        self.name, self.links = name, links
        self.plan = load_plan(PROJECT / STUDIES / name)
        self.out = root / STUDIES / name
        self.result = collect(self.plan, self.out)

    def arm(self, task: str, arm: str, metric: str | None = None, size: str | None = None) -> Arm | None:
        """`arm`'s runs at its dev-chosen lr on model `size` (default: the plan's first), scored by the task's
        metric or `metric`; None until its first seed has run every lr of its grid (before that the choice
        of lr is not made)."""
        size = size or self.plan["sizes"][0]["name"]
        rows = [r for r in self.result["table"] if r["task"] == task and r["arm"] == arm and r["size"] == size]
        ev = next((e for e in self.plan["evals"] if e["task"] == task and arm_name(e) == arm), None)
        if not rows or ev is None:
            return None
        row = rows[0]
        first = {r["lr"] for r in self.result["runs"] if (r["task"], r["arm"], r["size"], r["seed"]) ==
                 (task, arm, size, ev["seeds"][0])}
        if not set(ev["lrs"]) <= first:
            return None
        runs = [r for r in self.result["runs"] if r["task"] == task and r["arm"] == arm and r["size"] == row["size"]
                and r["lr"] == row["chosen_lr"] and r["seed"] in row["seeds"]]
        values = [r["score"] if metric is None else r["metrics"].get(metric) for r in runs]
        if any(v is None for v in values):
            return None
        learning = sum(still_learning(r["metrics"].get("dev_loss")) for r in runs)
        return Arm(arm, row["chosen_lr"], values, at_edge(row), len(ev["seeds"]), learning)

    def first_seed_by_lr(self, task: str, arm: str) -> list[tuple[float, float]]:
        """(lr, test score) of the first seed at every lr of the grid, by lr (how much the lr matters)."""
        runs = [r for r in self.result["runs"] if r["task"] == task and r["arm"] == arm]
        first = min((r["seed"] for r in runs), default=None)
        return sorted((r["lr"], r["score"]) for r in runs if r["seed"] == first)

    def link(self) -> str:
        return f"[{self.name}]({self.links}{self.name}/RESULTS.md)"  # links: the way to studies/

    def complete(self) -> bool:
        """Whether every run the plan wants has finished: each evaluation's first seed at every lr, and its
        other seeds (at the chosen lr only, where the plan says so)."""
        for size in self.plan["sizes"]:
            for ev in self.plan["evals"]:
                if ev.get("only") and size["name"] not in ev["only"]:
                    continue
                done = {(r["lr"], r["seed"]) for r in self.result["runs"]
                        if (r["size"], r["task"], r["arm"]) == (size["name"], ev["task"], arm_name(ev))}
                chosen = next((r["chosen_lr"] for r in self.result["table"] if (r["size"], r["task"], r["arm"])
                               == (size["name"], ev["task"], arm_name(ev))), None)
                for seed in ev["seeds"]:
                    lrs = [chosen] if seed != ev["seeds"][0] and ev.get("later_seeds") == "chosen_lr" else ev["lrs"]
                    if chosen is None or any((lr, seed) not in done for lr in lrs):
                        return False
        return True

    def command(self) -> str:
        return f"`python -m experiments.scale run {self.name}`"


def compare(a: Arm, b: Arm) -> tuple[float, float]:
    """a - b and its standard error."""
    d = a.mean - b.mean
    return d, math.sqrt(a.sd ** 2 / len(a.values) + b.sd ** 2 / len(b.values))


def higher(a: Arm, b: Arm) -> str:
    """The verdict on the claim "a scores higher than b"."""
    if len(a.values) < 2 or len(b.values) < 2:
        return "not settled (fewer than 2 seeds)"
    d, se = compare(a, b)
    if abs(d) < CLOSE and min(len(a.values), len(b.values)) < CLOSE_SEEDS:
        return f"not settled ({d:+.1f}: under {CLOSE:g} points apart needs {CLOSE_SEEDS} seeds)"
    if d > 2 * se:
        return f"reproduced ({d:+.1f}, se {se:.1f})"
    if d < -2 * se:
        return f"opposite ({d:+.1f}, se {se:.1f})"
    return f"not reproduced ({d:+.1f} is within 2 se = {2 * se:.1f})"


def at_least(a: Arm, b: Arm) -> str:
    """The verdict on the claim "a is as good as b or better": reproduced unless a is more than 2 se below."""
    if len(a.values) < 2 or len(b.values) < 2:
        return "not settled (fewer than 2 seeds)"
    d, se = compare(a, b)
    if d < -2 * se:
        return f"not reproduced ({d:+.1f}, se {se:.1f})"
    if abs(d) < CLOSE and min(len(a.values), len(b.values)) < CLOSE_SEEDS:
        return f"not settled ({d:+.1f}: under {CLOSE:g} points apart needs {CLOSE_SEEDS} seeds)"
    return f"reproduced ({d:+.1f}, se {se:.1f})"


@dataclass
class Row:
    finding: str
    paper: str
    ours: str
    verdict: str
    runs: str


def no_claim(a: Arm, b: Arm) -> str:
    """Not a verdict (the paper makes no claim): the difference and its standard error."""
    d, se = compare(a, b)
    return f"not in the paper: {d:+.1f}, se {se:.1f}"


def missing(finding: str, paper: str, plan: Plan, what: str, task: str = "e2e", arms: tuple[str, ...] = ()) -> Row:
    """A row without numbers: "not finished yet" where some of `arms`' runs on `task` exist, else "not run yet"."""
    started = any(r["task"] == task and r["arm"] in arms for r in plan.result["runs"])
    return Row(finding, paper, f"{'not finished yet' if started else 'not run yet'} ({what})", "–", plan.link())


def pair(finding: str, paper: str, plan: Plan, task: str, a: str, b: str, verdict, metric: str | None = None,
         sizes: tuple[str | None, str | None] = (None, None)) -> Row:
    """A row comparing arm a with arm b of one plan (on the plan's first model, or on `sizes`)."""
    x, y = plan.arm(task, a, metric, sizes[0]), plan.arm(task, b, metric, sizes[1])
    names = [f"{s} {n}" if s else n for s, n in zip(sizes, (a, b))]
    if x is None or y is None:  # name only the arms still short of runs
        return missing(finding, paper, plan, ", ".join(n for n, v in zip(names, (x, y)) if v is None), task, (a, b))
    return Row(finding, paper, f"{x.text()} vs {y.text()}", verdict(x, y), f"{plan.link()}: {', '.join(names)}")


def length_curve(plan: Plan, lengths=(1, 2, 5, 10, 20, 40)) -> Row:
    finding, paper = "4. prefix length: rises, then plateaus (E2E)", "peak near 10 (grid 1-40)"
    arms = {n: plan.arm("e2e", f"every-mlp-len{n}") for n in lengths}
    if any(a is None for a in arms.values()):
        return missing(finding, paper, plan, "every-mlp-len1 ... len40", "e2e",
                       tuple(f"every-mlp-len{n}" for n in lengths))
    best = max(arms, key=lambda n: arms[n].mean)
    ours = ", ".join(f"{n}: {a.mean:.1f}" for n, a in arms.items()) + f" (best: {best})"
    rises = higher(arms[10], arms[1])
    past = higher(arms[best], arms[10]) if best > 10 else None  # does the best length beat 10 clearly?
    if not rises.startswith("reproduced"):
        verdict = f"not reproduced: 10 vs 1 is {rises}"
    elif past is not None and past.startswith("reproduced"):
        verdict = f"not reproduced: still rising past 10 ({best} vs 10: {past.split(' ', 1)[1]})"
    else:
        verdict = f"reproduced: rises to 10 {rises.split(' ', 1)[1]}, no clear gain past it"
    return Row(finding, paper, ours, verdict, f"{plan.link()}: every-mlp-len*")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (Lentz's continued fraction)."""
    if x <= 0.0 or x >= 1.0:
        return min(max(x, 0.0), 1.0)
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below the mean; use the symmetry above it
        return 1.0 - betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        step = 1.0 if i == 0 else (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)) if i % 2 == 0 else
                                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)))
        d = 1.0 + step * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + step / c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-12:
            break
    return front * (f - 1.0)


def f_test(a: Arm, b: Arm) -> float:
    """One-sided F test that arm a's scores vary more over seeds than arm b's: the p-value of var_a / var_b."""
    ratio, d1, d2 = a.sd ** 2 / b.sd ** 2, len(a.values) - 1, len(b.values) - 1
    return betainc(d2 / 2, d1 / 2, d2 / (d2 + d1 * ratio))


def stability(plan: Plan) -> Row:
    """Finding 7: the direct table is less stable than the MLP. Tested over seeds at each arm's chosen lr (a
    one-sided F test on the variances, 5% level); the BLEU range over the lr grid is shown, not tested (one
    run per lr, and the two grids differ)."""
    finding, paper = "7. MLP reparameterization is more stable than a direct table (E2E)", "direct: unstable (no number)"
    mlp, direct = plan.arm("e2e", "every-mlp-len10"), plan.arm("e2e", "every-direct-len10")
    if mlp is None or direct is None:
        return missing(finding, paper, plan, "every-mlp-len10, every-direct-len10", "e2e",
                       ("every-mlp-len10", "every-direct-len10"))
    spans = {k: plan.first_seed_by_lr("e2e", k) for k in ("every-mlp-len10", "every-direct-len10")}
    span_mlp, span_direct = (max(s for _, s in v) - min(s for _, s in v) for v in spans.values())
    ours = (f"MLP {mlp.text()}, direct {direct.text()}; BLEU range over the lr grid (first seed): "
            f"MLP {span_mlp:.1f}, direct {span_direct:.1f}")
    if len(mlp.values) < 2 or len(direct.values) < 2 or not (mlp.sd > 0 and direct.sd > 0):
        return Row(finding, paper, ours, "not settled (fewer than 2 seeds)", f"{plan.link()}: every-mlp-len10, "
                   "every-direct-len10")
    more, less = f_test(direct, mlp), f_test(mlp, direct)
    sds = f"sd {direct.sd:.1f} vs {mlp.sd:.1f} over seeds"
    verdict = (f"reproduced: the direct table varies more ({sds}, F test p = {more:.2f})" if more < 0.05 else
               f"opposite: the MLP varies more ({sds}, F test p = {less:.2f})" if less < 0.05 else
               f"not reproduced: no difference in spread ({sds}, F test p = {more:.2f}); over the lr grid the "
               f"direct table's range is {'wider' if span_direct > span_mlp else 'narrower'} (one run per lr: "
               "not tested)")
    return Row(finding, paper, ours, verdict, f"{plan.link()}: every-mlp-len10, every-direct-len10")


def parameters(plan: Plan) -> Row:
    """Finding 8: what a prefix trains and keeps, as a share of the model's parameters."""
    finding, paper = "8. parameters per task", "~0.1% of GPT-2 medium kept (≈250K at length 5)"
    prefix = next((r["metrics"] for r in plan.result["runs"] if r["task"] == "e2e" and r["arm"] == "every-mlp-len10"
                   and r["metrics"].get("kept_params")), None)
    if prefix is None:
        return missing(finding, paper, plan, "every-mlp-len10", "e2e", ("every-mlp-len10",))
    total = prefix["total_params"]
    ours = (f"length 10: {prefix['trainable_params']:,} trained (MLP included), {prefix['kept_params']:,} kept "
            f"= {100 * prefix['kept_params'] / total:.2f}% of {total:,}")
    # 2 (key, value) x layers x length x width, over the parameters: the same count for GPT-2 medium
    return Row(finding, paper, ours, "holds by construction: 2 × layers × length × width kept, no measurement",
               f"{plan.link()}: every-mlp-len10")


def load(root: Path = Path("."), links: str = "") -> list[Plan]:
    """The studies' finished runs under `root` (read once); `links` leads from where the table is read to
    studies/ (nothing for studies/RESULTS.md)."""
    return [Plan(n, root, links) for n in PLANS]


def rows(root: Path = Path("."), links: str = "", plans: list[Plan] | None = None) -> list[Row]:
    """Every finding's row, from `plans` (default: `load(root, links)`)."""
    full, low, web, abl, adapt = plans or load(root, links)
    out = [pair("1. prefix ≥ fine-tuning, full data, 2 epochs (E2E BLEU)", "70.3 vs 68.8", full, "e2e",
                "prefix", "finetune", at_least),
           pair("1. prefix ≥ fine-tuning, full data, 2 epochs (SST-2 accuracy)", "no SST-2 in the paper; "
                "P-tuning v2: deep prompts ≈ fine-tuning", full, "sst2", "prefix", "finetune", at_least)]
    for n in (50, 100, 200, 500):
        out.append(pair(f"2. low data, {n} pairs: prefix > fine-tuning (E2E BLEU)", "+2.9 BLEU on average over "
                        "50-500", low, "e2e", f"prefix-n{n}", f"finetune-n{n}", higher))
    out.append(pair("2. low data, 500 pairs, 5x the steps (1,000): prefix > fine-tuning (E2E BLEU)", "+2.9 BLEU on "
                    "average over 50-500", low, "e2e", "prefix-n500-long", "finetune-n500-long", higher))
    for n in (50, 100, 200, 500):
        out.append(pair(f"2. low data, {n} pairs: real-word init > random init", "real-word init helps (Fig. 3)",
                        low, "e2e", f"prefix-text-n{n}", f"prefix-n{n}", higher))
    out.append(pair("3. extrapolation: prefix > fine-tuning on unseen WebNLG categories (BLEU)", "45.3 vs 26.7",
                    web, "webnlg", "prefix", "finetune", higher, metric="bleu_unseen"))
    out.append(pair("3. ... while close on seen categories (BLEU)", "62.9 vs 64.7", web, "webnlg", "prefix",
                    "finetune", at_least, metric="bleu_seen"))
    out.append(length_curve(abl))
    for n, paper in PAPER_EMBEDDING.items():
        out.append(pair(f"5. every layer > embedding only, length {n} (E2E)", f"{PAPER_EVERY.get(n, '–')} vs {paper}",
                        abl, "e2e", f"every-mlp-len{n}", f"embedding-len{n}", higher))
    out.append(pair("5. embedding only: MLP vs direct table (depth apart from reparameterization)", "–", abl, "e2e",
                    "embedding-mlp-len10", "embedding-len10", no_claim))
    for n, paper in PAPER_INFIX.items():
        out.append(pair(f"6. prefix > infix, length {n} (E2E)", f"{PAPER_EVERY.get(n, '–')} vs {paper}", abl, "e2e",
                        f"every-mlp-len{n}", f"infix-mlp-len{n}", higher))
    out.append(stability(abl))
    out.append(pair("protocol check: the prefix on a bfloat16 vs a float32 frozen base (E2E)", "–", abl, "e2e",
                    "every-mlp-len10", "every-mlp-len10-fp32base", no_claim))
    out.append(parameters(abl))
    out.append(pair("9. adapting the base once on all tasks' unlabeled text, then prefix (E2E BLEU)", "–", adapt,
                    "e2e", "prefix", "prefix", no_claim, sizes=("shared", "none")))
    return out


def incomplete(plans: list[Plan]) -> list[Plan]:
    """The plans with rows still to fill."""
    return [p for p in plans if not p.complete()]


def markdown(root: Path = Path("."), links: str = "", plans: list[Plan] | None = None) -> str:
    plans = plans or load(root, links)  # collect() reads every run and scores E2E slot errors: once per plan
    lines = ["| finding | paper (GPT-2 medium) | ours: mean ± sd (n: each seed; dev-chosen lr) | verdict | runs |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.finding} | {r.paper} | {r.ours} | {r.verdict} | {r.runs} |" for r in rows(plans=plans)]
    todo = incomplete(plans)
    if todo:
        lines += ["", "Runs still to make (each resumes where it stopped; `plan` instead of `run` lists the jobs and "
                  "their hours): " + "; ".join(p.command() for p in todo) + "."]
    return "\n".join(lines) + "\n"


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


def figure(plans: list[Plan] | None = None):
    """The findings as one figure of eight panels (the table's rows, drawn); returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    full, low, web, abl, adapt = plans or load()
    fig, axes = plt.subplots(2, 4, figsize=(20, 9.5))
    (a_full, a_sst, a_low, a_web), (a_len, a_pos, a_rep, a_adapt) = axes

    for ax, task in ((a_full, "e2e"), (a_sst, "sst2")):
        arms = [full.arm(task, arm) for arm in ("prefix", "finetune")]
        for i, (a, label) in enumerate(zip(arms, ("prefix", "fine-tuning"))):
            bar(ax, i, a, label, f"C{i}")
        empty(ax, full, "full data", arms)
    paper_star(a_full, 0, 70.3, "paper: prefix, fine-tuning", "C0")
    paper_star(a_full, 1, 68.8, None, "C1")
    a_full.set(title="1. full data, 2 epochs: E2E", ylabel="test BLEU", xticks=[0, 1],
               xticklabels=["prefix", "fine-tuning"])
    a_sst.set(title="1. full data, 2 epochs: SST-2 (not in the paper)", ylabel="test accuracy (%)", xticks=[0, 1],
              xticklabels=["prefix", "fine-tuning"], ylim=(40, 100))

    ns = [50, 100, 200, 500]
    drawn = []
    for arm, label, color, shift in (("prefix-n{}", "prefix, random init", "C0", 0.93),
                                     ("prefix-text-n{}", "prefix, real-word init", "C2", 1.0),
                                     ("finetune-n{}", "fine-tuning", "C1", 1.07)):
        drawn += [low.arm("e2e", arm.format(n)) for n in ns]
        line(a_low, ns, drawn[-len(ns):], label, color, shift)
    for arm, label, color, shift in (("prefix-n500-long", "prefix, 5x the steps", "C0", 1.2),
                                     ("finetune-n500-long", "fine-tuning, 5x the steps", "C1", 1.32)):
        drawn.append(low.arm("e2e", arm))
        line(a_low, [500], drawn[-1:], label, color, shift, marker="s")
    empty(a_low, low, "low data", drawn)
    a_low.set(title="2. low data: E2E (paper: prefix +2.9 BLEU on average)", xscale="log", xlabel="training pairs "
              "(each seed its own sample; ~200 steps, squares 1,000)", ylabel="test BLEU")
    a_low.set_xticks(ns, [str(n) for n in ns])
    a_low.minorticks_off()

    drawn = []
    for i, (arm, label) in enumerate((("prefix", "prefix"), ("finetune", "fine-tuning"))):
        for j, metric in enumerate(("bleu_seen", "bleu_unseen")):
            drawn.append(web.arm("webnlg", arm, metric))
            bar(a_web, j + (i - 0.5) * 0.4, drawn[-1], label if j == 0 else "_", f"C{i}", width=0.38)
    empty(a_web, web, "WebNLG", drawn)
    for j, ys in enumerate(((62.9, 64.7), (45.3, 26.7))):
        for i, y in enumerate(ys):
            paper_star(a_web, j + (i - 0.5) * 0.4, y, "paper: prefix, fine-tuning" if i == j == 0 else None,
                       f"C{i}")
    a_web.set(title="3. extrapolation: WebNLG 2017", ylabel="test BLEU", xticks=[0, 1],
              xticklabels=["seen categories", "unseen categories"])

    lengths = [1, 2, 5, 10, 20, 40]
    drawn = [abl.arm("e2e", f"every-mlp-len{n}") for n in lengths]
    line(a_len, lengths, drawn, "prefix, every layer, MLP", "C0")
    ft = abl.arm("e2e", "finetune")
    if ft is not None:
        a_len.axhspan(ft.mean - ft.err, ft.mean + ft.err, color="C1", alpha=0.25,
                      label=lr_label("fine-tuning, same data", ft))
    fp32 = abl.arm("e2e", "every-mlp-len10-fp32base")
    if fp32 is not None:
        a_len.errorbar([11], [fp32.mean], yerr=[fp32.err], fmt="s", c="C4", capsize=3,
                       label=lr_label("len 10 on a float32 base", fp32))
    paper_star(a_len, 10, PAPER_EVERY[10], "paper: len 10 (peak near 10)")
    empty(a_len, abl, "length", drawn)
    a_len.set(title="4. prefix length: E2E, 5,000 pairs, 1 epoch", xscale="log", xlabel="prefix length (virtual "
              "tokens)", ylabel="test BLEU")
    a_len.set_xticks(lengths, [str(n) for n in lengths])
    a_len.minorticks_off()

    pos, drawn = [1, 10, 20], []
    for arm, label, color, paper in (("every-mlp-len{}", "prefix, every layer", "C0", PAPER_EVERY),
                                     ("infix-mlp-len{}", "infix, every layer", "C3", PAPER_INFIX),
                                     ("embedding-len{}", "embedding only (direct)", "C7", PAPER_EMBEDDING)):
        drawn += [abl.arm("e2e", arm.format(n)) for n in pos]
        line(a_pos, pos, drawn[-len(pos):], label, color)
        for n, y in paper.items():
            paper_star(a_pos, n, y, f"paper: {label.split(',')[0]}" if n == 10 else None, color)
    emb_mlp = abl.arm("e2e", "embedding-mlp-len10")
    if emb_mlp is not None:
        a_pos.errorbar([11], [emb_mlp.mean], yerr=[emb_mlp.err], fmt="D", c="C8",
                       capsize=3, label=lr_label("embedding only, MLP, len 10", emb_mlp))
    empty(a_pos, abl, "depth and position", drawn)
    a_pos.set(title="5-6. depth and position: E2E, 5,000 pairs", xscale="log", xlabel="length (virtual tokens)",
              ylabel="test BLEU")
    a_pos.set_xticks(pos, [str(n) for n in pos])
    a_pos.minorticks_off()

    drawn = []
    for arm, label, color in (("every-mlp-len10", "MLP", "C0"), ("every-direct-len10", "direct table", "C5")):
        first = abl.first_seed_by_lr("e2e", arm)
        a = abl.arm("e2e", arm)
        drawn.append(a)
        if not first or a is None:
            continue
        a_rep.plot([lr for lr, _ in first], [s for _, s in first], "o--", c=color, label=f"{label}: first seed, "
                   "every lr of its grid")
        a_rep.plot([a.lr] * len(a.values), a.values, "x", c=color, ms=8, label=lr_label(f"{label}: each seed at "
                   "the chosen lr", a))
    empty(a_rep, abl, "reparameterization", drawn)
    a_rep.set(title="7. stability: MLP vs direct table, len 10, E2E", xscale="log", xlabel="peak learning rate",
              ylabel="test BLEU")
    if any(drawn):  # the grids' lrs as ticks (after the log scale, which resets them)
        grid = sorted({r["lr"] for r in abl.result["runs"] if r["arm"] in ("every-mlp-len10", "every-direct-len10")})
        a_rep.set_xticks(grid, [fmt_lr(lr) for lr in grid])
        a_rep.minorticks_off()

    drawn = []
    for i, (size, label) in enumerate((("none", "plain base"), ("shared", "base adapted on task text"))):
        for j, (arm, name) in enumerate((("prefix", "prefix"), ("finetune", "fine-tuning"))):
            drawn.append(adapt.arm("e2e", arm, size=size))
            bar(a_adapt, i + (j - 0.5) * 0.4, drawn[-1], f"{name}, {label}", f"C{j}" if i == 0 else ("C9", "C6")[j],
                width=0.38)
    empty(a_adapt, adapt, "adaptation", drawn)
    a_adapt.set(title="9. ours: adapt the base on unlabeled task text, E2E", ylabel="test BLEU", xticks=[0, 1],
                xticklabels=["plain base", "adapted base"])

    for ax, task in zip(axes.flat, ("e2e", "sst2", "e2e", None, "e2e", "e2e", "e2e", "e2e")):
        if task:
            draw_floors(ax, task, fontsize=6)
        if task != "sst2":  # one BLEU scale for every panel, the paper's values in view
            ax.set_ylim(0, 88)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="best")
        ax.title.set_fontsize(9)
    fig.text(0.5, 0.005, CAPTION, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
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


def write_report(root: Path = Path(".")) -> Path:
    """The findings table and figure as `<root>/studies/RESULTS.md` and `paper-findings.png` beside it."""
    from minigpt.io import atomic_write
    plans = load(root)  # read once for the table and the figure
    folder = root / STUDIES
    lines = ["# The paper's findings, measured under one protocol", "",
             "Each arm's lr chosen on dev loss from its own grid, the same data and steps for the arms compared, 3 or "
             "more seeds (5 where two arms are under 3 points apart). Generated by `make plots` from the studies' "
             "result files (`python -m experiments.findings` prints the table and explains the verdicts). Paper "
             "numbers: Li & Liang (2021), ACL version, GPT-2 medium (345M), 5 epochs on the full training sets; our "
             "runs use a much smaller model and the budget in each study's plan, so compare the direction of each "
             "finding, not its level. Every study, with its plan and report: [README.md](README.md).", "",
             markdown(plans=plans), f"![the findings, drawn]({FIGURE})", "", CAPTION, ""]
    save_figure(folder / FIGURE, plans)
    atomic_write(folder / "RESULTS.md", lambda t: Path(t).write_text("\n".join(lines) + "\n"))
    return folder / "RESULTS.md"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=".", help="the project folder the studies' outputs are under")
    p.add_argument("--plot", default=None, help="also draw the findings to this PNG (make plots writes "
                   "studies/paper-findings.png)")
    args = p.parse_args(argv)
    plans = load(Path(args.root))
    print(markdown(Path(args.root), plans=plans), end="")
    if args.plot:
        save_figure(Path(args.plot), plans)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
