"""Tasks are a registry: each declares its data, splits, kind, metric and extra scorers, and a new task is one
`Task` plus its registration, which runs through a run, a plan and its report."""
from __future__ import annotations

import json

import pytest

from experiments import data, tasks
from experiments.config import parse_cli
from experiments.plans import collect, plan_jobs
from experiments.reports.study import markdown
from experiments.run import main as run
from experiments.tasks import Splits, Task, register
from test_experiment_run import gpt2_vocab_dir, tiny  # noqa: F401 (a fixture)


def test_the_shipped_tasks_are_registered_with_their_data_and_metric():
    assert tasks.names() == ("e2e", "webnlg", "sst2")
    assert [tasks.get(t).kind for t in tasks.names()] == ["generation", "generation", "classification"]
    assert tasks.primary("sst2") == ("accuracy", "accuracy (%)") and tasks.get("webnlg").dataset == "webnlg_2017"
    assert tasks.get("e2e").files == data.REMOTES["e2e"].files
    with pytest.raises(SystemExit, match="no task 'dart'; the tasks: e2e, webnlg, sst2"):
        tasks.get("dart")
    with pytest.raises(SystemExit, match="TASK \\(task\\) must be one of e2e, webnlg, sst2"):
        parse_cli(["--task=dart"])


# A toy table-to-text task: "name : X | food : Y" -> "X serves Y food."
NAMES, FOODS = ["Alimentum", "Zizzi", "Aromi", "Clowns", "Bibimbap"], ["Thai", "French", "Indian"]
FILES = ("train.tsv", "dev.tsv", "test.tsv")


def toy_rows(n: int, offset: int) -> list[tuple[str, str]]:
    pairs = [(NAMES[(i + offset) % 5], FOODS[(i + offset) % 3]) for i in range(n)]
    return [(f"name : {a} | food : {b}", f"{a} serves {b} food.") for a, b in pairs]


def toy_splits(data_dir, max_train, max_dev, max_test, train_seed) -> Splits:
    folder = data.dataset_dir("toy", data_dir)
    rows = {f.split(".")[0]: [tuple(line.split("\t")) for line in (folder / f).read_text().splitlines()] for f in FILES}
    test = [(table, [text]) for table, text in rows["test"]][:max_test]
    sizes = {s: {"references": len(r)} for s, r in rows.items()}
    return Splits(tasks.draw(rows["train"], max_train, train_seed), rows["dev"][:max_dev], test,
                  {"first": [0]}, sizes)


def mentions(predictions: list[str], test: list, data_dir) -> dict:
    """The share of outputs that name the table's restaurant (%)."""
    named = [table.split(" : ")[1].split(" |")[0] in out for out, (table, _) in zip(predictions, test)]
    return {"mentions": 100.0 * sum(named) / len(named)}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "toy").mkdir(parents=True)
    for name, n, offset in zip(FILES, (12, 4, 3), (0, 1, 2)):
        (root / "toy" / name).write_text("".join(f"{a}\t{b}\n" for a, b in toy_rows(n, offset)))
    monkeypatch.setitem(data.REMOTES, "toy", data.Remote("https://example.invalid/toy/", FILES,
                                                         data.listing_sha256(root / "toy", FILES)))
    task = register(Task("toy", "generation", "toy", FILES, ("bleu", "BLEU"), toy_splits, score=mentions,
                         columns=("mentions",)))
    yield root
    del tasks.REGISTRY[task.name]


def test_a_new_task_runs_through_a_run_a_plan_and_its_report(tmp_path, gpt2_vocab_dir, toy):
    settings = {k[2:].split("=")[0]: k.split("=", 1)[1] for k in tiny(tmp_path, gpt2_vocab_dir)
                if not k.startswith(("--model", "--results_dir", "--runs_dir"))}
    plan = {"sizes": [{"name": "tiny", "checkpoint": str(gpt2_vocab_dir)}],
            "evals": [{"task": "toy", "method": "prefix", "lrs": [0.01, 0.001], "seeds": [0],
                       "args": {**settings, "data_dir": str(toy)}}]}
    out = tmp_path / "study"
    jobs = plan_jobs(plan, out)
    assert [j.name for j in jobs] == ["tiny-toy-prefix-lr0.01-seed0", "tiny-toy-prefix-lr0.001-seed0"]
    for job in jobs:  # the plan's commands, run here (a registration lives in this process)
        metrics = run(job.cmd[3:])
        assert metrics["n_test"] == 3 and 0 <= metrics["mentions"] <= 100 and "bleu_first" in metrics
        assert metrics["inputs"]["data"] == data.listing_sha256(toy / "toy", FILES)  # the task's files identify it
        predictions = (out / "results" / job.name / "predictions.txt").read_text().splitlines()
        assert len(predictions) == 3
    result = collect(plan, out)
    [row] = result["table"]
    assert row["task"] == "toy" and row["chosen_lr"] in (0.01, 0.001) and row["mentions"] is not None
    assert json.loads((out / "results" / jobs[0].name / "config.json").read_text())["task"] == "toy"
    text = markdown({**result, "models": []}, out, "A toy study")
    assert "## TOY: test BLEU" in text and "| mentions |" in text and "| tiny | prefix |" in text
