"""Methods are a registry: the shipped ones resolve from a run's settings as before, and a new method is one
`Method` plus its registration: it trains, saves what it keeps, decodes, and appears in a study's report."""
from __future__ import annotations

import json

import pytest
import torch

from experiments import methods
from experiments.config import parse_cli
from experiments.methods import Method, method_for, register
from experiments.plans import collect, plan_jobs
from experiments.reports.study import markdown
from experiments.run import main as run
from minigpt.weights import read_state_dict
from test_experiment_run import gpt2_vocab_dir, tiny  # noqa: F401 (a fixture)


@pytest.mark.parametrize("args, name, core", [
    ([], "prefix", "prefix-len10-all-mlp"),
    (["--depth=embedding", "--reparam=direct"], "embedding", "prefix-len10-embedding-direct"),
    (["--position=infix"], "infix", "infix-len10-all-mlp"),
    (["--method=finetune"], "finetune", "finetune"),
    (["--method=fttop"], "fttop", "fttop2"),
    (["--method=lora"], "lora", "lora-r4-alpha32-q+v"),
    (["--method=adapter", "--adapter_size=70"], "adapter", "adapter70"),
])
def test_the_shipped_methods_resolve_from_the_settings(args, name, core):
    cfg = parse_cli(args)
    assert method_for(cfg).name == name and cfg.run_name == f"e2e-minigpt-gutenberg-{core}-seed0"
    assert cfg.model_dtype == ("float32" if name in ("finetune", "fttop") else "bfloat16")  # a frozen base may be bf16


def test_an_unknown_method_is_refused_with_the_registered_ones():
    with pytest.raises(SystemExit, match="METHOD \\(method\\) must be one of prefix, finetune, fttop, lora, adapter"):
        parse_cli(["--method=bitfit"])


class LayerNormTuning:
    """A toy method: only the final layer norm of the base trains; it is what a deployed run keeps."""

    @staticmethod
    def build(cfg, base, enc):
        base.requires_grad_(False)
        base.transformer.ln_f.requires_grad_(True)
        return base

    @staticmethod
    def keep(net, cfg, run_dir, scored_bf16) -> int:
        torch.save({k: v.detach().clone() for k, v in net.transformer.ln_f.state_dict().items()}, run_dir / "ln_f.pt")
        return sum(p.numel() for p in net.transformer.ln_f.parameters())


@pytest.fixture
def lnf():
    method = register(Method("lnf", "final layer norm only", LayerNormTuning.build, name_core=lambda cfg: "lnf",
                             frozen_base=False, keep=LayerNormTuning.keep))
    yield method
    del methods.REGISTRY["lnf"]


def test_a_new_method_trains_saves_decodes_and_appears_in_a_report(tmp_path, gpt2_vocab_dir, lnf):
    plan = {"sizes": [{"name": "tiny", "checkpoint": str(gpt2_vocab_dir)}],
            "evals": [{"task": "e2e", "method": "lnf", "lrs": [0.01], "seeds": [0], "args": {
                k[2:].split("=")[0]: k.split("=", 1)[1] for k in tiny(tmp_path, gpt2_vocab_dir)
                if not k.startswith(("--model", "--results_dir", "--runs_dir"))}}]}
    out = tmp_path / "study"
    [job] = plan_jobs(plan, out)  # the plan's command, run here (a registration lives in this process)
    metrics = run(job.cmd[3:])
    cfg = parse_cli([a for a in job.cmd[3:] if not a.startswith("--name=")])  # named by its settings
    n_embd = json.loads((gpt2_vocab_dir / "config.json").read_text())["n_embd"]
    assert metrics["trainable_params"] == metrics["kept_params"] == 2 * n_embd  # weight and bias of ln_f
    trained = torch.load(out / "runs" / job.name / "ln_f.pt")
    before = read_state_dict(gpt2_vocab_dir)
    assert not torch.equal(trained["weight"], before["transformer.ln_f.weight"].float())  # it trained
    predictions = (out / "results" / job.name / "predictions.txt").read_text().splitlines()
    assert len(predictions) == metrics["n_test"] == 3 and cfg.run_name.endswith("-lnf-n12-seed0")
    result = collect(plan, out)
    assert [(r["method"], r["chosen_lr"], r["n"]) for r in result["table"]] == [("lnf", 0.01, 1)]
    text = markdown({**result, "models": []}, out, "A toy study")
    assert "| tiny | lnf | 0.01 |" in text and f"{2 * n_embd:,} / {2 * n_embd:,}" in text
