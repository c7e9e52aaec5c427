"""The paper's findings beside ours, each with a verdict: the table at the top of experiments/RESULTS.md.

    python -m experiments.findings            (prints the table; `make plots` puts it in RESULTS.md)

Reads only the result files of the plans that measure the findings under one protocol (every arm's lr
chosen on dev loss from its own grid, the same data and steps for the arms compared, 3 or more seeds):

    experiments/configs/fulldata.json       1  prefix vs fine-tuning, full data, 2 epochs (E2E, SST-2)
    experiments/configs/lowdata-e2e.json    2  50-500 training pairs; real-word vs random init
    experiments/configs/webnlg.json         3  BLEU on seen vs unseen WebNLG categories
    experiments/configs/findings-e2e.json   4-8  length, depth, infix, reparameterization, parameters;
                                                 the bfloat16 vs float32 frozen base
    experiments/configs/adaptation.json     9  ours, not the paper's: adapting the base on task text

each run with `python -m experiments.scale run <plan>`. A finding whose runs are missing says so and
names the command; it is never filled from runs made with other settings.

Verdicts compare means with their standard error, se = sqrt(sd_a^2 / n_a + sd_b^2 / n_b):
"reproduced" when the difference is more than 2 se in the paper's direction, "opposite" when it is more
than 2 se the other way, "not reproduced" when it is within 2 se. Two arms less than 3 points apart need
5 seeds each (the protocol's rule); with fewer the verdict is "not settled": add seeds 3 and 4 to both
arms' "seeds" in the plan and run it again (finished runs are kept; the new seeds run at the chosen lr).
"""
from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from .scale import arm as arm_name
from .scale import at_edge, collect, fmt_lr, load_plan

CONFIGS = Path(__file__).parent / "configs"
CLOSE, CLOSE_SEEDS = 3.0, 5  # arms closer than 3 points need 5 seeds
PLANS = ("fulldata", "lowdata-e2e", "webnlg", "findings-e2e", "adaptation")


@dataclass
class Arm:
    """One arm's test scores over seeds at its dev-chosen lr."""
    name: str
    lr: float
    values: list[float]
    edge: bool = False  # the lr is the smallest or largest of its grid (scale.at_edge)

    @property
    def mean(self) -> float:
        return statistics.mean(self.values)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else float("nan")

    def text(self) -> str:
        spread = f" ± {self.sd:.1f}" if len(self.values) > 1 else ""
        edge = ", at the grid's edge" if self.edge else ""
        each = ", ".join(f"{v:.1f}" for v in self.values)  # every seed, so that a collapsed one stays in view
        return f"{self.mean:.1f}{spread} (n={len(self.values)}: {each}; lr {fmt_lr(self.lr)}{edge})"


class Plan:
    """A plan's finished runs, read from its result files."""

    def __init__(self, name: str, root: Path = Path("."), links: str = ""):
        self.name, self.links = name, links
        self.plan = load_plan(CONFIGS / f"{name}.json")
        self.out = root / self.plan["out"]
        self.result = collect(self.plan, self.out)

    def arm(self, task: str, arm: str, metric: str | None = None, size: str | None = None) -> Arm | None:
        """`arm`'s runs at its dev-chosen lr on model `size` (default: the plan's first), scored by the task's
        metric or `metric`."""
        size = size or self.plan["sizes"][0]["name"]
        rows = [r for r in self.result["table"] if r["task"] == task and r["arm"] == arm and r["size"] == size]
        if not rows:
            return None
        row = rows[0]
        runs = [r for r in self.result["runs"] if r["task"] == task and r["arm"] == arm and r["size"] == row["size"]
                and r["lr"] == row["chosen_lr"] and r["seed"] in row["seeds"]]
        values = [r["score"] if metric is None else r["metrics"].get(metric) for r in runs]
        if any(v is None for v in values):
            return None
        return Arm(arm, row["chosen_lr"], values, at_edge(row))

    def first_seed_by_lr(self, task: str, arm: str) -> list[float]:
        """The test scores of the first seed at every lr of the grid (how much the lr matters)."""
        first = min((r["seed"] for r in self.result["runs"] if r["task"] == task and r["arm"] == arm), default=None)
        return [r["score"] for r in self.result["runs"] if r["task"] == task and r["arm"] == arm and r["seed"] == first]

    def link(self) -> str:
        return f"[{self.name}]({self.links}{self.out.name}/RESULTS.md)"  # links: the way to experiments/

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
        return f"`python -m experiments.scale run experiments/configs/{self.name}.json`"


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


def missing(finding: str, paper: str, plan: Plan, what: str) -> Row:
    return Row(finding, paper, f"not run yet ({what})", "–", plan.link())


def pair(finding: str, paper: str, plan: Plan, task: str, a: str, b: str, verdict, metric: str | None = None,
         sizes: tuple[str | None, str | None] = (None, None)) -> Row:
    """A row comparing arm a with arm b of one plan (on the plan's first model, or on `sizes`)."""
    x, y = plan.arm(task, a, metric, sizes[0]), plan.arm(task, b, metric, sizes[1])
    names = [f"{s} {n}" if s else n for s, n in zip(sizes, (a, b))]
    if x is None or y is None:
        return missing(finding, paper, plan, ", ".join(names))
    return Row(finding, paper, f"{x.text()} vs {y.text()}", verdict(x, y), f"{plan.link()}: {', '.join(names)}")


def length_curve(plan: Plan, lengths=(1, 2, 5, 10, 20, 40)) -> Row:
    finding, paper = "4. prefix length: rises, then plateaus (E2E)", "peak near 10 (grid 1-40)"
    arms = {n: plan.arm("e2e", f"every-mlp-len{n}") for n in lengths}
    if any(a is None for a in arms.values()):
        return missing(finding, paper, plan, "every-mlp-len1 ... len40")
    best = max(arms, key=lambda n: arms[n].mean)
    ours = ", ".join(f"{n}: {a.mean:.1f}" for n, a in arms.items()) + f" (best: {best})"
    rises = higher(arms[10], arms[1])
    past = higher(arms[best], arms[10]) if best > 10 else None  # does the best length beat 10 clearly?
    if not rises.startswith("reproduced"):
        verdict = f"not reproduced: 10 vs 1 is {rises}"
    elif past is not None and past.startswith("reproduced"):
        verdict = f"not reproduced: still rising past 10 ({best} vs 10: {past.split(' ', 1)[1]})"
    else:
        verdict = f"reproduced: rises to 10 ({rises.split(' ', 1)[1]}), no clear gain past it"
    return Row(finding, paper, ours, verdict, f"{plan.link()}: every-mlp-len*")


def stability(plan: Plan) -> Row:
    """Finding 7: the direct table is less stable than the MLP, over seeds and over the lr grid."""
    finding, paper = "7. MLP reparameterization is more stable than a direct table (E2E)", "direct: unstable (no number)"
    mlp, direct = plan.arm("e2e", "every-mlp-len10"), plan.arm("e2e", "every-direct-len10")
    if mlp is None or direct is None:
        return missing(finding, paper, plan, "every-mlp-len10, every-direct-len10")
    spans = {k: plan.first_seed_by_lr("e2e", k) for k in ("every-mlp-len10", "every-direct-len10")}
    span_mlp, span_direct = (max(v) - min(v) for v in spans.values())
    ours = (f"MLP {mlp.text()}, direct {direct.text()}; BLEU range over the lr grid (first seed): "
            f"MLP {span_mlp:.1f}, direct {span_direct:.1f}")
    wider = [direct.sd > mlp.sd, span_direct > span_mlp]
    verdict = ("reproduced: direct varies more over seeds and over lrs" if all(wider) else
               "opposite: the MLP varies more over seeds and over lrs" if not any(wider) else
               "not reproduced: " + ("direct varies more over seeds, less over lrs" if wider[0]
                                     else "direct varies more over lrs, less over seeds"))
    return Row(finding, paper, ours, verdict + f" (sd of {min(len(mlp.values), len(direct.values))} seeds: a weak test)",
               f"{plan.link()}: every-mlp-len10, every-direct-len10")


def parameters(plan: Plan) -> Row:
    """Finding 8: what a prefix trains and keeps, as a share of the model's parameters."""
    finding, paper = "8. parameters per task", "~0.1% of GPT-2 medium kept (≈250K at length 5)"
    prefix = next((r["metrics"] for r in plan.result["runs"] if r["task"] == "e2e" and r["arm"] == "every-mlp-len10"
                   and r["metrics"].get("kept_params")), None)
    if prefix is None:
        return missing(finding, paper, plan, "every-mlp-len10")
    total = prefix["total_params"]
    ours = (f"length 10: {prefix['trainable_params']:,} trained (MLP included), {prefix['kept_params']:,} kept "
            f"= {100 * prefix['kept_params'] / total:.2f}% of {total:,}")
    # 2 (key, value) x layers x length x width, over the parameters: the same count for GPT-2 medium
    return Row(finding, paper, ours, "holds by construction: 2 × layers × length × width kept, no measurement",
               f"{plan.link()}: every-mlp-len10")


def load(root: Path = Path("."), links: str = "") -> list[Plan]:
    """The plans' finished runs under `root` (read once); `links` leads from where the table is read to
    experiments/ (nothing for experiments/RESULTS.md)."""
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
    for n in (50, 100, 200, 500):
        out.append(pair(f"2. low data, {n} pairs: real-word init > random init", "real-word init helps (Fig. 3)",
                        low, "e2e", f"prefix-text-n{n}", f"prefix-n{n}", higher))
    out.append(pair("3. extrapolation: prefix > fine-tuning on unseen WebNLG categories (BLEU)", "45.3 vs 26.7",
                    web, "webnlg", "prefix", "finetune", higher, metric="bleu_unseen"))
    out.append(pair("3. ... while close on seen categories (BLEU)", "62.9 vs 64.7", web, "webnlg", "prefix",
                    "finetune", at_least, metric="bleu_seen"))
    out.append(length_curve(abl))
    out.append(pair("5. every layer > embedding only, length 10 (E2E)", "70.3 vs 62.2", abl, "e2e",
                    "every-mlp-len10", "embedding-len10", higher))
    out.append(pair("5. embedding only: MLP vs direct table (depth apart from reparameterization)", "–", abl, "e2e",
                    "embedding-mlp-len10", "embedding-len10", no_claim))
    out.append(pair("6. prefix > infix, length 10 (E2E)", "70.3 vs 67.2", abl, "e2e", "every-mlp-len10",
                    "infix-mlp-len10", higher))
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


def markdown(root: Path = Path("."), links: str = "") -> str:
    plans = load(root, links)  # collect() reads every run and scores E2E slot errors: once per plan
    lines = ["| finding | paper (GPT-2 medium) | ours: mean ± sd (n: each seed; dev-chosen lr) | verdict | runs |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.finding} | {r.paper} | {r.ours} | {r.verdict} | {r.runs} |" for r in rows(plans=plans)]
    todo = incomplete(plans)
    if todo:
        lines += ["", "Runs still to make (each resumes where it stopped; `plan` instead of `run` lists the jobs and "
                  "their hours): " + "; ".join(p.command() for p in todo) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=".", help="the project folder the plans' outputs are under")
    print(markdown(Path(p.parse_args(argv).root)), end="")


if __name__ == "__main__":
    main()
