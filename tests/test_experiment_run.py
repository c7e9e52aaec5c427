"""`make experiment`'s code path end to end on a tiny model, and its refusals of bad settings."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import hf_model
from experiments.config import parse_cli
from experiments.provenance import git_commit
from experiments.run import main as run
from experiments.sweep import sweep_runs
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


def test_sweeps_cover_the_ablations():
    runs = sweep_runs(["length", "depth", "reparam", "baselines"], 10)
    assert [r["prefix_len"] for r in runs if set(r) == {"prefix_len"}] == [1, 2, 5, 10, 20, 40]
    assert {r["prefix_len"] for r in runs if r.get("depth") == "embedding"} == {1, 10, 20}
    assert {"prefix_len": 10, "reparam": "direct", "lr": 0.1} in runs  # a free table needs a larger step
    assert any(r.get("method") == "finetune" for r in runs) and {"prefix_len": 10, "random_init": True} in runs
    assert len(runs) == len({json.dumps(r, sort_keys=True) for r in runs})  # no run twice


def test_sweep_runs_settings_two_at_a_time(tmp_path, gpt2_vocab_dir, capfd):
    from experiments.sweep import main as sweep
    args = tiny(tmp_path, gpt2_vocab_dir)
    sweep([*args, "--sweeps=reparam", "--seeds=0", "--jobs=2"])
    names = [parse_cli([*args, *extra, "--seed=0"]).run_name for extra in ([], ["--reparam=direct"])]
    for name in names:  # each run in its own process, its output in its own file
        assert json.loads((tmp_path / "results" / name / "metrics.json").read_text())["seed"] == 0
        assert "trainable params" in (tmp_path / "runs" / f"{name}.out").read_text()
    out = capfd.readouterr().out  # what is left, as runs end, and a summary
    assert "[0/2 done] starting" in out and "[2/2 done] finished in" in out
    assert "sweep: 2 runs in" in out and "2 trained, 0 already done, 0 failed" in out
    sweep([*args, "--sweeps=reparam", "--seeds=0"])
    assert "0 trained, 2 already done, 0 failed" in capfd.readouterr().out


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
    assert "no run in" in capsys.readouterr().out


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
