"""The reference sweeps' report: curves and tables, read only from result files (`<results_dir>/*/{config,metrics}.json`).

    python -m experiments.reports [--results DIR]      (make plots; make plots RESULTS=results for your runs)

Writes a report (default `studies/reference/RESULTS.md` for the shipped runs of `studies/reference/results/`,
else `<DIR>/RESULTS.md`) with its PNGs beside it (mean ± std over seeds, named after the report's folder, e.g.
`reference-e2e-length.png`), which sets each finding beside the paper's (Li & Liang 2021, ACL version,
GPT-2 medium) and, with SST-2 results, the depth gap on understanding vs generation (P-tuning v2's
observation). For the shipped runs it also writes the findings table, `studies/RESULTS.md`
(experiments/reports/findings.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from minigpt.io import atomic_write  # noqa: E402

from ..config import BOOKKEEPING, default_values  # noqa: E402
from ..paper import E2E, EMBEDDING, FLOORS, PAPER_POINTS  # noqa: E402
from .. import results as result_files  # noqa: E402
from ..provenance import machine_name  # noqa: E402
from ..results import read_run  # noqa: E402
from .. import tasks  # noqa: E402
from . import findings  # noqa: E402


METRICS = ("bleu", "nist", "meteor", "rouge_l", "cider")


# the settings the sweeps vary; runs that also differ in any other setting (data sizes, model, epochs, ...)
# are not compared with each other
SWEPT = ("method", "random_init", "prefix_len", "depth", "reparam", "init", "head", "lr", "seed")


def load_results(root: Path) -> list[dict]:
    """Each finished run's config (a setting it predates: its default) and metrics; a folder that cannot be read
    is skipped with a warning (`results.read_run`), and a run whose settings and seed another folder already
    holds (the same run under another name) counts once: the first by folder name, the other named in a note."""
    defaults = default_values()
    rows, seen = [], {}
    for m in sorted(root.glob("*/metrics.json")):
        record = read_run(m.parent, need_config=True)
        if record is None:
            continue
        cfg = {**defaults, **record.config}
        key = setting_key(cfg, ())
        if key in seen:
            print(f"note: {m.parent} is the same run as {seen[key]} (same settings and seed); counted once",
                  file=sys.stderr)
            continue
        seen[key] = m.parent
        rows.append({"config": cfg, "metrics": record.metrics, "run": m.parent.name})
    return rows


def setting_key(cfg: dict, leave_out: tuple[str, ...]) -> tuple:
    """The run's settings but `leave_out` and the bookkeeping ones, as a hashable key."""
    return tuple((k, json.dumps(v)) for k, v in sorted(cfg.items()) if k not in leave_out + BOOKKEEPING)


def group(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Runs that differ only in the seed, grouped (so never runs scored on other data sizes)."""
    out = defaultdict(list)
    for r in rows:
        out[setting_key(r["config"], ("seed",))].append(r)
    return out


def comparable(rows: list[dict], task: str) -> tuple[list[dict], dict]:
    """The runs the findings compare: those with the most common values of the settings the sweeps do not
    vary (data sizes, model, epochs, ...), and those values. The others are named in a printed note."""
    budget = Counter(setting_key(r["config"], SWEPT) for r in rows).most_common(1)[0][0]
    chosen = [r for r in rows if setting_key(r["config"], SWEPT) == budget]
    others = [r for r in rows if setting_key(r["config"], SWEPT) != budget]
    values = {k: json.loads(v) for k, v in budget}
    if others:
        differ = sorted({k for r in others for k, v in values.items() if r["config"].get(k) != v})
        print(f"note: {len(others)} {task} run(s) differ from the compared runs in {', '.join(differ)} "
              f"(the compared runs have {', '.join(f'{k}={json.dumps(values[k])}' for k in differ)}); they are "
              "left out of the comparisons and listed separately in the table of run groups")
    return chosen, values


def stats(runs: list[dict], metric: str = "bleu") -> tuple[float, float, int]:
    vals = [r["metrics"][metric] for r in runs if r["metrics"].get(metric) is not None]
    if not vals:
        return float("nan"), float("nan"), 0
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)


def select(groups, **want) -> dict[int, list[dict]]:
    """prefix_len -> runs, for groups whose config matches `want`."""
    out = {}
    for key, runs in groups.items():
        cfg = runs[0]["config"]
        if all(cfg.get(k) == v for k, v in want.items()):
            out[cfg["prefix_len"]] = runs
    return dict(sorted(out.items()))


def curve(ax, series: dict[int, list[dict]], label: str, metric: str = "bleu", **style) -> None:
    if not series:
        return
    xs = list(series)
    m = [stats(series[x], metric) for x in xs]
    ax.errorbar(xs, [a for a, _, _ in m], yerr=[s for _, s, _ in m], marker="o", capsize=3, label=label, **style)


def lengths_ticks(ax, series: dict) -> None:
    """Label a log-scale length axis with the lengths that were run (1, 2, 5, ... rather than 10^0, 10^1)."""
    if series:
        ax.set_xticks(sorted(series), [str(n) for n in sorted(series)])
        ax.minorticks_off()


def figure_file(report: Path, name: str) -> Path:
    """Where a report's figure goes: beside the report, named after its folder (studies/reference/RESULTS.md:
    studies/reference/reference-e2e-length.png)."""
    folder = report.resolve().parent
    return report.parent / f"{folder.name}-{name}.png"


def save(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, dpi=120, format="png"))
    plt.close(fig)


def fmt(runs: list[dict] | None, metric: str = "bleu") -> str:
    if not runs:
        return "not run"
    mean, sd, n = stats(runs, metric)
    return f"{mean:.1f} ± {sd:.1f} (n={n})"


@dataclass
class Sweep:
    """One task's compared runs (one model, training budget and data size: the most common ones), by arm."""
    task: str
    metric: str  # the task's primary metric
    label: str  # its axis label, e.g. "test BLEU"
    compared: list[dict]
    budget: dict  # the settings the compared runs share
    every_mlp: dict[int, list[dict]]  # prefix length -> runs
    every_direct: dict[int, list[dict]]
    emb: dict[int, list[dict]]
    rand: dict[int, list[dict]]  # on a randomly initialized model of the same shape
    ft: list[dict]  # full fine-tuning

    @classmethod
    def of(cls, task: str, rows: list[dict]) -> Sweep:
        metric, unit = tasks.primary(task)
        compared, budget = comparable(rows, task)
        groups = group(compared)
        common = dict(random_init=False, method="prefix")
        return cls(task, metric, f"test {unit}", compared, budget,
                   every_mlp=select(groups, **common, depth="all", reparam="mlp", init="random"),
                   every_direct=select(groups, **common, depth="all", reparam="direct", init="random"),
                   emb=select(groups, **common, depth="embedding", init="random"),
                   rand=select(groups, **{**common, "random_init": True}, depth="all", reparam="mlp"),
                   ft=[r for runs in groups.values() for r in runs
                       if r["config"]["method"] == "finetune" and not r["config"]["random_init"]])

    def f(self, runs: list[dict] | None) -> str:
        return fmt(runs, self.metric)

    def means(self, series: dict[int, list[dict]]) -> str:
        return ", ".join(f"{n}: {stats(r, self.metric)[0]:.1f}" for n, r in series.items())


def task_section(task: str, rows: list[dict], report: Path) -> tuple[list[str], dict]:
    """Plots for one task and its part of RESULTS.md; also returns the depth gap for the cross-task row."""
    sw = Sweep.of(task, rows)
    draw_length(sw, report)
    draw_depth(sw, report)
    draw_reparam(sw, report)
    machines = sorted({machine_text(r["metrics"].get("machine")) for r in rows})
    torch_versions = sorted({(r["metrics"].get("machine") or {}).get("torch", "?") for r in rows})
    lines = [f"## {task}", "",
             f"{len(rows)} runs; the comparisons use the {len(sw.compared)} with model `{sw.budget['model']}`, " +
             ", ".join(f"{k}={json.dumps(sw.budget[k])}" for k in ("max_train", "max_dev", "max_test", "epochs")) +
             f" (all result groups are in the table below). Mean ± std of {sw.label} over seeds (n = seeds). Machines: "
             f"{'; '.join(machines)}; torch {', '.join(torch_versions)}; commits: "
             f"{', '.join(sorted({r['metrics'].get('commit') or '?' for r in rows}))}.", ""]
    lines += findings_table(sw) + groups_table(sw, rows)
    lines += [""] + [f"![{task} {n}]({figure_file(report, f'{task}-{n}').name})" for n in ("length", "depth", "reparam")]
    lines += [""]
    gap = {n: stats(sw.every_mlp[n], sw.metric)[0] - stats(sw.emb[n], sw.metric)[0] for n in sw.every_mlp if n in sw.emb}
    return lines, gap


def draw_length(sw: Sweep, report: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    curve(ax, sw.every_mlp, f"prefix, every layer (MLP){lr_note(sw.every_mlp)}", sw.metric)
    if sw.ft:
        mean, sd, n = stats(sw.ft, sw.metric)
        ax.axhspan(mean - sd, mean + sd, color="gray", alpha=0.2)
        ax.axhline(mean, color="gray", ls="--", label=f"full fine-tuning (n={n}){lr_note({0: sw.ft})}")
    reference_lines(ax, sw.task, "length")
    ax.set(xscale="log", xlabel="prefix length (virtual tokens)", ylabel=sw.label,
           title=f"{sw.task}: prefix length (mean ± sd over seeds, n per point)")
    lengths_ticks(ax, sw.every_mlp)
    ax.legend(fontsize=7)
    save(fig, figure_file(report, f"{sw.task}-length"))


def draw_depth(sw: Sweep, report: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    curve(ax, sw.every_mlp, f"every layer (MLP){lr_note(sw.every_mlp)}", sw.metric)
    curve(ax, sw.emb, f"embedding only{lr_note(sw.emb)}", sw.metric)
    reference_lines(ax, sw.task, "depth")
    ax.set(xscale="log", xlabel="prefix length (virtual tokens)", ylabel=sw.label,
           title=f"{sw.task}: depth (mean ± sd over seeds, n per point)")
    lengths_ticks(ax, {**sw.every_mlp, **sw.emb})
    ax.legend(fontsize=7)
    save(fig, figure_file(report, f"{sw.task}-depth"))


def draw_reparam(sw: Sweep, report: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    labels, bars = [], []
    for name, series in (("MLP", sw.every_mlp), ("direct", sw.every_direct), ("random-init model", sw.rand)):
        for n, runs in series.items():
            if name != "MLP" or n in sw.every_direct:
                labels.append(f"{name}\nlen {n}{lr_note({0: runs}).replace(', ', chr(10))}")
                bars.append(stats(runs, sw.metric))
    if sw.ft:
        labels.append(f"fine-tune{lr_note({0: sw.ft}).replace(', ', chr(10))}")
        bars.append(stats(sw.ft, sw.metric))
    ax.bar(range(len(bars)), [b[0] for b in bars], yerr=[b[1] for b in bars], capsize=3)
    for i, (mean, _, n) in enumerate(bars):
        ax.annotate(f"n={n}", (i, mean), textcoords="offset points", xytext=(16, 2), ha="center", fontsize=7)
    reference_lines(ax, sw.task, "reparam")
    ax.set_xticks(range(len(bars)), labels, fontsize=8)
    ax.set(ylabel=sw.label, title=f"{sw.task}: reparameterization and baselines (mean ± sd over seeds)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    save(fig, figure_file(report, f"{sw.task}-reparam"))


def findings_table(sw: Sweep) -> list[str]:
    """The sweeps' findings beside the paper's (E2E) or beside what the literature expects (SST-2)."""
    f, L = sw.f, 10 if 10 in sw.every_mlp else (max(sw.every_mlp) if sw.every_mlp else None)
    if sw.task != "e2e" and tasks.get(sw.task).kind != "classification":
        return []  # the paper's findings are E2E's; the literature's expectations below, classification's
    if sw.task == "e2e":
        return [
            "| finding (paper, GPT-2 medium) | paper | ours |", "|---|---|---|",
            f"| prefix (every layer, MLP) vs full fine-tuning | {E2E['prefix']} vs {E2E['finetune']} | "
            f"{f(sw.every_mlp.get(L))} (len {L}) vs {f(sw.ft)} |",
            f"| prefix length: rises then plateaus, peak ~10 for table-to-text | peak at 10 | {sw.means(sw.every_mlp)} |",
            "| embedding-only, 1 / 10 / 20 tokens, well below every layer | "
            f"{' / '.join(str(EMBEDDING[n]) for n in (1, 10, 20))} | " +
            " / ".join(f(sw.emb.get(n)) for n in (1, 10, 20)) + " |",
            f"| direct table vs MLP (paper: direct is unstable, no number) | n/a | {f(sw.every_direct.get(L))} vs "
            f"{f(sw.every_mlp.get(L))} |",
            f"| pretrained vs randomly initialized base model | n/a | {f(sw.every_mlp.get(L))} vs {f(sw.rand.get(L))} |"]
    # what the literature leads one to expect on an understanding task (qualitative: no paper ran this model)
    return [
        "| setting | expected (P-tuning v2, Liu et al. 2022; Lester et al. 2021) | ours |", "|---|---|---|",
        f"| prefix, every layer (MLP), len {L} vs full fine-tuning | deep prompts about match fine-tuning "
        f"| {f(sw.every_mlp.get(L))} vs {f(sw.ft)} |",
        f"| prefix length (every layer, MLP) | simple classification needs short prompts (< 20) | {sw.means(sw.every_mlp)} |",
        "| embedding-only, 1 / 10 / 20 tokens | well below every layer on models far under 10B parameters | " +
        " / ".join(f(sw.emb.get(n)) for n in (1, 10, 20)) + " |",
        f"| direct table vs MLP | the MLP's effect depends on the task | {f(sw.every_direct.get(L))} vs "
        f"{f(sw.every_mlp.get(L))} |",
        f"| randomly initialized base model | n/a (a control: nothing pretrained to steer) | {f(sw.rand.get(L))} |"]


def groups_table(sw: Sweep, rows: list[dict]) -> list[str]:
    """Every group of runs that differ only in the seed (compared or not), with each metric's mean and the compute."""
    cols = ("bleu", "nist", "meteor", "rouge_l", "cider") if sw.metric == "bleu" else ("accuracy", "macro_f1",
                                                                                       "dev_accuracy")
    seconds = sum(r["metrics"].get("train_seconds", 0) + r["metrics"].get("decode_seconds", 0) for r in rows)
    finished = sorted(r["metrics"]["finished"] for r in rows if r["metrics"].get("finished"))
    when = f", finished {finished[0][:16]} to {finished[-1][:16]} UTC" if finished else ""
    lines = ["", f"Compute: {seconds / 3600:.1f} h of training and decoding, summed over runs{when}. Per group: the mean "
             "over seeds of each metric and of the training seconds; lr is the runs' peak learning rate; kept params: "
             "what a deployed run stores (a prefix's table after `materialize()`; recorded by runs since "
             "2026-11-27, – for older ones).",
             "", "| run group | n | lr | " + " | ".join(cols) + " | trainable params | kept params | train s |",
             "|---|---|---|" + "---|" * len(cols) + "---|---|---|"]
    for runs in sorted(group(rows).values(), key=lambda runs: runs[0]["run"]):
        cells = [f"{stats(runs, m)[0]:.2f}" if stats(runs, m)[2] else "n/a" for m in cols]
        other = {k: runs[0]["config"][k] for k, v in sw.budget.items() if runs[0]["config"][k] != v}
        name = runs[0]["run"].rsplit("-seed", 1)[0] + (f" (not compared: {json.dumps(other)})" if other else "")
        lines.append(f"| {name} | {len(runs)} | {runs[0]['config']['lr']:g} | " +
                     " | ".join(cells) + f" | {count(runs[0]['metrics'], 'trainable_params')} | "
                     f"{count(runs[0]['metrics'], 'kept_params')} | {stats(runs, 'train_seconds')[0]:.0f} |")
    return lines


def reference_lines(ax, task: str, plot: str) -> None:
    """The task's floors as dotted lines and the paper's points for this plot as black markers."""
    for y, text in FLOORS.get(task, []):
        ax.axhline(y, ls=":", c="gray", lw=1)
        ax.annotate(text, (0.99, y), xycoords=("axes fraction", "data"), va="bottom", ha="right", fontsize=7,
                    color="gray")
    for x, y, text in PAPER_POINTS.get((task, plot), []):
        ax.plot([x], [y], "*", c="black", ms=9, label=text)


def lr_note(series: dict) -> str:
    """', lr 0.001' (or the lrs, if the runs differ) of the runs drawn."""
    lrs = sorted({r["config"]["lr"] for runs in series.values() for r in runs})
    return f", lr {', '.join(f'{v:g}' for v in lrs)}" if lrs else ""


def count(metrics: dict, key: str) -> str:
    """A run's parameter count `key` (trainable_params, kept_params), or – where its record lacks it."""
    return f"{metrics[key]:,}" if isinstance(metrics.get(key), int) else "–"



ABLATION = Path("studies/ablation")  # the shipped sweeps: the ablation study (relative to the project root)


def machine_text(machine: dict | None) -> str:
    """How a run's machine reads in the report ('unrecorded' for a record without one)."""
    return machine_name(machine) if isinstance(machine, dict) else "unrecorded machine"


def write(results: Path, report: Path, title: str | None = None) -> Path:
    """The sweeps' report of the runs under `results`: `report` (markdown) with its figures beside it."""
    rows = load_results(results)
    if not rows:
        raise SystemExit(f"no results under {results}: run `make experiment` or `make ablation` first")
    lines = [f"# {title or 'The ablation sweeps at a fixed lr per arm'}", "",
             f"Generated from `{results}/*/{{config,metrics}}.json` only (`make plots`, or `python -m "
             "experiments.plans report` for a plan's runs). Paper numbers: Li & "
             "Liang (2021), ACL version, GPT-2 medium (345M), 5 epochs on the full training sets; our runs use a "
             "much smaller model and the training budget in each run's config.json, so compare the direction of "
             "each finding, not its level.", "",
             "These are the earlier sweeps (a fixed lr per arm, not chosen on dev loss). The paper's findings "
             "under one protocol, each with a verdict, are in [studies/RESULTS.md](../RESULTS.md); the base "
             "model's size in [scale](../scale/README.md) (`make scale`); adapting the base on task text before "
             "prefix-tuning in [adaptation](../adaptation/RESULTS.md) and notebook 04 section 9.", ""]
    gaps = {}
    for task in tasks.found([r["config"] for r in rows]):
        section, gaps[task] = task_section(task, [r for r in rows if r["config"]["task"] == task], report)
        lines += section
    if gaps.get("e2e") and gaps.get("sst2"):
        lines += depth_gap(gaps, report)
    report.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(report, lambda t: Path(t).write_text("\n".join(lines) + "\n"))
    print(f"wrote {report} and its figures beside it")
    return report


def depth_gap(gaps: dict[str, dict[int, float]], report: Path) -> list[str]:
    """Every layer minus embedding only, on E2E and SST-2: does depth matter more for understanding?"""
    lines = ["## Depth matters more for understanding than for generation?", "",
             "P-tuning v2 (Liu et al. 2022) reports that deep prompts (every layer) matter more for "
             "understanding tasks than for generation. Gap between every-layer and embedding-only prefixes "
             "at equal length (E2E in BLEU, SST-2 in accuracy points):", "",
             "| length | E2E gap | SST-2 gap |", "|---|---|---|"]
    lines += [f"| {n} | {gaps['e2e'].get(n, float('nan')):.1f} | {gaps['sst2'].get(n, float('nan')):.1f} |"
              for n in sorted(set(gaps["e2e"]) | set(gaps["sst2"]))]
    common_n = sorted(set(gaps["e2e"]) & set(gaps["sst2"]))
    if common_n:
        bigger = sum(gaps["sst2"][n] > gaps["e2e"][n] for n in common_n)
        lines += ["", f"The units differ (BLEU points vs accuracy points, where chance is 50), so read the direction: "
                  f"at {bigger} of {len(common_n)} lengths the SST-2 gap is the larger one. "
                  + ("Here depth matters more for generation, the opposite of P-tuning v2's observation on "
                     "large models." if bigger == 0 else
                     "Here depth matters more for understanding, as P-tuning v2 observes." if bigger == len(common_n)
                     else "The evidence is mixed.")]
    lines += ["", f"![depth gap]({figure_file(report, 'depth-gap').name})", ""]
    fig, ax = plt.subplots(figsize=(6, 4))
    for task, unit in (("e2e", "BLEU"), ("sst2", "accuracy points")):
        ns = sorted(gaps[task])
        ax.plot(ns, [gaps[task][n] for n in ns], marker="o", label=f"{task} ({unit})")
    ax.axhline(0, color="gray", lw=0.8)
    lengths_ticks(ax, {**gaps["e2e"], **gaps["sst2"]})
    ax.set(xscale="log", xlabel="prefix length", ylabel="every layer minus embedding only",
           title="how much depth adds: generation vs understanding")
    ax.legend()
    save(fig, figure_file(report, "depth-gap"))
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=None, help="a folder of finished runs to report (e.g. results/, yours); "
                   "without it: the findings table (studies/RESULTS.md) and the ablation study's sweeps "
                   "(studies/ablation/RESULTS.md)")
    p.add_argument("--report", default=None, help="the markdown report, its figures beside it (default: "
                   "<results>/RESULTS.md, so that your runs never overwrite the shipped reports)")
    p.add_argument("--strict", action="store_true", help="fail on a run folder that cannot be read (a half-written "
                   "or foreign metrics.json, no config.json, a NaN score) instead of skipping it with a warning")
    args = p.parse_args(argv)
    result_files.STRICT = args.strict
    if args.results is None:  # the shipped reports: the findings under one protocol, and the sweeps
        findings.write_report()
        write(ABLATION / "results", ABLATION / "RESULTS.md")
        return
    write(Path(args.results), Path(args.report) if args.report else Path(args.results) / "RESULTS.md")
