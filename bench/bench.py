"""Prefix-tuning speed and peak memory: minigpt + prefix against transformers + peft, side by side.

    python -m bench.bench                       # everything on this machine (CPU: about an hour on 2 cores)
    python -m bench.bench --quick               # smoke run: a tiny shape, small batches, nothing written to bench/
    python -m bench.bench --models gpt2 --parts train --precisions bf16   # a subset; merges into the JSON
    python -m bench.bench --report              # rewrite the tables of bench/RESULTS.md from the JSON files

Both sides load the same random-weight checkpoint (written once under .cache/bench/). Timing: the sides
run in one process, alternating (the order flips every repeat), after warm-up; medians of --repeats.
Peak memory: on CPU, a fresh child process per setting and side, peak RSS while it trains or decodes
(counter reset after loading) minus its RSS after imports; on GPU, torch.cuda.max_memory_allocated.

Sides. Training (AdamW with fused=True on both sides, as transformers' Trainer by default): `ours` =
PrefixTuner called as a user would, `net(input_ids=ids, labels=labels).loss` (logits only at the target
positions, a chunk of rows at a time; experiments/train.py uses the same loss); in bf16 the frozen base is stored in bf16 (`GPT.from_pretrained(...,
dtype=torch.bfloat16)`) and the prefix stays fp32; on CPU its frozen linear layers run on oneDNN
(minigpt/fast/linear.py) and its GELU, attention softmax and loss run as compiled kernels (minigpt/fast/kernels.py).
`ours_autocast` = fp32 weights under bf16 autocast,
the recipe `peft` gets: PeftModel(GPT2LMHeadModel) with `labels` (-100 = ignored). Decoding: `ours` =
PrefixTuner.generate; `hf` = GPT2LMHeadModel.generate with PEFT's prefix passed as a pre-filled cache
(prefix-conditioned: the fair reference); `peft` = PeftModel.generate, what users call (with
transformers 5.24 it ignores the prefix: the `conditioned` column says whether its tokens equal `hf`'s).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")
import peft  # noqa: E402
import transformers  # noqa: E402

from bench.sections import write_section  # noqa: E402
from minigpt import fast  # noqa: E402
from minigpt import GPT, IGNORE  # noqa: E402
from minigpt.io import atomic_write  # noqa: E402
from minigpt.runtime import matmul_peak, sync  # noqa: E402
from minigpt.config import PRESETS  # noqa: E402
from minigpt.fast.step import CompiledLoss  # noqa: E402
from prefix import PrefixConfig, PrefixTuner  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parent.parent
PREFIX_LEN, HIDDEN = 10, 512  # HIDDEN: the paper's MLP width, on both sides
FULL = dict(models=["gpt2", "gpt2-medium"], batch=8, seq=128, prompt=32, new=64, repeats=5, warmup=2,
            decode_repeats=3, projections=[False, True])
QUICK = dict(models=["tiny"], batch=2, seq=32, prompt=8, new=8, repeats=2, warmup=1, decode_repeats=2,
             projections=[False])
TINY = (2, 4, 128)  # (n_layer, n_head, n_embd) of --quick's shape
BF16 = torch.bfloat16


# ---------------------------------------------------------------- models

def checkpoint(model: str, device: str = "cpu") -> Path:
    """A random GPT-2 checkpoint of this shape (transformers format, dropout 0), written once."""
    d = ROOT / ".cache" / "bench" / model
    if not (d / "config.json").exists():
        n_layer, n_head, n_embd = PRESETS.get(model, TINY)
        cfg = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        torch.manual_seed(0)
        with torch.device(device):  # initializing on a GPU is quicker
            transformers.GPT2LMHeadModel(cfg).save_pretrained(d)
    return d


def recipe(side: str, s: dict) -> tuple[torch.dtype, bool]:
    """(dtype of the stored base weights, bf16 autocast?) of one side in one setting."""
    if s["precision"] == "fp32":
        return torch.float32, False
    if s["part"] == "decode" or side == "ours":
        return BF16, False  # decoding: every side loads bf16 weights; training: our frozen base in bf16
    return torch.float32, True  # peft and ours_autocast train fp32 weights under bf16 autocast


def build(side: str, s: dict, device: str):
    """(net, optimizer or None) for one side: our PrefixTuner or PEFT's PeftModel, prefix length 10."""
    dtype, _ = recipe(side, s)
    kw = dict(num_virtual_tokens=PREFIX_LEN, prefix_projection=s.get("projection", False), encoder_hidden_size=HIDDEN)
    torch.manual_seed(1)
    if side.startswith("ours"):
        base = fast.enable(GPT.from_pretrained(checkpoint(s["model"], device), dtype=dtype, device=device))
        net = PrefixTuner(base, PrefixConfig(**kw))
        if side == "ours_compiled" and s["part"] == "train":  # the loss experiments.train uses with compile=on
            net.compiled = CompiledLoss(net.hidden_states, base, rows=s.get("batch", FULL["batch"]))
    else:
        base = transformers.GPT2LMHeadModel.from_pretrained(checkpoint(s["model"], device), dtype=dtype).to(device)
        net = peft.get_peft_model(base, peft.PrefixTuningConfig(task_type="CAUSAL_LM", **kw))
    if s["part"] == "decode":
        return net.eval(), None
    return net.train(), torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4, fused=True)


def batch(s: dict, cfg: dict, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (B, T) and labels: all tokens, or IGNORE on the first half ("target": the text half)."""
    g = torch.Generator().manual_seed(0)
    T = s.get("seq", cfg["seq"]) if s["part"] == "train" else cfg["prompt"]
    ids = torch.randint(0, 50257, (s.get("batch", cfg["batch"]), T), generator=g)
    labels = ids.clone()
    if s.get("loss") == "target":
        labels[:, :T // 2] = IGNORE
    return ids.to(device), labels.to(device)


def run(side: str, net, opt, s: dict, data, new: int):
    """One training step (forward, backward, AdamW) or one `generate` call; returns generated ids."""
    ids, labels = data
    if s["part"] == "train":
        autocast = torch.autocast(ids.device.type, dtype=BF16) if recipe(side, s)[1] else nullcontext()
        with autocast:
            if side == "ours_compiled":  # the mean over targets, as the other sides' loss
                loss = net.compiled(ids, labels) / (labels[:, 1:] != IGNORE).sum()
            else:  # the loop a user writes on both sides; ours computes logits only where a target is
                loss = net(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return None
    B, T = ids.shape
    n = s["beams"]
    if side.startswith("ours"):
        return net.generate(ids, new, num_beams=n, decoder="compiled" if side == "ours_compiled" else "eager")[:, T:]
    kw = dict(max_new_tokens=new, num_beams=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    if side == "peft":
        return net.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)[:, T:]
    # hf: PEFT's prefix given to transformers as a pre-filled cache (one copy per beam); PREFIX_LEN
    # placeholder ids stand for the cached positions, so real tokens get positions P, P+1, ...
    full = torch.cat([ids.new_zeros(B, PREFIX_LEN), ids], 1)
    return net.get_base_model().generate(input_ids=full, attention_mask=torch.ones_like(full),
                                         past_key_values=net.get_prompt(B * n), **kw)[:, full.shape[1]:]


# ---------------------------------------------------------------- measurements

def settings(args, cfg: dict) -> list[dict]:
    """Every setting to time; with --batch/--seq (a shape other than the default), the shape is part of it."""
    shape = {}
    if args.batch and args.batch != cfg["batch"]:
        shape["batch"] = args.batch
    if args.seq and args.seq != cfg["seq"]:
        shape["seq"] = args.seq
    compiled = {"compiled": True} if args.compiled else {}
    out = []
    for model in args.models:
        for precision in args.precisions:
            if "train" in args.parts:
                out += [dict(part="train", model=model, precision=precision, projection=proj, loss=loss, **shape,
                             **compiled) for proj in cfg["projections"] for loss in ("all", "target")]
            if "decode" in args.parts:
                out += [dict(part="decode", model=model, precision=precision, beams=n,
                             **{k: v for k, v in shape.items() if k == "batch"}, **compiled) for n in (1, 5)]
    return out


def key(s: dict) -> str:
    return "/".join(f"{v}" if k in ("part", "model", "precision") else f"{k}={v}" for k, v in s.items())


def sides(s: dict) -> list[str]:
    extra = ["ours_compiled"] if s.get("compiled") else []  # experiments' compile=on path (default on a GPU)
    if s["part"] == "decode":
        return ["ours", "hf", "peft"] + extra
    return (["ours", "ours_autocast", "peft"] if s["precision"] == "bf16" else ["ours", "peft"]) + extra


def resident_bytes(net, opt) -> int:
    """Bytes held between steps: parameters, buffers, optimizer state (unique storages)."""
    ts = list(net.parameters()) + list(net.buffers())
    if opt is not None:
        ts += [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t)]
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in ts}.values())


def flops(side, net, opt, s, data, new) -> int:
    """Matmul/attention FLOPs of one step, as counted by torch.utils.flop_counter (which counts aten's
    matmuls: our oneDNN linear layers are switched off while counting; they do the same arithmetic)."""
    from torch.utils.flop_counter import FlopCounterMode
    with fast.switches(onednn=False), FlopCounterMode(display=False) as fc:
        run(side, net, opt, s, data, new)
    return fc.get_total_flops()


def time_group(group: list[dict], cfg: dict, device: str) -> dict[str, dict]:
    """Time settings that share models (same model/precision/projection): build each side once."""
    s0 = group[0]
    nets = {side: build(side, s0, device) for side in sides(s0) if side != "hf"}
    if s0["part"] == "decode":  # the same prefix on every side, so that generated tokens can be compared
        nets["ours"][0].encoder.load_state_dict(nets["peft"][0].prompt_encoder["default"].state_dict())
        nets["hf"] = nets["peft"]
    out = {}
    for s in group:
        data = batch(s, cfg, device)
        train = s["part"] == "train"
        res = dict(setting=s, tokens=data[0].shape[0] * (data[0].shape[1] - 1 if train else cfg["new"]), seconds={},
                   peak_mb={}, load_average=os.getloadavg()[0])
        with nullcontext() if train else torch.no_grad():
            for _ in range(cfg["warmup"] if train else 1):
                outs = {side: run(side, *nets[side], s, data, cfg["new"]) for side in sides(s)}
            times = {side: [] for side in sides(s)}
            for r in range(cfg["repeats"] if train else cfg["decode_repeats"]):
                for side in (sides(s) if r % 2 == 0 else sides(s)[::-1]):
                    sync(device)
                    t0 = time.perf_counter()
                    run(side, *nets[side], s, data, cfg["new"])
                    sync(device)
                    times[side].append(time.perf_counter() - t0)
            res["seconds"] = {side: statistics.median(t) for side, t in times.items()}
            if not train:
                res["same_tokens_ours_hf"] = bool(torch.equal(outs["ours"], outs["hf"]))
                if "ours_compiled" in outs:
                    res["same_tokens_compiled_hf"] = bool(torch.equal(outs["ours_compiled"], outs["hf"]))
                res["peft_conditioned"] = bool(torch.equal(outs["peft"], outs["hf"]))
            else:
                res["flops"] = {side: flops(side, *nets[side], s, data, cfg["new"]) for side in ("ours", "peft")}
            if device == "cuda":  # peak above what is resident, plus this side's own resident bytes
                for side in sides(s):
                    sync(device)
                    torch.cuda.reset_peak_memory_stats()
                    before = torch.cuda.memory_allocated()
                    run(side, *nets[side], s, data, cfg["new"])
                    sync(device)
                    extra = torch.cuda.max_memory_allocated() - before
                    res["peak_mb"][side] = (extra + resident_bytes(*nets[side])) / 2**20
        print(json.dumps({k: v for k, v in res.items() if k != "setting"} | {"key": key(s)}), flush=True)
        out[key(s)] = res
    del nets
    gc.collect()
    return out


def rss_mb(field: str) -> float:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def child(spec: str) -> None:
    """Run one side of one setting in this fresh process; print the peak RSS above the import baseline."""
    side, s, cfg = json.loads(spec)
    base = rss_mb("VmRSS")
    net, opt = build(side, s, "cpu")
    data = batch(s, cfg, "cpu")
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    with torch.no_grad() if s["part"] == "decode" else nullcontext():
        for _ in range(2):
            run(side, net, opt, s, data, cfg["new"])
    print(json.dumps({"peak_mb": rss_mb("VmHWM") - base, "import_mb": base}))


def cpu_memory(s: dict, cfg: dict) -> dict[str, float]:
    out = {}
    for side in sides(s):
        if s["part"] == "decode" and side == "peft":
            continue  # PeftModel.generate and the hf reference decode the same base; not worth a process
        r = subprocess.run([sys.executable, "-m", "bench.bench", "--threads", str(torch.get_num_threads()),
                            "--child", json.dumps([side, s, cfg])],
                           cwd=ROOT, capture_output=True, text=True, check=True)
        out[side] = json.loads(r.stdout.strip().splitlines()[-1])["peak_mb"]
    return out


def machine(device: str) -> dict:
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        from experiments.provenance import cpu_name
        name = cpu_name() or platform.processor()
        name += f", {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    return dict(device=device, name=name, python=platform.python_version(), torch=torch.__version__,
                transformers=transformers.__version__, peft=peft.__version__,
                load_average=os.getloadavg()[0], date=time.strftime("%Y-%m-%d %H:%M"),
                peak_gflops={"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(BF16, device)})


# ---------------------------------------------------------------- report

def runs(rows: list[dict]) -> list[tuple[str, str]]:
    """The (command, date) of the runs that measured `rows`, in order of first appearance."""
    return list(dict.fromkeys((r["command"], r["date"]) for r in rows))


def table(rows: list[dict], mach: dict) -> list[str]:
    """Markdown tables: training, then decoding; throughput in tokens/s (B x (T-1) or B x new tokens); the
    last column numbers the run that measured the row (`runs`)."""
    def cells(*xs):
        return "| " + " | ".join(xs) + " |"

    run_no = {run: str(i + 1) for i, run in enumerate(runs(rows))}

    def n(x):
        return "–" if x is None else f"{x:,.0f}"

    train = [r for r in rows if r["setting"]["part"] == "train"]
    decode = [r for r in rows if r["setting"]["part"] == "decode"]
    out = []
    if train:
        out += [cells("model", "batch", "precision", "MLP", "loss on", "ours tok/s", "PEFT tok/s", "ours / PEFT",
                      "ours, autocast tok/s", "ours compiled tok/s", "compiled / PEFT", "ours % of peak",
                      "compiled % of peak", "ours peak MB", "PEFT peak MB", "run"), "|---" * 16 + "|"]
        for r in train:
            s, m = r["setting"], r["peak_mb"]
            tps = {k: r["tokens"] / v for k, v in r["seconds"].items()}
            peak = r.get("peak_gflops", mach["peak_gflops"])[s["precision"]]  # as measured in the row's run
            pct = {k: f"{100 * r['flops']['ours'] / r['seconds'][k] / 1e9 / peak:.0f}%" if k in r["seconds"] else "–"
                   for k in ("ours", "ours_compiled")}  # the compiled side does the same arithmetic
            comp = f"**{tps['ours_compiled'] / tps['peft']:.2f}×**" if "ours_compiled" in tps else "–"
            shape = f"{s.get('batch', FULL['batch'])}×{s.get('seq', FULL['seq'])}"
            out.append(cells(s["model"], shape, s["precision"],
                             "yes" if s["projection"] else "no", s["loss"],
                             n(tps["ours"]), n(tps["peft"]), f"**{tps['ours'] / tps['peft']:.2f}×**",
                             n(tps.get("ours_autocast")), n(tps.get("ours_compiled")), comp, pct["ours"],
                             pct["ours_compiled"], n(m.get("ours")), n(m.get("peft")), run_no[r["command"], r["date"]]))
        out.append("")
    if decode:
        out += [cells("model", "precision", "beams", "ours tok/s", "hf + prefix cache tok/s", "ours / hf",
                      "same tokens", "ours compiled tok/s", "compiled / hf", "same tokens (compiled)",
                      "PeftModel.generate tok/s", "it uses the prefix", "ours peak MB", "hf peak MB", "run"),
                "|---" * 15 + "|"]
        for r in decode:
            s, m = r["setting"], r["peak_mb"]
            tps = {k: r["tokens"] / v for k, v in r["seconds"].items()}
            comp = f"**{tps['ours_compiled'] / tps['hf']:.2f}×**" if "ours_compiled" in tps else "–"
            same = {True: "yes", False: "no", None: "–"}[r.get("same_tokens_compiled_hf")]
            out.append(cells(s["model"], s["precision"], str(s["beams"]), n(tps["ours"]), n(tps["hf"]),
                             f"**{tps['ours'] / tps['hf']:.2f}×**", "yes" if r["same_tokens_ours_hf"] else "no",
                             n(tps.get("ours_compiled")), comp, same,
                             n(tps["peft"]), "yes" if r["peft_conditioned"] else "**no**",
                             n(m.get("ours")), n(m.get("hf")), run_no[r["command"], r["date"]]))
    return out


def device_results() -> list[Path]:
    """This benchmark's result files, one per device (bench/results-cpu.json, results-cuda.json); the other
    bench/results-*.json files belong to bench.decode and bench.jobs."""
    return [f for f in (ROOT / "bench" / "results-cpu.json", ROOT / "bench" / "results-cuda.json") if f.exists()]


def report(files: list[Path], md: Path) -> str:
    """Render the JSON result files; replace the generated part of `md` (between the markers)."""
    lines = []
    for f in files:
        data = json.loads(f.read_text())
        m, rows = data["machine"], list(data["results"].values())
        lines += [f"### {m['device'].upper()}: {m['name']}", "",
                  f"torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}, Python {m['python']}; "
                  f"latest run {m['date']}; measured matmul peak then {m['peak_gflops']['fp32']:,.0f} GFLOP/s fp32, "
                  f"{m['peak_gflops']['bf16']:,.0f} GFLOP/s bf16 (a row's % of peak uses the peak measured in its own run where recorded); load "
                  f"average at start {m['load_average']:.1f}.  ", "Runs (last column of the tables): "
                  + "; ".join(f"{i + 1} = `{c}` ({d})" for i, (c, d) in enumerate(runs(rows))), ""]
        lines += table(rows, m) + [""]
    text = "\n".join(lines)
    write_section(md, "GENERATED", text)
    return text


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shape and sizes; results go to a temp dir")
    ap.add_argument("--models", nargs="+", help="gpt2, gpt2-medium (default: both)")
    ap.add_argument("--parts", nargs="+", default=["train", "decode"], choices=["train", "decode"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, help="timed repeats per side (median reported)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes (CPU)")
    ap.add_argument("--no-timing", action="store_true", help="only (re)measure peak memory of timed settings")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=None,
                    help="also time our compiled path (compile=on: CUDA graphs on a GPU); default: on a GPU only")
    ap.add_argument("--batch", type=int, help="rows per batch (default 8; e.g. 32 with --seq 256: arithmetic-bound)")
    ap.add_argument("--seq", type=int, help="training sequence length (default 128)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    ap.add_argument("--out", type=Path, help="results JSON (default: bench/results-<device>.json)")
    ap.add_argument("--report", action="store_true", help="only rewrite bench/RESULTS.md from bench/results-*.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child)
    md = ROOT / "bench" / "RESULTS.md"
    if args.report:
        print(report(device_results(), md))
        return
    cfg = dict(QUICK if args.quick else FULL)
    args.models = args.models or cfg["models"]
    if args.compiled is None:
        args.compiled = args.device == "cuda"
    cfg["repeats"] = args.repeats or cfg["repeats"]
    out = args.out or (Path(tempfile.mkdtemp()) / "results.json" if args.quick
                       else ROOT / "bench" / f"results-{args.device}.json")
    data = json.loads(out.read_text()) if out.exists() else {"results": {}}
    data["machine"] = machine(args.device)
    command = "python -m bench.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    todo = settings(args, cfg)
    groups = {}
    for s in todo:  # settings that differ only in loss or beams share their models
        groups.setdefault((s["part"], s["model"], s["precision"], s.get("projection")), []).append(s)
    t0 = time.perf_counter()
    for group in tqdm(list(groups.values()), desc="bench", unit="group", dynamic_ncols=True):
        if args.no_timing:
            results = {key(s): data["results"][key(s)] for s in group}
        else:  # each row records the run that measured it
            results = time_group(group, cfg, args.device)
            for r in results.values():
                r.update(command=command, date=data["machine"]["date"], peak_gflops=data["machine"]["peak_gflops"])
        if args.device == "cpu" and not args.no_memory:
            for r in results.values():
                r["peak_mb"] = cpu_memory(r["setting"], cfg)
                print(key(r["setting"]), "peak MB", {k: round(v) for k, v in r["peak_mb"].items()}, flush=True)
        data["results"].update(results)
        text = json.dumps(data, indent=1)  # after each group, written whole, then renamed: nothing is lost
        atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    print(f"bench: {len(todo)} settings in {len(groups)} groups, {(time.perf_counter() - t0) / 60:.1f} min")
    print(f"results: {out}")
    if args.quick:
        print(report([out], out.with_suffix(".md")))
    else:
        report(device_results(), md)
        print(f"tables: {md}")


if __name__ == "__main__":
    main()
