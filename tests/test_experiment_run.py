"""`make experiment`'s code path end to end on a tiny model, and its refusals of bad settings."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import hf_model
from experiments.config import parse_cli
from experiments.provenance import git_commit
from experiments.run import main as run
from minigpt import GPT


@pytest.fixture(scope="module")
def gpt2_vocab_dir(tmp_path_factory):
    """A tiny random GPT-2 with the real 50,257-token vocabulary (the tokenizer's ids must fit)."""
    d = tmp_path_factory.mktemp("tiny-gpt2-vocab")
    hf_model(seed=3, vocab_size=50257, n_positions=160, n_embd=32, n_layer=2, n_head=2).save_pretrained(d)
    return d


def tiny(tmp_path, model, *extra):
    return [f"--model={model}", "--max_train=12", "--max_dev=4", "--max_test=3", "--max_new_tokens=6",
            "--num_beams=2", "--batch_size=4", "--warmup_steps=1", "--bf16=false", "--prefix_len=3",
            "--encoder_hidden_size=16", f"--results_dir={tmp_path / 'results'}", f"--runs_dir={tmp_path / 'runs'}",
            *extra]


@pytest.mark.parametrize("extra", [[], ["--depth=embedding", "--reparam=direct"], ["--method=finetune"],
                                   ["--task=webnlg"], ["--task=sst2"], ["--task=sst2", "--head=linear"],
                                   ["--bf16=true"], ["--task=sst2", "--head=linear", "--bf16=true"],
                                   ["--position=infix"]],
                         ids=["e2e-prefix", "e2e-embedding-only", "e2e-finetune", "webnlg", "sst2", "sst2-linear",
                              "e2e-prefix-bf16-base", "sst2-linear-bf16-base", "e2e-infix"])
def test_tiny_run_writes_the_result_files(tmp_path, gpt2_vocab_dir, extra):
    metrics = run(tiny(tmp_path, gpt2_vocab_dir, *extra))
    cfg = parse_cli(tiny(tmp_path, gpt2_vocab_dir, *extra))
    out = tmp_path / "results" / cfg.run_name
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "log.jsonl", "metrics.json", "predictions.txt"]
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
    assert len((out / "predictions.txt").read_text().splitlines()) == 3  # one line per test MR
    saved = json.loads((out / "metrics.json").read_text())
    scores = ("accuracy", "macro_f1", "dev_accuracy") if "--task=sst2" in extra else ("bleu", "nist", "rouge_l", "cider")
    if "--task=webnlg" in extra:  # scored on the seen and unseen categories too
        scores += ("bleu_seen",) if "bleu_seen" in saved else ("bleu_unseen",)
    if not any(t in extra for t in ("--task=webnlg", "--task=sst2")):  # E2E: slot errors of the 3 test outputs
        scores += ("slots_missing", "slots_added", "slot_error_rate")
        assert saved["slots"] >= 3 * 3  # every E2E table has at least three slots
    for k in (*scores, "trainable_params", "train_seconds"):
        assert saved[k] is not None
    assert saved == json.loads(json.dumps(metrics))
    if "--method=finetune" in extra:
        assert saved["trainable_params"] == saved["total_params"]
    else:
        assert 0 < saved["trainable_params"] < saved["total_params"]
        c = GPT.from_pretrained(gpt2_vocab_dir).config  # kept after materialize(): the table, P x (L x 2 x C)
        table = 3 * (c.n_embd if "--depth=embedding" in extra else c.n_layer * 2 * c.n_embd)
        head = 2 * c.n_embd if "--head=linear" in extra else 0  # a linear head is kept too
        out = c.n_embd if "--position=infix" in extra else 0  # and an infix's last final hidden state
        assert saved["kept_params"] == table + head + out
        position = cfg.position
        assert (tmp_path / "runs" / cfg.run_name / position / f"{position}.safetensors").exists()
    assert run(tiny(tmp_path, gpt2_vocab_dir, *extra)) == saved  # a finished run is not redone


@pytest.mark.parametrize("extra", [["--bf16=true"], ["--bf16=false"]], ids=["bf16", "fp32"])
def test_the_saved_prefix_reproduces_the_runs_predictions(tmp_path, gpt2_vocab_dir, extra):
    """Decoding the test tables again with the saved (materialized) prefix gives predictions.txt, line for line."""
    from experiments.data import encode_source
    from experiments.decode import decode
    from experiments.run import load_base
    from experiments.tasks import task_splits
    from minigpt import load_tokenizer
    from prefix import PrefixTuner
    # a large lr (a prefix far from its init) and 24 tables decoded for 20 tokens: enough beam decisions that a
    # table differing in its last bf16 bit changes some output (it did before the table was saved as scored)
    args = tiny(tmp_path, gpt2_vocab_dir, "--max_new_tokens=20", "--max_test=24", "--num_beams=4", "--lr=0.3", *extra)
    run(args)
    cfg = parse_cli(args)
    net = PrefixTuner.load(tmp_path / "runs" / cfg.run_name / "prefix", load_base(cfg)).eval()
    enc = load_tokenizer()
    test = task_splits(cfg.task, cfg.data_dir, cfg.max_train, cfg.max_dev, cfg.max_test, cfg.train_seed)[2]
    again = decode(net, enc, [encode_source(enc, table) for table, _ in test], num_beams=cfg.num_beams,
                   max_new_tokens=cfg.max_new_tokens, batch_size=cfg.decode_batch_size, bf16=cfg.bf16)
    assert again == (tmp_path / "results" / cfg.run_name / "predictions.txt").read_text().splitlines()


def test_bad_settings_fail_clearly(tmp_path, gpt2_vocab_dir):
    with pytest.raises(SystemExit, match="MODEL='no/such-model-dir' cannot be loaded"):
        run(tiny(tmp_path, "no/such-model-dir"))
    with pytest.raises(SystemExit, match=r"LEN \(prefix_len\) must be an integer >= 1, got .0."):
        run(tiny(tmp_path, gpt2_vocab_dir, "--prefix_len=0"))
    with pytest.raises(SystemExit, match="LEN=150 is too long.*context of 160 positions"):
        run(tiny(tmp_path, gpt2_vocab_dir, "--prefix_len=150"))
    with pytest.raises(SystemExit, match=r"TASK \(task\) must be one of e2e, webnlg, sst2, got .summarize."):
        run(tiny(tmp_path, gpt2_vocab_dir, "--task=summarize"))
    with pytest.raises(SystemExit, match="base_dtype=bfloat16 needs a frozen base"):
        run(tiny(tmp_path, gpt2_vocab_dir, "--method=finetune", "--bf16=true", "--base_dtype=bfloat16"))
    with pytest.raises(SystemExit, match="unknown setting --lenght"):
        run(tiny(tmp_path, gpt2_vocab_dir, "--lenght=3"))


def test_missing_data_fails_clearly(tmp_path, gpt2_vocab_dir, monkeypatch):
    from experiments import data
    monkeypatch.setattr(data, "data_dirs", lambda user=None: [tmp_path / "empty"])
    monkeypatch.setattr(data, "_fetch", lambda url: (_ for _ in ()).throw(OSError("offline")))
    monkeypatch.setattr(data, "PROJECT_ROOT", tmp_path / "proj")
    with pytest.raises(SystemExit, match="e2e"):
        run(tiny(tmp_path, gpt2_vocab_dir))


def ablation_runs(**narrowing) -> list:
    """(settings, run name) of each run of the ablation study's plan."""
    from experiments.plans import load_plan, plan_jobs
    from experiments.plans.spec import narrow
    root = Path(__file__).resolve().parents[1] / "studies" / "ablation"
    jobs = plan_jobs(narrow(load_plan(root), **narrowing), root)
    return [(parse_cli(j.cmd[3:]), j.name) for j in jobs]


def test_the_ablation_plan_covers_the_sweeps_and_names_its_runs_as_the_shipped_ones():
    from experiments.runid import RunId, recorded_settings
    runs = ablation_runs(tasks=["e2e"], seeds=[0])
    every = [c.prefix_len for c, _ in runs if c.method == "prefix" and c.depth == "all" and c.reparam == "mlp"
             and not c.random_init]
    assert every == [1, 2, 5, 10, 20, 40] and all(c.max_train == 5000 and c.epochs == 1 for c, _ in runs)
    assert {(c.prefix_len, c.lr) for c, _ in runs if c.depth == "embedding"} == {(1, 0.3), (10, 0.3), (20, 0.3)}
    assert [(c.prefix_len, c.lr) for c, _ in runs if c.reparam == "direct" and c.depth == "all"] == [(10, 0.1)]
    assert [c.lr for c, _ in runs if c.method == "finetune"] == [1e-4]  # a prefix's lr would wreck the weights
    assert [c.prefix_len for c, _ in runs if c.random_init] == [10]
    assert len({name for _, name in runs}) == len(runs) == 12  # no run twice
    shipped = Path(__file__).resolve().parents[1] / "studies" / "ablation" / "results"
    for cfg, name in ablation_runs():  # every run of the plan is a shipped run with these very settings
        recorded = recorded_settings(json.loads((shipped / name / "config.json").read_text()))
        assert RunId(cfg.settings(), {}).differences(RunId(recorded, {})) == [], name


def test_the_ablation_plan_runs_settings_two_at_a_time(tmp_path, gpt2_vocab_dir, capfd):
    from experiments.plans.__main__ import main as plans
    own = ("--results_dir", "--runs_dir")
    sets = [f"--set={a[2:]}" for a in tiny(tmp_path, gpt2_vocab_dir) if not a.startswith(own)]
    out = tmp_path / "ablation"
    plans(["run", "ablation", f"--out={out}", "--tasks=e2e", "--sweeps=reparam", "--seeds=0", "--jobs=2", *sets])
    names = sorted(p.name for p in (out / "results").iterdir() if p.is_dir())
    assert len(names) == 2 and any("direct" in n for n in names)
    for name in names:  # each run in its own process, its output in its own file
        assert json.loads((out / "results" / name / "metrics.json").read_text())["seed"] == 0
        assert "trainable params" in (out / "logs" / f"{name}.log").read_text()
    assert "max_train" in json.loads((out / "plan.json").read_text())["args"]  # the plan that ran, recorded
    assert (out / "RESULTS.md").is_file()  # the sweeps' report of what ran
    printed = capfd.readouterr().out
    assert printed.count("started") == 2 and "2 done, 0 failed" in printed
    plans(["run", "ablation", f"--out={out}", "--tasks=e2e", "--sweeps=reparam", "--seeds=0", *sets])
    printed = capfd.readouterr().out
    assert "started" not in printed and "2 done, 0 failed" in printed  # finished runs are not run again


def test_a_run_is_printed_beside_the_shipped_reference_run_with_its_settings(tmp_path, gpt2_vocab_dir, capsys,
                                                                            monkeypatch):
    import shutil

    import experiments.run as run_module
    from experiments.runid import identify, reference_run
    args = tiny(tmp_path, gpt2_vocab_dir)
    cfg = parse_cli(args)
    metrics = run(args)
    reference = tmp_path / "reference"
    shutil.copytree(tmp_path / "results" / cfg.run_name, reference / "shipped-run")
    found = reference_run(identify(cfg), reference)
    assert found is not None and found[0] == reference / "shipped-run" and found[1] == json.loads(json.dumps(metrics))
    assert reference_run(identify(parse_cli(args + ["--lr=0.002"])), reference) is None  # other settings: none
    # the printout: this run's scores, the reference's beside them, and where each came from
    monkeypatch.setattr(run_module, "REFERENCE", reference)
    monkeypatch.setattr("experiments.runid.REFERENCE", reference)
    capsys.readouterr()
    run(args + [f"--results_dir={tmp_path / 'mine'}", f"--runs_dir={tmp_path / 'mine-state'}"])
    out = capsys.readouterr().out
    assert "this run (" in out and "reference (" in out and f"reference: {reference / 'shipped-run'}/" in out
    run(args + ["--lr=0.002", "--name=lr2", f"--results_dir={tmp_path / 'mine'}", f"--runs_dir={tmp_path / 'mine-state'}"])
    assert "no shipped run in" in capsys.readouterr().out
    # the shipped runs are every study's results/<run>/, under any name; a run is never its own reference
    studies = tmp_path / "studies"
    shutil.copytree(tmp_path / "results" / cfg.run_name, studies / "a-study" / "results" / "plan-named-run")
    found = reference_run(identify(cfg), studies)
    assert found is not None and found[0] == studies / "a-study" / "results" / "plan-named-run"
    assert reference_run(identify(cfg), studies, skip=studies / "a-study" / "results" / "plan-named-run") is None


def test_the_recorded_commit_is_dirty_only_when_code_differs(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "experiments" / "plan").mkdir(parents=True)
    (tmp_path / "model.py").write_text("x = 1\n")
    (tmp_path / "experiments" / "plan" / "jobs.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    clean = git_commit(tmp_path / "experiments")
    assert clean and "+dirty" not in clean and clean != "unknown"
    (tmp_path / "experiments" / "plan" / "jobs.json").write_text('{"done": 1}\n')  # a sweep's own bookkeeping
    assert git_commit(tmp_path / "experiments") == clean
    (tmp_path / "model.py").write_text("x = 2\n")  # the code changed: the runs may not be HEAD's
    assert git_commit(tmp_path / "experiments") == clean + "+dirty"


def test_a_random_init_base_has_the_checkpoints_shape_and_never_reads_its_weights(tmp_path, gpt2_vocab_dir,
                                                                                 monkeypatch):
    import torch

    from experiments.run import load_base
    from minigpt.io import CheckpointError
    cfg = parse_cli(tiny(tmp_path, gpt2_vocab_dir, "--random_init=true", "--seed=5"))
    shape = GPT.from_pretrained(gpt2_vocab_dir).config

    def no_weights(*args, **kwargs):
        raise CheckpointError("the weights were read")
    monkeypatch.setattr(GPT, "from_pretrained", no_weights)
    base = load_base(cfg)
    torch.manual_seed(5)  # the run's seed draws the weights
    fresh = GPT(shape)
    assert base.config == shape and all(torch.equal(a, b.to(a.dtype)) for a, b in
                                        zip(base.state_dict().values(), fresh.state_dict().values()))
