"""Experiment settings: one defaults file, JSON files of differences, and `--key=value` overrides."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

DEFAULTS = Path(__file__).parent / "configs" / "defaults.json"
TASKS = ("e2e", "webnlg", "sst2")
METHODS = ("prefix", "finetune")


@dataclass
class ExperimentConfig:
    """Everything a run depends on; `configs/defaults.json` holds the defaults (keep the two in step)."""

    task: str
    model: str  # checkpoint directory or hub id
    random_init: bool  # same shape as `model`, random weights (how much does pretraining matter?)
    method: str  # "prefix" (any PrefixConfig, incl. depth="embedding") or "finetune" (all weights)
    prefix_len: int
    depth: str | list  # "all", "embedding", or a list of layer indices
    reparam: str  # "mlp" (the paper's reparameterization) or "direct"
    encoder_hidden_size: int
    init: str
    init_text: str
    prefix_dropout: float
    head: str  # sst2: "verbalizer" (label-word logits) or "linear" (a trained layer on the last token)
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    patience: int  # epochs without dev-loss improvement before stopping
    bf16: bool  # bf16 autocast
    base_dtype: str  # "auto" (bfloat16 when bf16 is on and the base is frozen, else float32), "float32", "bfloat16"
    device: str | None  # None: cuda if available, else cpu
    seed: int
    max_train: int | None  # first N training pairs (None: all)
    max_dev: int | None
    max_test: int | None  # first N test MRs / entries (None: all)
    num_beams: int
    max_new_tokens: int
    decode_batch_size: int
    log_every: int
    ckpt_every: int
    data_dir: str | None
    results_dir: str
    runs_dir: str
    name: str | None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown TASK {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.method == "prefix" and self.prefix_len < 1:
            raise ValueError(f"LEN (prefix_len) must be a positive number of virtual tokens, got {self.prefix_len}")
        if self.head not in ("verbalizer", "linear"):
            raise ValueError(f"HEAD must be 'verbalizer' or 'linear', got {self.head!r}")
        if self.reparam not in ("mlp", "direct"):
            raise ValueError(f"REPARAM must be 'mlp' or 'direct', got {self.reparam!r}")
        if self.base_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"base_dtype must be 'auto', 'float32' or 'bfloat16', got {self.base_dtype!r}")
        if self.base_dtype == "bfloat16" and (self.method == "finetune" or not self.bf16):
            raise ValueError("base_dtype=bfloat16 needs a frozen base (method=prefix) and bf16=true: weights that "
                             "train keep fp32 master copies; use base_dtype=auto or float32")
        for k in ("epochs", "batch_size", "num_beams", "max_new_tokens", "decode_batch_size"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")

    @property
    def model_dtype(self) -> str:
        """The dtype the base model is held in for this run ("auto" resolved)."""
        if self.base_dtype != "auto":
            return self.base_dtype
        return "bfloat16" if self.bf16 and self.method == "prefix" else "float32"

    @property
    def run_name(self) -> str:
        """A readable name from the settings that define the run (or `name` if set)."""
        if self.name:
            return self.name
        if self.method == "finetune":
            core = "finetune"
        else:
            depth = self.depth if isinstance(self.depth, str) else "layers" + "-".join(map(str, self.depth))
            core = f"prefix-len{self.prefix_len}-{depth}-{self.reparam}"
            if self.init != "random":
                core += f"-init{self.init}"
        if self.task == "sst2":
            core += f"-{self.head}"
        model = Path(self.model).name + ("-randinit" if self.random_init else "")
        extra = f"-n{self.max_train}" if self.max_train else ""
        return f"{self.task}-{model}-{core}{extra}-seed{self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)


def parse_value(text: str):
    """'10' -> 10, 'true' -> True, '[0,1]' -> [0, 1], 'null' -> None, anything else -> the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(files: list[str] = (), overrides: dict | None = None) -> ExperimentConfig:
    """Defaults, then each JSON file's differences in order, then `overrides`."""
    values = json.loads(DEFAULTS.read_text())
    known = {f.name for f in fields(ExperimentConfig)}
    if set(values) != known:
        raise RuntimeError(f"{DEFAULTS} and ExperimentConfig disagree: {sorted(set(values) ^ known)}")
    for f in files:
        diff = json.loads(Path(f).read_text())
        unknown = set(diff) - known
        if unknown:
            raise ValueError(f"{f}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        values.update(diff)
    for k, v in (overrides or {}).items():
        if k not in known:
            raise ValueError(f"unknown setting --{k}; known: {', '.join(sorted(known))}")
        values[k] = v
    return ExperimentConfig(**values)


def parse_cli(argv: list[str]) -> ExperimentConfig:
    """`[config.json ...] [--key=value ...]` -> config."""
    files, overrides = [], {}
    for a in argv:
        if a.startswith("--"):
            if "=" not in a:
                raise ValueError(f"write overrides as --key=value, got {a!r}")
            k, v = a[2:].split("=", 1)
            overrides[k.replace("-", "_")] = parse_value(v)
        else:
            files.append(a)
    return load_config(files, overrides)
