"""Failures the experiment runner must not hide: runs reused for other settings, settings misread, subsets
averaged into headline numbers, diverged training scored, data substituted or cut, unnamed bad files."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
from collections import Counter
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_experiment_run import gpt2_vocab_dir, tiny  # noqa: F401 (a fixture)
from test_experiment_train import CFG, setup, trained
from test_reports import write_run

from experiments import data
from experiments import run as run_mod
from experiments import train as train_mod
from experiments.config import ExperimentConfig, load_config, parse_cli
from experiments.data import DataError
from experiments.reports.sweeps import main as plots
from experiments.run import main as run
from experiments.runid import RunId, recorded_settings
from experiments.plans.__main__ import main as plans
from experiments.tasks import draw, sst2_splits, task_splits
from experiments.train import JsonLog, LMObjective, fit
from minigpt.datadir import find_data


# --- 1. a run is identified by all its settings and its files ---------------------------------------------

def test_a_run_is_reused_or_resumed_only_with_the_same_settings(tmp_path, gpt2_vocab_dir, capsys):
    first = json.loads(json.dumps(run(tiny(tmp_path, gpt2_vocab_dir))))
    name = parse_cli(tiny(tmp_path, gpt2_vocab_dir)).run_name
    out, state = tmp_path / "results" / name, tmp_path / "runs" / name
    assert run(tiny(tmp_path, gpt2_vocab_dir)) == first
    assert "already done with these settings, model and data" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"another run under the name .*lr 0\.001 -> 0\.05.*--name=.*delete"):
        run(tiny(tmp_path, gpt2_vocab_dir, "--lr=0.05"))
    assert json.loads((out / "metrics.json").read_text()) == first
    shutil.rmtree(out)  # the training state left in runs/ belongs to the lr=0.001 run: not resumed with others
    with pytest.raises(SystemExit, match=rf"{re.escape(str(state))} holds another run .*batch_size 4 -> 2"):
        run(tiny(tmp_path, gpt2_vocab_dir, "--batch_size=2"))
    assert not out.exists()
    again = run(tiny(tmp_path, gpt2_vocab_dir, "--log_every=7"))  # equal settings: resumes the finished state
    assert {k: again[k] for k in ("bleu", "nist", "steps")} == {k: first[k] for k in ("bleu", "nist", "steps")}


def test_changed_model_or_data_files_make_another_run():
    settings = parse_cli([]).settings()
    now = RunId(settings, {"model": "aa", "data": "bb"})
    assert now.differences(RunId(settings, {"model": "aa", "data": "bb"})) == []
    assert now.differences(RunId(settings, {"model": "cc", "data": "bb"})) == ["the model files changed"]
    assert now.differences(RunId(settings, {})) == []  # a record made before fingerprints were kept
    assert now.differences(RunId(settings, {"model": "aa", "data": "dd"})) == ["the data files changed"]
    assert now.differences(RunId({**settings, "max_test": 20, "task": "sst2"}, {})) == \
        ['task "sst2" -> "e2e"', "max_test 20 -> null"]


def test_a_checkpoint_moved_to_another_folder_is_the_same_model():
    settings = parse_cli([]).settings()
    here = RunId({**settings, "model": "checkpoints/adapted"}, {"model": "aa", "data": "bb"})
    before = {**settings, "model": "experiments/adapted"}
    assert here.differences(RunId(before, {"model": "aa", "data": "bb"})) == []  # same files, another folder
    assert here.differences(RunId(before, {"model": "cc", "data": "bb"})) == [  # other files: both said
        'model "experiments/adapted" -> "checkpoints/adapted"', "the model files changed"]
    assert here.differences(RunId(before, {})) == ['model "experiments/adapted" -> "checkpoints/adapted"']
    hub = RunId({**settings, "model": "gpt2"}, {"model": None, "data": "bb"})  # no files to compare: the name
    assert hub.differences(RunId({**settings, "model": "gpt2-medium"}, {"model": None, "data": "bb"})) == [
        'model "gpt2-medium" -> "gpt2"']


def test_the_shipped_results_are_recognised_under_their_names():
    root = Path(__file__).parents[1] / "studies"  # the single runs (a plan's runs are named by the plan)
    configs = sorted(c for study in ("ablation", "reference", "lr-probe") for c in root.glob(f"{study}/results/*/config.json"))
    assert len(configs) > 70
    for f in configs:
        recorded = json.loads(f.read_text())
        cfg = load_config(overrides=recorded)  # a setting newer than the run takes its default
        assert cfg.run_name == f.parent.name
        assert RunId(cfg.settings(), {}).differences(RunId(recorded_settings(recorded), {})) == [], f


def test_a_result_without_a_run_record_is_still_done(tmp_path, gpt2_vocab_dir, monkeypatch):
    args = tiny(tmp_path, gpt2_vocab_dir)
    cfg = parse_cli(args)
    out = tmp_path / "results" / cfg.run_name
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({k: v for k, v in cfg.to_dict().items() if k != "base_dtype"}))
    (out / "metrics.json").write_text(json.dumps({"bleu": 12.5, "commit": "abc1234"}))
    monkeypatch.setattr(run_mod, "load_base", loads_nothing)
    assert run(args) == {"bleu": 12.5, "commit": "abc1234"}


def loads_nothing(*args):
    raise AssertionError("the model was loaded")


# --- 2. settings are parsed by their types, in range, before anything loads --------------------------------

@pytest.mark.parametrize("text, value", [("False", False), ("false", False), ("0", False), ("TRUE", True),
                                         ("1", True)])
def test_booleans_are_read_as_booleans(text, value):
    cfg = parse_cli([f"--random_init={text}", f"--bf16={text}"])
    assert cfg.random_init is value and cfg.bf16 is value


@pytest.mark.parametrize("arg, message", [
    ("--bf16=yes", "bf16 must be true or false (or 1 / 0), got 'yes'"),
    ("--random_init=False!", "random_init must be true or false (or 1 / 0), got 'False!'"),
    ("--prefix_len=abc", "LEN (prefix_len) must be an integer >= 1, got 'abc'"),
    ("--lr=Infinity", "LR (lr) must be a finite number > 0, got 'Infinity'"),
    ("--lr=nan", "LR (lr) must be a finite number > 0, got 'nan'"),
    ("--lr=-0.1", "LR (lr) must be a finite number > 0, got '-0.1'"),
    ("--epochs=0", "EPOCHS (epochs) must be an integer >= 1, got '0'"),
    ("--epochs=2.5", "EPOCHS (epochs) must be an integer >= 1, got '2.5'"),
    ("--max_train=-5", "MAX_TRAIN (max_train) must be an integer >= 1 or null (all), got '-5'"),
    ("--max_test=-1", "MAX_TEST (max_test) must be an integer >= 1 or null (all), got '-1'"),
    ("--max_dev=0", "max_dev must be an integer >= 1 or null (early stopping and the choice of the best epoch "
                    "need a dev set), got '0'"),
    ("--ckpt_every=0", "ckpt_every must be an integer >= 1, got '0'"),
    ("--depth=[0,0]", "DEPTH (depth) must be all, embedding or a list of distinct layer indices like [0,4,7], "
                      "got '[0,0]'"),
    ("--depth=[]", "DEPTH (depth) must be all, embedding or a list of distinct layer indices like [0,4,7], got '[]'"),
    ("--depth=first", "DEPTH (depth) must be all, embedding or a list of distinct layer indices like [0,4,7], "
                      "got 'first'"),
    ("--device=gpu", "device must be null (cuda if available, else cpu), cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("--train_sample=random", "train_sample must be one of first, seeded, got 'random'"),
    ("--compile=yes", "compile must be one of auto, on, off, got 'yes'"),
    ("--train_sample=seeded", "train_sample=seeded draws max_train pairs from the training set: set max_train "
                              "(e.g. --max_train=100), or use train_sample=first for the whole set"),
])
def test_bad_values_are_refused_in_one_line(arg, message):
    with pytest.raises(SystemExit) as e:
        parse_cli([arg])
    assert e.value.code == f"error: {message}"


@pytest.mark.parametrize("args, message", [
    (["--seeds=0,one"], "--seeds must be comma-separated integers >= 0, got '0,one'"),
    (["--sweeps=reparam,size"], "no sweep 'size' in this plan; it has: baselines, depth, length, reparam"),
    (["--tasks=dart"], "no task 'dart' in this plan; it has: e2e, sst2"),
    (["--set=max_train=10"], "--set changes the runs' settings: give --out DIR, so that they do not mix with the "
                             "study's runs"),
    (["--set=max_train", "--out=elsewhere"], "--set takes KEY=VALUE, got 'max_train'"),
])
def test_bad_plan_options_are_refused_in_one_line(args, message):
    with pytest.raises(SystemExit) as e:
        plans(["plan", "ablation", *args])
    assert e.value.code == message


def test_a_study_that_does_not_exist_is_named_with_the_ones_that_do(tmp_path):
    with pytest.raises(SystemExit) as e:
        plans(["plan", "ablations"])
    assert e.value.code.startswith("no study 'ablations': studies/ablations/plan.json does not exist; the studies "
                                   "here: ablation, adaptation, findings")
    for bad in ("--jobs=0", "--deadline=-5"):  # refused before anything runs
        with pytest.raises(SystemExit, match="--jobs must be >= 1 and --deadline > 0"):
            plans(["run", "ablation", bad, f"--out={tmp_path}"])
    assert not (tmp_path / "results").exists()


def test_depth_is_checked_against_the_model_before_it_loads(tmp_path, gpt2_vocab_dir, monkeypatch):
    monkeypatch.setattr(run_mod.GPT, "from_pretrained", loads_nothing)
    with pytest.raises(SystemExit, match=r"DEPTH=\[0, 5\] names layers that .* does not have: it has 2 layers"):
        run(tiny(tmp_path, gpt2_vocab_dir, "--depth=[0,5]"))


def test_a_malformed_settings_file_is_named(tmp_path):
    bad = tmp_path / "diff.json"
    bad.write_text('{"lr": 0.01,}')
    with pytest.raises(SystemExit, match=rf"error: {re.escape(str(bad))}: not valid JSON \(.*line 1"):
        parse_cli([str(bad)])
    bad.write_text('[1, 2]')
    with pytest.raises(SystemExit, match=rf"error: {re.escape(str(bad))}: expected a JSON object of settings"):
        parse_cli([str(bad)])


def test_fuzzed_settings_give_a_config_or_a_one_line_error():
    rng = random.Random(0)
    keys = [f.name for f in fields(ExperimentConfig)] + ["lenght", "", "LR"]
    values = ["", "abc", "-1", "0", "1", "7", "1e999", "NaN", "-Infinity", "True", "false", "null", "[", "[]",
              "[0,1]", "[1,1]", "[true]", "[-1]", "{}", '"x"', "0x10", "1.5", "1e-3", " 3 ", "²", "\n", "all",
              "embedding", "direct", "e2e", "sst2", "finetune", "cpu", "10000000000000000000000"]
    outcomes = Counter()
    for _ in range(50):
        args = [f"--{rng.choice(keys)}={rng.choice(values)}" for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.15:
            args.append(rng.choice(["--noequals", "missing.json", "--=1"]))
        try:
            cfg = parse_cli(args)
        except SystemExit as e:
            assert isinstance(e.code, str) and e.code.startswith("error: ") and "\n" not in e.code, (args, e.code)
            outcomes["refused"] += 1
        else:
            assert load_config(overrides=cfg.to_dict()) == cfg, args  # holds typed values that parse again
            outcomes["valid"] += 1
    assert outcomes["refused"] >= 25 and outcomes["valid"] >= 3, outcomes


# --- 3. plots compare like with like -----------------------------------------------------------------------

def test_plots_never_average_runs_scored_on_other_data_sizes(tmp_path, capsys):
    res = tmp_path / "results"
    for seed, bleu in enumerate((50.0, 52.0, 54.0)):
        write_run(res, {"bleu": bleu, "nist": 7.0, "meteor": None, "rouge_l": 60.0, "cider": 1.5},
                  prefix_len=10, seed=seed)
    # the same setting scored on the first 20 test MRs only: not the same measurement
    write_run(res, {"bleu": 10.0, "nist": 1.0, "meteor": None, "rouge_l": 10.0, "cider": 0.1},
              prefix_len=10, seed=3, max_test=20, name="e2e-len10-first20-seed3")
    plots(["--results", str(res), "--report", str(tmp_path / "RESULTS.md")])
    report = (tmp_path / "RESULTS.md").read_text()
    assert "52.0 ± 2.0 (n=3) (len 10)" in report  # the headline: the three full-test runs only
    assert "| e2e-len10-first20 (not compared: {\"max_test\": 20}) | 1 |" in report  # shown on its own
    assert "differ from the compared runs in max_test" in capsys.readouterr().out


# --- 4. divergence is a failure ----------------------------------------------------------------------------

def test_a_diverged_run_stops_and_is_not_marked_done(tmp_path, gpt2_vocab_dir):
    args = tiny(tmp_path, gpt2_vocab_dir, "--lr=1e30")
    with pytest.raises(SystemExit, match=r"error: the training loss is nan at step \d+ .*diverged"):
        run(args)
    assert not (tmp_path / "results" / parse_cli(args).run_name / "metrics.json").exists()


# --- 5. data is never substituted or silently cut -----------------------------------------------------------

E2E = find_data("e2e/trainset.csv").parent


def e2e_copy(tmp_path: Path, without: str | None = None, test_lines: int | None = None) -> Path:
    """A data directory with the E2E files (linked), one of them left out or the test file cut short."""
    d = tmp_path / "data"
    (d / "e2e").mkdir(parents=True)
    for f in data.E2E_FILES.values():
        if f == without:
            continue
        if f == "testset_w_refs.csv" and test_lines:
            lines = (E2E / f).read_text(encoding="utf-8").splitlines(keepends=True)
            (d / "e2e" / f).write_text("".join(lines[:test_lines]), encoding="utf-8")
        else:
            (d / "e2e" / f).symlink_to(E2E / f)
    return d


def test_a_named_data_dir_is_used_alone(tmp_path, gpt2_vocab_dir):
    d = e2e_copy(tmp_path, without="trainset.csv")
    with pytest.raises(SystemExit, match=rf"--data_dir={re.escape(str(d))} lacks {re.escape(str(d))}/e2e/trainset"):
        run(tiny(tmp_path, gpt2_vocab_dir, f"--data_dir={d}"))


def test_a_test_file_cut_short_is_refused(tmp_path, gpt2_vocab_dir):
    d = e2e_copy(tmp_path, test_lines=200)  # the header and 199 references
    with pytest.raises(SystemExit, match=r"testset_w_refs.csv: the e2e test split holds 199 references "
                                         r"\(published: 4,693\), \d+ MRs \(published: 630\)"):
        run(tiny(tmp_path, gpt2_vocab_dir, f"--data_dir={d}", "--max_test=null"))
    # max_* limits apply after loading: a file holding the first 3 MRs serves max_test=3, not max_test=100
    splits = task_splits("e2e", d, max_train=12, max_dev=4, max_test=3)
    assert len(splits.test) == 3 and splits.sizes["test"]["references"] == 199
    with pytest.raises(DataError, match=r"holds \d+ MRs \(published: 630\)"):
        task_splits("e2e", d, max_test=100)


def test_a_cut_sst2_file_is_refused_unless_a_limit_fits(tmp_path):
    src, d = find_data("sst2/stsa.binary.test").parent, tmp_path / "data" / "sst2"
    d.mkdir(parents=True)
    for split in ("train", "dev"):
        (d / f"stsa.binary.{split}").symlink_to(src / f"stsa.binary.{split}")
    lines = (src / "stsa.binary.test").read_text(encoding="utf-8").splitlines(keepends=True)
    (d / "stsa.binary.test").write_text("".join(lines[:100]), encoding="utf-8")
    with pytest.raises(DataError, match=r"stsa.binary.test: the sst2 test split holds 100 sentences "
                                        r"\(published: 1,821\)"):
        sst2_splits(tmp_path / "data")
    splits, sizes = sst2_splits(tmp_path / "data", max_test=50)
    assert len(splits["test"]) == 50 and sizes["test"] == {"sentences": 100}


@pytest.mark.parametrize("task", ["e2e", "webnlg", "sst2"])
def test_a_seeded_training_sample_is_drawn_from_the_whole_file_one_per_seed(task):
    def train(**kw):
        if task == "sst2":
            return sst2_splits(max_dev=4, max_test=3, **kw)[0]["train"]
        return task_splits(task, max_dev=4, max_test=3, **kw).train

    whole = train()
    position = {item: i for i, item in reversed(list(enumerate(whole)))}  # each item's first place in the file
    first = train(max_train=50)
    assert first == whole[:50]
    samples = {seed: train(max_train=50, train_seed=seed) for seed in (0, 1, 2)}
    assert train(max_train=50, train_seed=1) == samples[1]  # the same seed draws the same pairs
    for seed, sample in samples.items():
        assert len(sample) == 50 and all(item in position for item in sample)
        assert sample != first and max(position[item] for item in sample) >= 50  # not the file's first pairs
    assert len({tuple(sample) for sample in samples.values()}) == 3  # another sample per seed
    assert train(max_train=len(whole) + 5, train_seed=0) == whole
    assert draw(list(range(1000)), 50, 0) == sorted(draw(list(range(1000)), 50, 0))  # kept in file order


def test_a_seeded_sample_needs_the_whole_training_file(tmp_path):
    d = tmp_path / "data" / "e2e"
    d.mkdir(parents=True)
    for f in data.E2E_FILES.values():
        if f == "trainset.csv":  # the header and 99 references: enough for the first 50, not for a sample
            lines = (E2E / f).read_text(encoding="utf-8").splitlines(keepends=True)
            (d / f).write_text("".join(lines[:100]), encoding="utf-8")
        else:
            (d / f).symlink_to(E2E / f)
    assert len(task_splits("e2e", d.parent, max_train=50, max_dev=4, max_test=3).train) == 50
    with pytest.raises(DataError, match=r"trainset.csv: the e2e train split holds 99 references \(published: 42,061\)"):
        task_splits("e2e", d.parent, max_train=50, max_dev=4, max_test=3, train_seed=0)


def test_a_seeded_run_trains_on_its_seeds_sample_under_its_own_name(tmp_path, gpt2_vocab_dir, monkeypatch):
    asked = []
    real = run_mod.task_splits
    monkeypatch.setattr(run_mod, "task_splits", lambda *a: asked.append(a[-1]) or real(*a))
    cfg = parse_cli(tiny(tmp_path, gpt2_vocab_dir, "--train_sample=seeded", "--seed=3"))
    assert cfg.train_seed == 3 and parse_cli(tiny(tmp_path, gpt2_vocab_dir, "--seed=3")).train_seed is None
    assert cfg.run_name.endswith("-n12-sampled-seed3")
    metrics = run(tiny(tmp_path, gpt2_vocab_dir, "--train_sample=seeded", "--seed=3"))
    assert asked == [3] and metrics["n_train"] == 12
    assert json.loads((tmp_path / "results" / cfg.run_name / "config.json").read_text())["train_sample"] == "seeded"


def test_the_named_data_dir_supplies_the_bpe_files(tmp_path, gpt2_vocab_dir, monkeypatch, capsys):
    d = e2e_copy(tmp_path)
    (d / "gpt2").symlink_to(find_data("gpt2"))
    asked = []
    real = run_mod.load_tokenizer
    monkeypatch.setattr(run_mod, "load_tokenizer", lambda bpe_dir=None: asked.append(bpe_dir) or real(bpe_dir))
    run(tiny(tmp_path, gpt2_vocab_dir, f"--data_dir={d}"))
    assert asked == [d / "gpt2"]
    assert "e2e data files: train 42,061 references, 4,862 MRs; dev 4,672 references" in capsys.readouterr().out


# --- 6. bad files and interruptions are reported and recovered from ----------------------------------------

@pytest.mark.parametrize("content, message", [
    (b"mr,ref\n\"name[A]\",\"fine\"\n\"name[B]\",\"caf\xe9\"\n", r"trainset.csv:3: byte 0xe9 is not UTF-8"),
    (b"meaning,text\n\"name[A]\",\"fine\"\n", r"trainset.csv: expected a CSV file with columns 'mr' and 'ref', "
                                             r"found \['meaning', 'text'\]"),
    (b"", r"trainset.csv: expected a CSV file with columns 'mr' and 'ref', found no header \(an empty file\)"),
    (b"mr,ref\n\"name[A]\"\n", r"trainset.csv:2: expected an 'mr' and a 'ref' value"),
    (b"mr,ref\n\"no brackets\",\"text\"\n", r"trainset.csv:2: not an E2E MR: 'no brackets'"),
])
def test_unreadable_e2e_files_are_named_with_the_line(tmp_path, content, message):
    d = e2e_copy(tmp_path, without="trainset.csv")
    (d / "e2e" / "trainset.csv").write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(d / "e2e")) + "/" + message):
        data.load_e2e("train", d)


def test_an_unreadable_file_stops_the_run_with_its_name(tmp_path, gpt2_vocab_dir):
    d = e2e_copy(tmp_path, without="devset.csv")
    (d / "e2e" / "devset.csv").write_text("meaning,text\n")
    with pytest.raises(SystemExit, match=rf"error: {re.escape(str(d))}/e2e/devset.csv: expected a CSV file"):
        run(tiny(tmp_path, gpt2_vocab_dir, f"--data_dir={d}"))


def test_temporary_files_a_kill_left_are_removed(tmp_path, gpt2_vocab_dir):
    args = tiny(tmp_path, gpt2_vocab_dir, "--method=finetune")
    name = parse_cli(args).run_name
    for folder, f in (("results", ".metrics.json.k2j3.tmp"), ("runs", ".state.pt.x8a1.tmp")):
        (tmp_path / folder / name).mkdir(parents=True)
        (tmp_path / folder / name / f).write_bytes(b"half a file")
    run(args)
    assert sorted(p.name for p in (tmp_path / "results" / name).iterdir()) == \
        ["config.json", "log.jsonl", "metrics.json", "predictions.txt"]
    assert list((tmp_path / "runs").rglob("*.tmp")) == []


def interrupted_at(step: int, monkeypatch, ctrl_c: bool, sig: int = signal.SIGINT) -> None:
    """Make training stop as it starts step `step`: by Ctrl-C (SIGINT, as a terminal sends it) or SIGTERM (as
    `kill` and `timeout` send it), or by an exception (as a kill -9 leaves things: nothing runs after it)."""
    real, calls = train_mod.linear_schedule, {"n": 0}

    def schedule(*a):
        calls["n"] += 1
        if calls["n"] == step:
            if not ctrl_c:
                raise KeyboardInterrupt
            os.kill(os.getpid(), sig)
        return real(*a)
    monkeypatch.setattr(train_mod, "linear_schedule", schedule)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_the_training_state_and_resuming_equals_no_interrupt(tmp_path, monkeypatch, sig):
    cfg = SimpleNamespace(**{**CFG, "ckpt_every": 100})  # no regular checkpoint before the interrupt
    model, tuner, pairs = setup()
    fit(tuner, LMObjective(model, 0), pairs, pairs[:4], cfg, tmp_path / "a", log=lambda x: None)
    straight = trained(tuner)
    model, tuner, pairs = setup()
    interrupted_at(5, monkeypatch, ctrl_c=True, sig=sig)
    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):
        fit(tuner, LMObjective(model, 0), pairs, pairs[:4], cfg, tmp_path / "b", log=lambda x: None)
    assert torch.load(tmp_path / "b" / "state.pt", weights_only=False)["progress"]["step"] == 5  # step 5 finished
    monkeypatch.undo()
    model, tuner, pairs = setup(seed=5)  # a fresh process: nothing survives but state.pt
    fit(tuner, LMObjective(model, 0), pairs, pairs[:4], cfg, tmp_path / "b", log=lambda x: None)
    resumed = trained(tuner)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_resumed_run_logs_each_step_once(tmp_path, monkeypatch):
    cfg = SimpleNamespace(**{**CFG, "ckpt_every": 4})  # 3 steps an epoch: saved after steps 3, 4 and 6
    (tmp_path / "run").mkdir()
    log = JsonLog(tmp_path / "run" / "log.jsonl")
    model, tuner, pairs = setup()
    interrupted_at(6, monkeypatch, ctrl_c=False)  # step 5 logged, then killed: the saved state is step 4's
    with pytest.raises(KeyboardInterrupt):
        fit(tuner, LMObjective(model, 0), pairs, pairs[:4], cfg, tmp_path / "run", log=log)
    monkeypatch.undo()
    model, tuner, pairs = setup()
    fit(tuner, LMObjective(model, 0), pairs, pairs[:4], cfg, tmp_path / "run", log=log)
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "train_loss" in x] == [1, 2, 3, 4, 5, 6]
    assert [x["epoch"] for x in lines if "dev_loss" in x] == [0, 1]


def test_every_setting_has_a_help_line_and_help_prints_them(capsys):
    from dataclasses import fields

    from experiments.config import ExperimentConfig, default_values
    assert {f.name for f in fields(ExperimentConfig)} == set(default_values())
    assert all(f.metadata.get("help") for f in fields(ExperimentConfig))
    with pytest.raises(SystemExit) as exit_:
        parse_cli(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(f"--{f.name}=" in out for f in fields(ExperimentConfig)) and "LEN (prefix_len), default 10" in out


def test_options_take_either_command_line_style():
    """--key=value or --key value, with - or _ in the key, as pretraining's options; a key with no value is an error."""
    a = parse_cli(["--prefix_len=7", "--max-train", "50", "--lr", "0.002", "--bf16=false"])
    b = parse_cli(["--prefix-len", "7", "--max_train=50", "--lr=0.002", "--bf16", "false"])
    assert a == b and a.prefix_len == 7 and a.max_train == 50 and a.lr == 0.002 and a.bf16 is False
    with pytest.raises(SystemExit, match="has no value"):
        parse_cli(["--lr", "--seed=1"])


def test_an_infix_is_refused_where_it_is_not_built():
    assert parse_cli(["--position=infix"]).run_name.startswith("e2e-minigpt-gutenberg-infix-len10-all-mlp")
    assert parse_cli([]).run_name.startswith("e2e-minigpt-gutenberg-prefix-len10-all-mlp")  # names kept
    for bad in (["--task=sst2"], ["--depth=embedding", "--reparam=direct"], ["--init=text"]):
        with pytest.raises(SystemExit, match="position=infix"):
            parse_cli(["--position=infix", *bad])
