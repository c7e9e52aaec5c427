"""Nothing runs twice, nothing is orphaned, a failing plan says why: one process per run and per plan (a lock the
kernel releases however its holder ends), a plan runner's jobs die with it, and a plan whose jobs fail exits
with an error naming each and the last line of its log."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.plans.__main__ import main as plans_main
from experiments.run import main as run
from minigpt.io import ProcessLock
from test_experiment_run import gpt2_vocab_dir, tiny  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]


def holder(lock: Path) -> subprocess.Popen:
    """Another process that takes `lock` and keeps it until killed."""
    code = ("import sys, time; from minigpt.io import ProcessLock\n"
            f"with ProcessLock(__import__('pathlib').Path({str(lock)!r}), 'x'):\n"
            "    print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_by_name_and_a_killed_holder_blocks_nothing(tmp_path):
    proc = holder(tmp_path / "lock")
    try:
        with pytest.raises(SystemExit, match=f"the run r is already running \\(pid {proc.pid}: "):
            with ProcessLock(tmp_path / "lock", "the run r"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops the lock with the process
        proc.wait()
    with ProcessLock(tmp_path / "lock", "the run r"):  # taken over at once
        assert f"pid {os.getpid()}" in (tmp_path / "lock").read_text()


def test_the_same_run_started_twice_is_refused_while_the_first_lives(tmp_path, gpt2_vocab_dir):
    args = tiny(tmp_path, gpt2_vocab_dir)
    from experiments.config import parse_cli
    name = parse_cli(args).run_name
    proc = holder(tmp_path / "runs" / name / "lock")  # as a first `make experiment` holds it while training
    try:
        with pytest.raises(SystemExit, match=f"the run {name} is already running"):
            run(args)
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "results" / name).exists()  # the refused start wrote nothing
    assert run(args)["n_test"] == 3  # once the first is gone the run goes ahead


def test_a_plan_runners_jobs_die_with_it_even_on_kill_9(tmp_path):
    marker = tmp_path / "job-heard-sigterm"
    job = (f"import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').write('x'), "
           "sys.exit(0))); print('up', flush=True); time.sleep(60)")
    code = ("import sys; from pathlib import Path; from experiments.plans import Job, run_jobs\n"
            f"run_jobs([Job('j', [sys.executable, '-c', {job!r}], Path({str(tmp_path)!r}) / 'done', 60)], "
            f"Path({str(tmp_path)!r}), 1, None, poll=0.1)")
    runner = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    log = tmp_path / "logs" / "j.log"
    for _ in range(300):
        if log.exists() and "up" in log.read_text():
            break
        time.sleep(0.1)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    for _ in range(100):  # the kernel sends the orphan SIGTERM, on which a training job saves and stops
        if marker.exists():
            break
        time.sleep(0.1)
    assert marker.exists()


def test_a_plan_whose_jobs_fail_exits_with_an_error_naming_them_and_why(tmp_path):
    plan = {"sizes": [{"name": "s", "checkpoint": str(tmp_path / "no-such-model")}],
            "evals": [{"task": "e2e", "method": "prefix", "lrs": [1e-3], "seeds": [0]}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(SystemExit) as e:
        plans_main(["run", str(tmp_path / "plan.json"), "--out", str(tmp_path / "out")])
    message = str(e.value)
    assert message.startswith("error: 1 of 1 jobs failed: s-e2e-prefix-lr0.001-seed0 (") and "no-such-model" in message
    assert str(tmp_path / "out" / "logs" / "s-e2e-prefix-lr0.001-seed0.log") in message and "\n" not in message


BAD = {"half-written": ('{"bleu": 51.2, "ni', "cut short or not JSON"),
       "foreign": ('{"bleu": 50.0, "nist": 7.0}', None),  # another tool's record: no machine, no commit: reported
       "nan": ('{"bleu": NaN, "nist": 7.0}', "bleu = nan, not a finite number"),
       "list": ("[1, 2]", "holds a list, not an object")}


@pytest.mark.parametrize("case", BAD)
def test_a_report_skips_a_bad_run_folder_by_name_or_fails_on_it_when_strict(tmp_path, case, capsys):
    from experiments import results
    from experiments.config import load_config
    from experiments.reports.sweeps import main as plots
    text, why = BAD[case]
    for seed, name in ((0, "good"), (1, "bad")):
        cfg = load_config(overrides={"seed": seed})
        d = tmp_path / "results" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(cfg.to_dict()))
        (d / "metrics.json").write_text(json.dumps({"bleu": 50.0, "nist": 7.0, "commit": "abc", "machine": {
            "cpus": 2, "processor": "x86_64", "torch": "2.13"}}) if name == "good" else text)
    (tmp_path / "results" / "no-config").mkdir()
    (tmp_path / "results" / "no-config" / "metrics.json").write_text('{"bleu": 40.0}')
    plots(["--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert f"warning: skipped {tmp_path / 'results' / 'no-config'}: no config.json" in err
    report = (tmp_path / "results" / "RESULTS.md").read_text()
    if why is None:  # readable: reported, its machine unrecorded
        assert "2 runs" in report and "unrecorded machine" in report
        return
    assert f"warning: skipped {tmp_path / 'results' / 'bad'}: " in err and why in err and "1 runs" in report
    with pytest.raises(SystemExit, match=f"error: {tmp_path / 'results' / 'bad'}: .*{why}"):
        plots(["--results", str(tmp_path / "results"), "--strict"])
    results.STRICT = False


def test_the_same_run_under_two_folder_names_counts_once(tmp_path, capsys):
    from experiments.config import load_config
    from experiments.reports.sweeps import load_results
    for name in ("a", "b"):
        cfg = load_config(overrides={"name": name})  # a bookkeeping setting: the same run
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg.to_dict()))
        (tmp_path / name / "metrics.json").write_text('{"bleu": 50.0}')
    assert [r["run"] for r in load_results(tmp_path)] == ["a"]
    assert f"{tmp_path / 'b'} is the same run as {tmp_path / 'a'}" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"n_head": 3}, "config.json: n_embd=32 is not divisible by n_head=3"),
    ({"model_type": "llama"}, "config.json has model_type='llama'; only 'gpt2'"),
    ({"n_embd": "32"}, "config.json: "),
])
def test_a_model_config_this_model_cannot_take_is_named_in_one_line(tmp_path, gpt2_vocab_dir, change, message):
    import shutil
    model = tmp_path / "model"
    shutil.copytree(gpt2_vocab_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(SystemExit) as e:
        run(tiny(tmp_path, model))
    assert message in str(e.value) and str(model) in str(e.value) and "\n" not in str(e.value)


def test_a_device_this_machine_lacks_is_refused_before_anything_loads(tmp_path, gpt2_vocab_dir, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only machine
    with pytest.raises(SystemExit, match="--device=cuda: cuda is not available here .*use --device=cpu"):
        run(tiny(tmp_path, gpt2_vocab_dir, "--device=cuda"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "adapter_config.json").write_text('{"peft_type": "PREFIX_'), "adapter_config.json is not valid JSON"),
    (lambda d: (d / "adapter_config.json").write_text('{"peft_type": "PREFIX_TUNING", "num_virtual_tokens": "4"}'),
     "is not a PEFT adapter config"),
    (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x10\x00"), "adapter_model.safetensors cannot be read"),
])
def test_a_damaged_peft_adapter_is_named_with_its_file(tiny_dir, tmp_path, damage, message):
    from minigpt import GPT
    from prefix import PrefixConfig, PrefixFileError, PrefixTuner
    PrefixTuner(GPT.from_pretrained(tiny_dir), PrefixConfig(4)).save_peft(tmp_path)
    damage(tmp_path)
    with pytest.raises(PrefixFileError, match=message):
        PrefixTuner.from_peft(tmp_path, GPT.from_pretrained(tiny_dir))


@pytest.mark.parametrize("plan, message", [
    ([1, 2], "the file needs a JSON object"),
    ({"sizes": [{"checkpoint": "c"}], "evals": [{}]}, "sizes\\[0\\] needs an object with a \"name\""),
    ({"sizes": [{"name": "s", "checkpoint": "c"}], "evals": []}, "'evals' needs a non-empty list"),
    ({"sizes": [{"name": "s", "checkpoint": "c"}], "evals": [{"task": "e2e", "method": "prefix", "seeds": [0],
                                                             "lrs": "1e-3"}]}, "evals\\[0\\] needs \"lrs\""),
    ({"sizes": [{"name": "s", "checkpoint": "c"}], "evals": [{"task": "e2e", "method": "prefix", "lrs": [1e-3],
                                                             "seeds": [0.5]}]}, "evals\\[0\\] needs \"seeds\""),
    ({"sizes": [{"name": "s", "checkpoint": "c"}], "evals": [{"task": "e2e", "lrs": [1e-3], "seeds": [0]}]},
     "evals\\[0\\] needs a 'method'"),
])
def test_a_plan_with_a_missing_or_mistyped_field_names_it(tmp_path, plan, message):
    from experiments.plans import load_plan
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(SystemExit, match=f"plan {tmp_path / 'plan.json'}: {message}"):
        load_plan(tmp_path / "plan.json")


def test_a_training_state_resumes_only_under_the_run_that_saved_it(tmp_path):
    """A run's record edited by hand (or its data replaced) no longer matches the record saved in its training
    state: resuming would mix two runs, so it is refused with the differences."""
    from types import SimpleNamespace

    from experiments.train import LMObjective, fit
    from test_experiment_train import CFG, setup
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = {"settings": {"lr": 0.01, "model": "a", "seed": 0}, "inputs": {"model": "m1", "data": "d1"}}
    (run_dir / "run.json").write_text(json.dumps(record))
    model, tuner, pairs = setup()
    fit(tuner, LMObjective(model, 0), pairs, pairs[:4], SimpleNamespace(**{**CFG, "epochs": 1}), run_dir,
        log=lambda x: None)
    for edit, message in (({"settings": {**record["settings"], "lr": 0.1}}, "lr 0.01 -> 0.1"),
                          ({"inputs": {**record["inputs"], "data": "d2"}}, "the data files changed")):
        (run_dir / "run.json").write_text(json.dumps({**record, **edit}))
        model, tuner, pairs = setup()
        with pytest.raises(SystemExit, match=f"state.pt was saved by a run with other settings or files \\({message}"):
            fit(tuner, LMObjective(model, 0), pairs, pairs[:4], SimpleNamespace(**CFG), run_dir, log=lambda x: None)
    moved = {**record, "settings": {**record["settings"], "model": "b"}}  # the same model files, moved
    (run_dir / "run.json").write_text(json.dumps(moved))
    model, tuner, pairs = setup()
    assert fit(tuner, LMObjective(model, 0), pairs, pairs[:4], SimpleNamespace(**CFG), run_dir,
               log=lambda x: None)["epochs_run"] == 2  # resumed after epoch 1, and finished


@pytest.mark.parametrize("setting", ["results_dir", "runs_dir"])
def test_a_folder_that_cannot_be_written_is_refused_before_training(tmp_path, gpt2_vocab_dir, setting):
    (tmp_path / "a-file").write_text("not a folder")  # as a read-only or full disk refuses the write
    with pytest.raises(SystemExit, match=f"cannot write .* under {tmp_path / 'a-file'} .*--{setting}="):
        run(tiny(tmp_path, gpt2_vocab_dir, f"--{setting}={tmp_path / 'a-file'}"))


def test_a_disk_that_fills_up_during_training_keeps_the_state_and_says_how_to_finish(tmp_path, gpt2_vocab_dir,
                                                                                     monkeypatch):
    import errno

    from experiments import run as run_mod

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(run_mod, "write_results", full)
    with pytest.raises(SystemExit, match="results cannot be written .*No space left on device.*rerun the same command"):
        run(tiny(tmp_path, gpt2_vocab_dir))
    monkeypatch.undo()
    assert run(tiny(tmp_path, gpt2_vocab_dir))["n_test"] == 3  # room again: the same command finishes the run


def pretraining_args(tmp_path, *extra):
    from test_mixture import tiny as tiny_mixture
    return tiny_mixture(tmp_path, tmp_path / "run", *extra)


@pytest.mark.parametrize("content, message", [(b"\xff\xfe\x00binary", "is not UTF-8 text"),
                                              (b"text\x00with NUL", "holds NUL bytes")])
def test_a_binary_file_given_as_text_is_named(tmp_path, content, message):
    from minigpt.pretraining import main as pretrain
    (tmp_path / "book.txt").write_bytes(content)
    with pytest.raises(SystemExit, match=f"{tmp_path / 'book.txt'} {message}"):
        pretrain(["--corpus", str(tmp_path / "book.txt"), "--out", str(tmp_path / "run"), "--cache-dir",
                  str(tmp_path / "cache"), "--device", "cpu"])


def test_pretraining_resumes_only_on_the_text_it_was_trained_on(tmp_path):
    from minigpt.pretraining import main as pretrain
    args = pretraining_args(tmp_path)  # (writes the corpus)
    assert pretrain(args + ["--stop-after-steps", "3"]) == {}
    with open(tmp_path / "one" / "train.jsonl", "a") as f:  # the corpus changes between the two commands
        f.write(json.dumps({"text": "one more document, added later"}) + "\n")
    with pytest.raises(SystemExit, match="--resume: the text of source\\(s\\) one changed since"):
        pretrain(args + ["--resume"])


def test_a_finished_pretraining_run_is_extended_only_on_purpose(tmp_path):
    from minigpt.pretraining import main as pretrain
    assert pretrain(pretraining_args(tmp_path))["tokens_seen"] == 6 * 4 * 32
    longer = [a if a != "6" else "9" for a in pretraining_args(tmp_path)]  # --max-steps 9
    with pytest.raises(SystemExit, match="max_steps: was 6, now 9; to train it further on purpose, add --extend"):
        pretrain(longer + ["--resume"])
    assert pretrain(longer + ["--resume", "--extend"])["tokens_seen"] == 9 * 4 * 32
