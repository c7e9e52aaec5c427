"""Experiment settings: one defaults file, JSON files of differences, and `--key=value` overrides.

Every value is parsed by its field's declared type (a `--key=value` override arrives as text, a JSON file's
value as JSON) and checked against its allowed range before anything heavy loads; a bad value is a one-line
`ConfigError` naming the setting, the value and what is allowed.
"""
from __future__ import annotations

import json
import math
import re
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from prefix.config import INITS

DEFAULTS = Path(__file__).parent / "configs" / "defaults.json"
# the shipped runs, which experiments/RESULTS.md reports (relative to the project root, where commands run);
# a user's runs go to results_dir (default results/) and are compared with these, never mixed with them
REFERENCE = Path("experiments/reference")
TASKS = ("e2e", "webnlg", "sst2")
METHODS = ("prefix", "finetune")
CHOICES = {"task": TASKS, "method": METHODS, "reparam": ("mlp", "direct"), "head": ("verbalizer", "linear"),
           "init": INITS, "base_dtype": ("auto", "float32", "bfloat16")}
# the smallest allowed value of each number; lr and prefix_dropout have ranges of their own (`in_range`)
AT_LEAST = {"prefix_len": 1, "encoder_hidden_size": 1, "epochs": 1, "batch_size": 1, "warmup_steps": 0,
            "patience": 0, "seed": 0, "max_train": 1, "max_dev": 1, "max_test": 1, "num_beams": 1,
            "max_new_tokens": 1, "decode_batch_size": 1, "log_every": 1, "ckpt_every": 1, "weight_decay": 0,
            "grad_clip": 0}
# `make experiment` variables, named in errors beside the setting they set
MAKE_VARS = {"task": "TASK", "model": "MODEL", "prefix_len": "LEN", "depth": "DEPTH", "reparam": "REPARAM",
             "seed": "SEED", "epochs": "EPOCHS", "method": "METHOD", "init": "INIT", "head": "HEAD", "lr": "LR",
             "max_train": "MAX_TRAIN", "max_test": "MAX_TEST", "data_dir": "DATA_DIR"}
# settings that only say where files go or how often to report: they never change a number of the run
BOOKKEEPING = ("results_dir", "runs_dir", "name", "log_every", "ckpt_every")


class ConfigError(ValueError):
    """A setting that cannot be used: the message is one line naming it, its value and what is allowed."""


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
        hints = typing.get_type_hints(ExperimentConfig)
        for f in fields(self):
            setattr(self, f.name, parse_setting(f.name, getattr(self, f.name), hints[f.name]))
        self.check_combination()

    def check_combination(self) -> None:
        """Refuse settings that are each valid but do not go together."""
        if self.base_dtype == "bfloat16" and (self.method == "finetune" or not self.bf16):
            raise ConfigError("base_dtype=bfloat16 needs a frozen base (method=prefix) and bf16=true: weights that "
                              "train keep fp32 master copies; use base_dtype=auto or float32")
        if self.method == "prefix" and self.depth == "embedding" and self.reparam == "mlp":
            raise ConfigError('DEPTH=embedding (prompt tuning) has no MLP, as in PEFT: use REPARAM=direct with it')
        if self.method == "prefix" and self.init == "text" and not self.init_text:
            raise ConfigError('init=text needs init_text, e.g. --init_text="table-to-text:"')

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

    def settings(self) -> dict:
        """The settings that can change a number of the run (all but `BOOKKEEPING`): what identifies it."""
        return {k: v for k, v in self.to_dict().items() if k not in BOOKKEEPING}


def label(name: str) -> str:
    """'LEN (prefix_len)' for settings that have a make variable, else the setting's own name."""
    return f"{MAKE_VARS[name]} ({name})" if name in MAKE_VARS else name


def shown(value) -> str:
    """A value as it appears in a one-line error (repr, so that text is quoted; long values cut)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


INVALID = object()  # what a parser returns for a value it cannot read as its type


def parse_setting(name: str, value, hint):
    """`value` (a JSON value, or the text of a --key=value override) as the declared type `hint`, in range."""
    optional = type(None) in typing.get_args(hint)
    kind = next(t for t in (typing.get_args(hint) or (hint,)) if t is not type(None))
    if value is None or value == "null":
        parsed = None if optional else INVALID
    elif name == "depth":
        parsed = parse_depth(value)
    else:
        parsed = {bool: parse_bool, int: parse_int, float: parse_float, str: parse_str}[kind](value)
    if parsed is INVALID or (parsed is not None and not in_range(name, parsed)):
        raise ConfigError(f"{label(name)} must be {allowed(name, kind, optional)}, got {shown(value)}")
    return parsed


def parse_bool(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    return {"true": True, "1": True, "false": False, "0": False}.get(text, INVALID)


def parse_int(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", value):
        return int(value)
    return INVALID


def parse_float(value):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return INVALID
    try:
        x = float(value)
    except (ValueError, OverflowError):
        return INVALID
    return x if math.isfinite(x) else INVALID  # "Infinity", "nan", 1e999: never a usable setting


def parse_str(value):
    return value if isinstance(value, str) else INVALID


def parse_depth(value):
    """"all", "embedding", or a non-empty list of distinct layer indices (JSON, e.g. [0,4,7]), sorted."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return INVALID
    if value in ("all", "embedding"):
        return value
    if (isinstance(value, list) and value and len(set(map(str, value))) == len(value)
            and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 10_000 for i in value)):
        return sorted(value)
    return INVALID


def in_range(name: str, value) -> bool:
    """Whether a value of the right type is one the setting allows."""
    if name in CHOICES:
        return value in CHOICES[name]
    if name in AT_LEAST:
        return value >= AT_LEAST[name]
    if name == "lr":
        return value > 0
    if name == "prefix_dropout":
        return 0 <= value < 1
    if name == "device":
        return re.fullmatch(r"cpu|cuda(:\d+)?|mps", value) is not None
    if name == "name":
        return bool(value.strip()) and value not in (".", "..") and not any(c in value for c in "/\\\n")
    return True


def allowed(name: str, kind: type, optional: bool) -> str:
    """What a setting accepts, in words, e.g. 'an integer >= 1 or null (all)'."""
    if name in CHOICES:
        return "one of " + ", ".join(CHOICES[name])
    if name == "depth":
        return "all, embedding or a list of distinct layer indices like [0,4,7]"
    if name == "device":
        return "null (cuda if available, else cpu), cpu, cuda, cuda:N or mps"
    if name == "name":
        return "null or a folder name (not empty, no '/')"
    text = {bool: "true or false (or 1 / 0)", int: "an integer", float: "a finite number", str: "text"}[kind]
    text += {"lr": " > 0", "prefix_dropout": " in [0, 1)"}.get(name, "")
    if name in AT_LEAST:
        text += f" >= {AT_LEAST[name]}"
    if name == "max_dev":
        return text + " or null (early stopping and the choice of the best epoch need a dev set)"
    return text + (" or null (all)" if name.startswith("max_") else " or null" if optional else "")


def default_values() -> dict:
    """The defaults file, checked against ExperimentConfig's fields."""
    values = read_json(DEFAULTS)
    known = {f.name for f in fields(ExperimentConfig)}
    if set(values) != known:
        raise RuntimeError(f"{DEFAULTS} and ExperimentConfig disagree: {sorted(set(values) ^ known)}")
    return values


def read_json(path: str | Path) -> dict:
    """A settings file as a dict; ConfigError naming the file when it cannot be read or is not a JSON object."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read this settings file ({type(e).__name__}: {e})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a JSON object of settings, got a {type(values).__name__}")
    return values


def load_config(files: list[str] = (), overrides: dict | None = None) -> ExperimentConfig:
    """Defaults, then each JSON file's differences in order, then `overrides` (text or JSON values)."""
    values = default_values()
    for f in files:
        diff = read_json(f)
        unknown = set(diff) - set(values)
        if unknown:
            raise ConfigError(f"{f}: unknown settings {sorted(unknown)}; known: {', '.join(sorted(values))}")
        values.update(diff)
    for k, v in (overrides or {}).items():
        if k not in values:
            raise ConfigError(f"unknown setting --{k}; known: {', '.join(sorted(values))}")
        values[k] = v
    return ExperimentConfig(**values)


def parse_cli(argv: list[str]) -> ExperimentConfig:
    """`[config.json ...] [--key=value ...]` -> config; a bad setting exits with a one-line error."""
    files, overrides = [], {}
    try:
        for a in argv:
            if a.startswith("--"):
                if "=" not in a:
                    raise ConfigError(f"write overrides as --key=value, got {shown(a)}")
                k, v = a[2:].split("=", 1)
                overrides[k.replace("-", "_")] = v  # text: parsed by the setting's type
            else:
                files.append(a)
        return load_config(files, overrides)
    except ConfigError as e:
        raise SystemExit("error: " + " ".join(str(e).splitlines())) from None
