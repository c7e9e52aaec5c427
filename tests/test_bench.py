"""The benchmark runs end to end in its smoke mode and records what RESULTS.md reports (no timing claims)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_experiment_run import gpt2_vocab_dir  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_times_every_setting_and_decodes_like_transformers():
    out = subprocess.run([sys.executable, "-m", "bench.bench", "--quick", "--no-memory"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    path = next(line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("results: "))
    results = json.loads(Path(path).read_text())["results"]
    train = [r for r in results.values() if r["setting"]["part"] == "train"]
    decode = [r for r in results.values() if r["setting"]["part"] == "decode"]
    assert len(train) == 4 and len(decode) == 4  # fp32/bf16 x (all, target) and x (greedy, beam 5)
    for r in train:
        sides = {"ours", "peft"} | ({"ours_autocast"} if r["setting"]["precision"] == "bf16" else set())
        assert set(r["seconds"]) == sides and all(t > 0 for t in r["seconds"].values())
        ours, peft = r["flops"]["ours"], r["flops"]["peft"]
        if r["setting"]["loss"] == "all":  # the same arithmetic, less the logits of each row's last token
            assert 0.9 * peft < ours <= peft
        else:  # logits only at the target half
            assert ours < 0.9 * peft
    for r in decode:
        assert set(r["seconds"]) == {"ours", "hf", "peft"}
        if r["setting"]["precision"] == "fp32":
            assert r["same_tokens_ours_hf"], r["setting"]  # prefix-conditioned decoding, token for token
    assert "| tiny | fp32 | 1 |" in out.stdout  # the tables are printed
    for r in results.values():  # each row names the run that measured it, and the tables say so
        assert r["command"] == "python -m bench.bench --quick --no-memory" and r["date"], r["setting"]
    assert "Runs (last column of the tables): 1 = `python -m bench.bench --quick --no-memory`" in out.stdout


def test_decode_bench_decodes_a_runs_test_set_every_way_alike(tmp_path, gpt2_vocab_dir, capsys):
    from test_experiment_run import tiny

    from bench.decode import main as bench_decode
    from experiments.config import parse_cli
    from experiments.run import main as run

    args = tiny(tmp_path, gpt2_vocab_dir, "--max_test=4")
    run(args)
    folder = tmp_path / "runs" / parse_cli(args).run_name
    capsys.readouterr()
    bench_decode(["--run", str(folder), "--max-test", "4", "--repeats", "2", "--no-write"])
    row = json.loads(capsys.readouterr().out)
    assert row["items"] == 4 and row["num_beams"] == 2 and not row["bf16"]
    assert set(row["same_outputs"].values()) == {1.0}  # fp32: every way decodes every item identically
    assert all(len(s) == 2 and min(s) > 0 for s in row["seconds"].values())
    assert set(row["seconds"]) == {"drop settled rows", "every row to the end", "static cache", "static, compiled"}
    with pytest.raises(SystemExit, match="not a finished prefix run"):
        bench_decode(["--run", str(tmp_path), "--no-write"])


def test_jobs_bench_times_each_step_of_the_experiments_training_loop():
    cmd = [sys.executable, "-m", "bench.jobs", "--child", "--method", "prefix", "--precision", "fp32",
           "--task", "e2e", "--model", "checkpoints/minigpt-gutenberg", "--steps", "3",
           "--warmup", "1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    seconds = json.loads(out.stdout.strip().splitlines()[-1])["step_seconds"]
    assert len(seconds) == 3 and all(0 < s < 60 for s in seconds)  # the steps after the warm-up, one by one


def test_jobs_bench_table_compares_the_layouts_and_the_precisions():
    from bench.jobs import table
    row = dict(cpu="X", cores=2, method="finetune", date="d", command="c")
    rows = [{**row, "precision": "bf16", "alone_steps_per_s": 1.0, "shared_steps_per_s": 1.5},
            {**row, "precision": "fp32", "alone_steps_per_s": 2.0, "shared_steps_per_s": 3.0}]
    bf16, fp32 = table(rows).splitlines()[2:]
    assert "| 1.00 | 1.50 | 1.50× | 2.00× |" in bf16  # 2 runs side by side: 1.5x; fp32 twice bf16's speed
    assert "| 2.00 | 3.00 | 1.50× | – |" in fp32
