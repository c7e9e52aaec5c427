"""The compiled paths checked against the eager ones on the device itself, in one process: decoding
(`decoder="static"` and `"compiled"`: the same tokens as the eager decoder, greedy and beam 5, with a
prefix, left padding and rows ending at different steps) and training (`CompiledLoss`: the same loss and
gradients as `GPT.target_loss`: prefix-tuning in fp32 and bf16 autocast, full fine-tuning in fp32). On a GPU it
also reports whether the compiled steps ran as CUDA graphs (inductor's count of skipped graphs).

    python -m bench.gpu_check                  # on the GPU (bench/gpu/run.sh runs it first)
    python -m bench.gpu_check --device cpu     # the same checks on the CPU (a dry run)

Prints one JSON line per check and a summary line; exits 1 if any check fails. The tests
(tests/test_static_decode.py, tests/test_compiled_step.py) make the same comparisons on the CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from minigpt import GPT, IGNORE
from minigpt.config import GPTConfig
from minigpt.fast.step import CompiledLoss
from minigpt.runtime import sync
from prefix import PrefixConfig, PrefixTuner

EOS = 7


def model(device: str, seed: int = 0) -> GPT:
    """A random model with GPT-2's vocabulary and a small body; end-of-text made likely."""
    torch.manual_seed(seed)
    net = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, n_positions=256)).to(device).eval()
    with torch.no_grad():
        net.transformer.wte.weight[EOS] *= 4
    return net


def prompts(device: str, rows: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(5, 30, (rows,), generator=g).tolist()
    T = max(lengths)
    ids = torch.full((rows, T), EOS, dtype=torch.long)
    mask = torch.zeros(rows, T, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, T - n:], mask[i, T - n:] = torch.randint(100, 50000, (n,), generator=g), 1
    return ids.to(device), mask.to(device)


def timed(fn, device: str, repeats: int = 3) -> tuple[float, object]:
    """The median seconds of `fn()` over `repeats` calls, and its last result."""
    out, times = None, []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out


def check_decoding(device: str) -> list[dict]:
    base = model(device)
    tuner = PrefixTuner(base, PrefixConfig(num_virtual_tokens=10)).to(device).eval()
    ids, mask = prompts(device)
    rows = []
    for beams in (1, 5):
        kw = dict(attention_mask=mask, num_beams=beams, eos_token_id=EOS, bad_token_ids=[198])
        out, seconds = {}, {}
        for decoder in ("eager", "static", "compiled"):
            tuner.generate(ids, 64, decoder=decoder, **kw)  # warm-up (compiles)
            seconds[decoder], out[decoder] = timed(lambda: tuner.generate(ids, 64, decoder=decoder, **kw), device)
        ended = [EOS in row for row in out["eager"][:, ids.shape[1]:].tolist()]
        rows.append({"check": f"decode beams={beams}", "ok": all(torch.equal(out[d], out["eager"]) for d in out),
                     "same_tokens": {d: torch.equal(out[d], out["eager"]) for d in out}, "rows_ended": sum(ended),
                     "new_tokens": out["eager"].shape[1] - ids.shape[1],
                     "seconds": {d: round(s, 4) for d, s in seconds.items()},
                     "speedup_compiled": round(seconds["eager"] / seconds["compiled"], 2)})
    return rows


def check_training(device: str) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(100, 50000, (8, 100), generator=g)
    labels = ids.clone()
    labels[:, :40] = IGNORE
    labels[3, 80:] = IGNORE
    for method, bf16 in (("prefix", False), ("prefix", True), ("finetune", False)):  # (compiling costs time)
        base = model(device).train()
        net = PrefixTuner(base, PrefixConfig(num_virtual_tokens=10)).to(device) if method == "prefix" else base
        params = [p for p in net.parameters() if p.requires_grad]
        compiled = CompiledLoss(net.hidden_states, base, rows=8)
        amp = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)
        with amp:
            eager = base.target_loss(net.hidden_states(ids.to(device)), labels.to(device), reduction="sum")
        want = torch.autograd.grad(eager, params)
        for _ in range(2):  # the second call replays (a CUDA graph on a GPU)
            with amp:
                got = compiled(ids, labels)
            grads = torch.autograd.grad(got, params)
        tol = 2e-2 if bf16 else 1e-4
        loss_err = abs(got.item() - eager.item()) / abs(eager.item())
        grad_err = max(((a - b).norm() / b.norm()).item() for a, b in zip(grads, want))
        rows.append({"check": f"train {method} {'bf16' if bf16 else 'fp32'}",
                     "ok": loss_err < tol and grad_err < 10 * tol, "loss_relative_error": loss_err,
                     "grad_relative_error": grad_err, "buckets": len(compiled.shapes)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    from torch._dynamo.utils import counters
    rows = check_decoding(args.device) + check_training(args.device)
    for r in rows:
        print(json.dumps(r), flush=True)
    summary = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
               "torch": torch.__version__, "all_ok": all(r["ok"] for r in rows),
               "cudagraph_skips": dict(counters["inductor"]).get("cudagraph_skips", 0)}
    print(json.dumps(summary), flush=True)
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
