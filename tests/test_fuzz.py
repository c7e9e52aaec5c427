"""Fuzzing where input enters: every setting of `make experiment` with odd values, `generate()` with odd arguments,
and plans with fields dropped or retyped. Each must give a usable result or one clear error (a one-line SystemExit
for the command line and plans, a ValueError for the API), never a traceback from deep inside. Seeded: the same
cases every run, a few seconds in all."""
from __future__ import annotations

import json
import random

import pytest
import torch

from experiments.config import default_values, parse_cli
from experiments.plans import load_plan
from minigpt import GPT, GPTConfig

ODD = ["", " ", "nan", "-1", "0", "1.5", "1e999", "-0", "[", "[]", "[0,0]", "[99]", "null", "true", "x" * 80, "é",
       "1,2", "{}", "0x10", "\n"]


def one_line_error_or_config(args: list[str]) -> None:
    try:
        parse_cli(args)
    except SystemExit as e:
        message = str(e)
        assert message.startswith("error: ") and "\n" not in message, (args, message)


@pytest.mark.parametrize("key", sorted(default_values()))
def test_every_setting_takes_odd_values_with_a_config_or_one_line_error(key):
    for value in ODD:
        one_line_error_or_config([f"--{key}={value}"])


def test_random_combinations_of_odd_settings(tmp_path):
    rng, keys = random.Random(0), sorted(default_values())
    for _ in range(300):
        args = [f"--{rng.choice(keys)}={rng.choice(ODD)}" for _ in range(rng.randint(1, 4))]
        one_line_error_or_config(args)


def test_generate_takes_odd_arguments_with_ids_or_a_value_error():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=101, n_positions=32, n_layer=1, n_head=2, n_embd=16)).eval()
    pools = {  # (usable values, odd ones)
        "max_new_tokens": ([0, 1, 3], [-1, 2.5, 10**6, None, "3"]), "num_beams": ([1, 2], [0, 1.0, True]),
        "do_sample": ([False, True], []), "temperature": ([1.0, 0.5], [0.0, -1.0, float("nan"), float("inf")]),
        "top_k": ([None, 1, 5], [0, 2.5]), "top_p": ([None, 0.9, 1.0], [0.0, 1.5, float("nan")]),
        "length_penalty": ([1.0, 0.0], [float("inf")]), "min_new_tokens": ([0, 2], [-1, 1.5]),
        "eos_token_id": ([None, 0, 100], [101, -1]), "pad_token_id": ([None, 0], [10**9])}
    prompts = [torch.tensor([[1, 2, 3]]), torch.randint(0, 101, (2, 5)), torch.tensor([[1.0, 2.0]]),
               torch.tensor([1, 2]), torch.randint(0, 101, (2, 31)), torch.tensor([[200]])]
    rng, outcomes = random.Random(0), {"ok": 0, "refused": 0}
    for _ in range(300):
        kwargs = {k: rng.choice(bad if bad and rng.random() < 0.1 else good) for k, (good, bad) in pools.items()
                  if rng.random() < 0.5}
        new = kwargs.pop("max_new_tokens", 3)
        prompt = rng.choice(prompts[:2] if rng.random() < 0.7 else prompts)
        try:
            out = model.generate(prompt, new, **kwargs)
        except ValueError as e:
            assert str(e) and "\n" not in str(e), (kwargs, e)
            outcomes["refused"] += 1
            continue
        assert out.shape[0] == prompt.shape[0] and out.shape[1] <= prompt.shape[1] + new
        outcomes["ok"] += 1
    assert min(outcomes.values()) > 20  # both kinds of case were exercised


def test_plans_with_fields_dropped_or_retyped_load_or_name_the_field(tmp_path):
    good = {"sizes": [{"name": "s", "checkpoint": "ckpt"}],
            "evals": [{"task": "e2e", "method": "prefix", "lrs": [1e-3, 3e-3], "seeds": [0, 1],
                       "args": {"epochs": 2}, "later_seeds": "chosen_lr"}]}
    odd = [None, 0, -1, 1.5, "x", [], [None], {}, True]
    rng = random.Random(0)
    path = tmp_path / "plan.json"
    for _ in range(200):
        plan = json.loads(json.dumps(good))
        where = rng.choice([plan, plan["sizes"][0], plan["evals"][0]])
        key = rng.choice(list(where))
        if rng.random() < 0.3:
            del where[key]
        else:
            where[key] = rng.choice(odd)
        path.write_text(json.dumps(plan))
        try:
            load_plan(path)
        except SystemExit as e:
            assert str(e).startswith(f"plan {path}") and "\n" not in str(e), (plan, str(e))


@pytest.mark.parametrize("args", [["--lr=nan"], ["--method=lora", "--lora_targets=q,c_attn"], ["--depth=[", "--x=1"],
                                  ["--top_layers=0", "--method=fttop"]])
def test_the_command_line_prints_one_line_and_no_traceback(args):
    import subprocess
    import sys
    from pathlib import Path
    done = subprocess.run([sys.executable, "-m", "experiments.run", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
