"""The paper's findings beside ours, each with a verdict: the table of studies/RESULTS.md.

    python -m experiments.reports.findings [--plot PNG]   (prints the table, draws the figure; `make plots` writes both
                                                  to studies/RESULTS.md and studies/paper-findings.png)

Reads only the result files of the studies that measure the findings under one protocol (every arm's lr
chosen on dev loss from its own grid, the same data and steps for the arms compared, 3 or more seeds):

    studies/fulldata      1  prefix vs fine-tuning, full data, 2 epochs (E2E, SST-2)
    studies/lowdata       2  50-500 training pairs; real-word vs random init
    studies/webnlg        3  BLEU on seen vs unseen WebNLG categories
    studies/findings      4-8  length, depth, infix, reparameterization, parameters;
                               the bfloat16 vs float32 frozen base
    studies/adaptation    9  ours, not the paper's: adapting the base on task text
    studies/table1        10 Table 1: prefix vs fine-tuning at the paper's budget (5 epochs), vs LoRA,
                               adapters and FT-top2, on the shipped and the shared-adapted base

each run with `python -m experiments.plans run <study>`. A finding whose runs are missing says so and
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

from ..paper import E2E, LORA_PAPER, TABLE1, WEBNLG
from ..paper import EMBEDDING as PAPER_EMBEDDING
from ..paper import EVERY as PAPER_EVERY
from ..paper import INFIX as PAPER_INFIX
from .. import results as result_files
from ..plans.collect import at_edge, collect
from ..plans.spec import STUDIES, fmt_lr, load_plan, lr_source
from ..plans.spec import arm as arm_name


# the plans are the project's own (the results may be read from elsewhere: `root`)
PROJECT = Path(__file__).resolve().parents[2]


CLOSE, CLOSE_SEEDS = 3.0, 5  # arms closer than 3 points need 5 seeds


FIGURE = "paper-findings.png"  # beside studies/RESULTS.md


PLANS = ("fulldata", "lowdata", "webnlg", "findings", "adaptation", "table1")  # studies, in the order of the findings


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
        row, grid = rows[0], lr_source(self.plan, ev)  # the grid that chose the lr: the arm's own, or lr_from's
        first = {r["lr"] for r in self.result["runs"] if (r["task"], r["arm"], r["size"], r["seed"]) ==
                 (task, arm_name(grid), size, grid["seeds"][0])}
        if not set(grid["lrs"]) <= first:
            return None
        runs = [r for r in self.result["runs"] if r["task"] == task and r["arm"] == arm and r["size"] == row["size"]
                and r["lr"] == row["chosen_lr"] and r["seed"] in row["seeds"]]
        values = [r["score"] if metric is None else r["metrics"].get(metric) for r in runs]
        if any(v is None for v in values):
            return None
        learning = sum(still_learning(r["metrics"].get("dev_loss")) for r in runs)
        chose = next(r for r in self.result["table"] if (r["task"], r["arm"], r["size"]) == (task, arm_name(grid), size))
        return Arm(arm, row["chosen_lr"], values, at_edge(chose), len(ev["seeds"]), learning)

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
                    later = seed != ev["seeds"][0] and ev.get("later_seeds") == "chosen_lr"
                    lrs = [chosen] if later or ev.get("lr_from") else ev["lrs"]
                    if chosen is None or any((lr, seed) not in done for lr in lrs):
                        return False
        return True

    def command(self) -> str:
        return f"`python -m experiments.plans run {self.name}`"


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


def missing(finding: str, paper: str, plan: Plan, what: str, task: str = "e2e", arms: tuple[str, ...] = (),
            sizes: tuple[str | None, ...] = (None,)) -> Row:
    """A row without numbers: "not finished yet" where some of `arms`' runs on `task` exist (on one of the models
    `sizes`; None: any), else "not run yet"."""
    started = any(r["task"] == task and r["arm"] in arms and (None in sizes or r["size"] in sizes)
                  for r in plan.result["runs"])
    return Row(finding, paper, f"{'not finished yet' if started else 'not run yet'} ({what})", "–", plan.link())


def pair(finding: str, paper: str, plan: Plan, task: str, a: str, b: str, verdict, metric: str | None = None,
         sizes: tuple[str | None, str | None] = (None, None)) -> Row:
    """A row comparing arm a with arm b of one plan (on the plan's first model, or on `sizes`)."""
    x, y = plan.arm(task, a, metric, sizes[0]), plan.arm(task, b, metric, sizes[1])
    names = [f"{s} {n}" if s else n for s, n in zip(sizes, (a, b))]
    if x is None or y is None:  # name only the arms still short of runs; their grids' runs count as started
        grids = tuple(arm_name(lr_source(plan.plan, e)) for e in plan.plan["evals"] if e["task"] == task
                      and arm_name(e) in (a, b))
        return missing(finding, paper, plan, ", ".join(n for n, v in zip(names, (x, y)) if v is None), task,
                       (a, b, *grids), sizes)
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
    full, low, web, abl, adapt, table1 = plans or load(root, links)
    out = [pair("1. prefix ≥ fine-tuning, full data, 2 epochs (E2E BLEU)", f"{E2E['prefix']} vs {E2E['finetune']}", full, "e2e",
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
    out.append(pair("3. extrapolation: prefix > fine-tuning on unseen WebNLG categories (BLEU)", f"{WEBNLG['prefix']['unseen']} vs {WEBNLG['finetune']['unseen']}",
                    web, "webnlg", "prefix", "finetune", higher, metric="bleu_unseen"))
    out.append(pair("3. ... while close on seen categories (BLEU)", f"{WEBNLG['prefix']['seen']} vs {WEBNLG['finetune']['seen']}", web, "webnlg", "prefix",
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
    return out + baselines(table1)


def baselines(plan: Plan) -> list[Row]:
    """Finding 10, Table 1 at the paper's budget: prefix vs fine-tuning, adapters, FT-top2 and LoRA, on the shipped
    base and on the one adapted on the tasks' unlabeled text."""
    out = []
    for size, base in (("gutenberg", "shipped base"), ("shared", "shared-adapted base")):
        sizes = (size, size)
        out += [pair(f"10. prefix ≥ fine-tuning at the paper's budget, up to 5 epochs ({base}, E2E BLEU)",
                     f"{E2E['prefix']} vs {E2E['finetune']}", plan, "e2e", "prefix", "finetune", at_least, sizes=sizes),
                 pair(f"10. prefix > adapter at ~0.1% ({base}, E2E BLEU)",
                      f"{E2E['prefix']} vs {TABLE1['adapter-0.1']['bleu']}", plan, "e2e", "prefix", "adapter-0.1",
                      higher, sizes=sizes),
                 pair(f"10. prefix vs adapter at ~3% ({base}, E2E BLEU)", "–", plan, "e2e",
                      "prefix", "adapter-3", no_claim, sizes=sizes),
                 pair(f"10. prefix vs FT-top2 ({base}, E2E BLEU)", "–", plan, "e2e", "prefix",
                      "fttop2", no_claim, sizes=sizes),
                 pair(f"10. prefix vs LoRA, q and v, rank 4 ({base}, E2E BLEU)",
                      f"LoRA paper: {LORA_PAPER['prefix'][0]} vs {LORA_PAPER['lora'][0]}", plan, "e2e", "prefix",
                      "lora", no_claim, sizes=sizes)]
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


def write_report(root: Path = Path(".")) -> Path:
    """The findings table and figure as `<root>/studies/RESULTS.md` and `paper-findings.png` beside it."""
    from minigpt.io import atomic_write

    from .figure import CAPTION, save_figure
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
    p.add_argument("--strict", action="store_true", help="fail on a run folder that cannot be read instead of "
                   "skipping it with a warning")
    p.add_argument("--plot", default=None, help="also draw the findings to this PNG (make plots writes "
                   "studies/paper-findings.png)")
    args = p.parse_args(argv)
    result_files.STRICT = args.strict
    plans = load(Path(args.root))
    print(markdown(Path(args.root), plans=plans), end="")
    if args.plot:
        from .figure import save_figure
        save_figure(Path(args.plot), plans)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
