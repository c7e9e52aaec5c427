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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from prefix.config import INITS
from prefix.lora import TARGETS, check_targets

from . import methods, tasks

DEFAULTS = Path(__file__).parent / "configs" / "defaults.json"
# the shipped runs: every study's results/<run>/ (relative to the project root, where commands run); a user's
# runs go to results_dir (default results/) and are compared with these, never mixed with them
REFERENCE = Path("studies")
CHOICES = {"position": ("prefix", "infix"),
           "reparam": ("mlp", "direct"), "head": ("verbalizer", "linear"),
           "init": INITS, "base_dtype": ("auto", "float32", "bfloat16"), "train_sample": ("first", "seeded"),
           "compile": ("auto", "on", "off")}
# the smallest allowed value of each number; lr and prefix_dropout have ranges of their own (`in_range`)
AT_LEAST = {"prefix_len": 1, "encoder_hidden_size": 1, "epochs": 1, "batch_size": 1, "warmup_steps": 0,
            "patience": 0, "seed": 0, "lora_rank": 1, "adapter_size": 1, "top_layers": 1, "max_train": 1, "max_dev": 1, "max_test": 1, "num_beams": 1,
            "max_new_tokens": 1, "decode_batch_size": 1, "log_every": 1, "ckpt_every": 1, "weight_decay": 0,
            "grad_clip": 0}
# `make experiment` variables, named in errors beside the setting they set
MAKE_VARS = {"task": "TASK", "model": "MODEL", "prefix_len": "LEN", "depth": "DEPTH", "reparam": "REPARAM",
             "seed": "SEED", "epochs": "EPOCHS", "method": "METHOD", "init": "INIT", "head": "HEAD", "lr": "LR",
             "max_train": "MAX_TRAIN", "max_test": "MAX_TEST", "data_dir": "DATA_DIR"}
# settings that only say where files go or how often to report: they never change a number of the run
BOOKKEEPING = ("results_dir", "runs_dir", "name", "log_every", "ckpt_every", "compile")


class ConfigError(ValueError):
    """A setting that cannot be used: the message is one line naming it, its value and what is allowed."""


def setting(help_text: str):
    """A field of ExperimentConfig with its one-line help (shown by `python -m experiments.run --help`)."""
    return field(metadata={"help": help_text})


@dataclass
class ExperimentConfig:
    """Everything a run depends on; `configs/defaults.json` holds the defaults (keep the two in step)."""

    task: str = setting("e2e or webnlg (table-to-text), or sst2 (sentiment classification)")
    model: str = setting("the base model: a checkpoint folder or a hub id (gpt2, gpt2-medium, ...)")
    random_init: bool = setting("same shape as `model`, random weights (how much does pretraining matter?)")
    method: str = setting("prefix (any prefix, including depth=embedding), lora, adapter, fttop (the top "
                          "blocks train) or finetune (every weight trains)")
    prefix_len: int = setting("number of virtual tokens P")
    depth: str | list = setting("all (every layer), embedding (prompt tuning), or a list of layer indices like [0,4,7]")
    position: str = setting("prefix ([P; x; y], the paper's method) or infix ([x; P; y], its ablation)")
    reparam: str = setting("mlp (the paper's P = MLP(P')) or direct (a free table)")
    encoder_hidden_size: int = setting("width of the MLP's hidden layer (the paper: 512)")
    init: str = setting("random, zero, vocab (random real tokens) or text (the activations of init_text)")
    init_text: str = setting("the phrase init=text starts from, e.g. table-to-text:")
    prefix_dropout: float = setting("dropout on the prefix table while training")
    head: str = setting("sst2: verbalizer (label-word logits) or linear (a trained layer on the last token)")
    lora_rank: int = setting("method=lora: the rank r of each update (the LoRA paper on E2E: 4)")
    lora_alpha: float = setting("method=lora: the update is scaled by lora_alpha / lora_rank (the LoRA paper: 32)")
    lora_targets: str = setting("method=lora: the projections it adapts, comma-separated, from q, k, v (parts of "
                                "c_attn, each its own update), c_attn (whole), attn.c_proj, mlp.c_fc, mlp.c_proj")
    adapter_size: int = setting("method=adapter: the bottleneck width (19M model: 2 ~ 0.1% of the parameters, "
                                "70 ~ 3%)")
    top_layers: int = setting("method=fttop: how many of the top blocks train (with the final LayerNorm)")
    epochs: int = setting("passes over the training set")
    batch_size: int = setting("training examples per optimizer step")
    lr: float = setting("peak learning rate (linear warmup, then linear decay to 0)")
    weight_decay: float = setting("AdamW weight decay")
    warmup_steps: int = setting("optimizer steps of linear warmup (at most 20% of the run's steps)")
    grad_clip: float = setting("gradient norm clipping")
    patience: int = setting("epochs without dev-loss improvement before stopping")
    bf16: bool = setting("bf16 autocast")
    base_dtype: str = setting("auto (bfloat16 if bf16 is on and the base is frozen, else float32), float32, bfloat16")
    device: str | None = setting("cpu, cuda, ...; null: cuda if available, else cpu")
    compile: str = setting("auto (on a GPU), on or off: the training loss compiled per shape bucket and decoding "
                           "on a static cache with a compiled step (CUDA graphs on a GPU); speed only: losses "
                           "equal to rounding, decoded tokens the same in fp32 (in bf16 a near-tie may turn)")
    seed: int = setting("seed of the initialization, the batch order and dropout")
    max_train: int | None = setting("N training pairs, the first N or a random N (train_sample) (null: all)")
    train_sample: str = setting("first (max_train: the file's first N pairs) or seeded (N pairs drawn at random "
                                "with the run's seed: another sample per seed, as in the paper's low-data runs)")
    max_dev: int | None = setting("first N dev pairs for the dev loss (null: all)")
    max_test: int | None = setting("first N test tables / entries / sentences (null: all)")
    num_beams: int = setting("beam width for decoding (1: greedy)")
    max_new_tokens: int = setting("decoding length limit")
    decode_batch_size: int = setting("test inputs decoded at a time")
    log_every: int = setting("optimizer steps between lines of log.jsonl")
    ckpt_every: int = setting("optimizer steps between saves of the training state")
    data_dir: str | None = setting("where the datasets are (null: $DATA_DIR, data/, then ../shared/data)")
    results_dir: str = setting("where finished runs' result folders go")
    runs_dir: str = setting("where training state and trained prefixes go")
    name: str | None = setting("the run's name (null: made from the settings)")

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(ExperimentConfig)
        for f in fields(self):
            setattr(self, f.name, parse_setting(f.name, getattr(self, f.name), hints[f.name]))
        self.check_combination()

    def check_combination(self) -> None:
        """Refuse settings that are each valid but do not go together."""
        method = methods.method_for(self)
        if self.base_dtype == "bfloat16" and (not method.frozen_base or not self.bf16):
            raise ConfigError("base_dtype=bfloat16 needs a frozen base (method=prefix) and bf16=true: weights that "
                              "train keep fp32 master copies; use base_dtype=auto or float32")
        reason = method.check(self)
        if reason:
            raise ConfigError(reason)
        if self.train_sample == "seeded" and self.max_train is None:
            raise ConfigError("train_sample=seeded draws max_train pairs from the training set: set max_train "
                              "(e.g. --max_train=100), or use train_sample=first for the whole set")

    @property
    def model_dtype(self) -> str:
        """The dtype the base model is held in for this run ("auto" resolved)."""
        if self.base_dtype != "auto":
            return self.base_dtype
        return "bfloat16" if self.bf16 and methods.method_for(self).frozen_base else "float32"

    def compiled(self, device) -> bool:
        """Whether this run compiles its training loss and decoding step on `device` ("auto": on a GPU)."""
        return self.compile == "on" or (self.compile == "auto" and str(device).startswith("cuda"))

    @property
    def train_seed(self) -> int | None:
        """The seed that draws the max_train training pairs (train_sample=seeded), or None: the first N."""
        return self.seed if self.train_sample == "seeded" else None

    @property
    def run_name(self) -> str:
        """A readable name from the settings that define the run (or `name` if set)."""
        if self.name:
            return self.name
        core = methods.method_for(self).name_core(self)
        if tasks.get(self.task).kind == "classification":
            core += f"-{self.head}"
        model = Path(self.model).name + ("-randinit" if self.random_init else "")
        extra = f"-n{self.max_train}" if self.max_train else ""
        extra += "-sampled" if self.train_sample == "seeded" else ""
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


def choices(name: str) -> tuple | None:
    """The values a setting with a fixed set of them takes (None for any other setting); methods and tasks are
    those registered (experiments/methods/: prefix, finetune, ...; experiments/tasks/: e2e, webnlg, sst2, ...)."""
    if name == "task":
        return tasks.names()
    return methods.settings_values() if name == "method" else CHOICES.get(name)


def in_range(name: str, value) -> bool:
    """Whether a value of the right type is one the setting allows."""
    if choices(name) is not None:
        return value in choices(name)
    if name in AT_LEAST:
        return value >= AT_LEAST[name]
    if name in ("lr", "lora_alpha"):
        return value > 0
    if name == "lora_targets":
        return lora_targets(value) is not None
    if name == "prefix_dropout":
        return 0 <= value < 1
    if name == "device":
        return re.fullmatch(r"cpu|cuda(:\d+)?|mps", value) is not None
    if name == "name":
        return bool(value.strip()) and value not in (".", "..") and not any(c in value for c in "/\\\n")
    return True


def lora_targets(value: str) -> tuple[str, ...] | None:
    """The LoRA targets a `lora_targets` setting names ("q,v" -> ("q", "v")), or None if it cannot be used."""
    try:
        return check_targets(t.strip() for t in value.split(","))
    except ValueError:
        return None


def allowed(name: str, kind: type, optional: bool) -> str:
    """What a setting accepts, in words, e.g. 'an integer >= 1 or null (all)'."""
    if choices(name) is not None:
        return "one of " + ", ".join(choices(name))
    if name == "depth":
        return "all, embedding or a list of distinct layer indices like [0,4,7]"
    if name == "device":
        return "null (cuda if available, else cpu), cpu, cuda, cuda:N or mps"
    if name == "name":
        return "null or a folder name (not empty, no '/')"
    text = {bool: "true or false (or 1 / 0)", int: "an integer", float: "a finite number", str: "text"}[kind]
    if name == "lora_targets":
        return "comma-separated distinct names from " + ", ".join(TARGETS) + " (c_attn or its parts q, k, v)"
    text += {"lr": " > 0", "lora_alpha": " > 0", "prefix_dropout": " in [0, 1)"}.get(name, "")
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


def usage() -> str:
    """Every setting with its make variable, default and help: what `--help` prints."""
    defaults = default_values()
    rows = [f"  --{f.name}=...  {label(f.name)}, default {json.dumps(defaults.get(f.name))}: {f.metadata['help']}"
            for f in fields(ExperimentConfig)]
    return ("usage: python -m experiments.run [config.json ...] [--key=value ...]\n"
            "       make experiment [LEN=...] [TASK=...] ... [ARGS=\"--key=value ...\"]\n\n"
            "Settings (defaults from experiments/configs/defaults.json):\n" + "\n".join(rows))


def parse_cli(argv: list[str]) -> ExperimentConfig:
    """`[config.json ...] [--key=value ...]` -> config; a bad setting exits with a one-line error."""
    if "--help" in argv or "-h" in argv:
        print(usage())
        raise SystemExit(0)
    files, overrides = [], {}
    try:
        args = list(argv)
        while args:
            a = args.pop(0)
            if a.startswith("--"):  # --key=value or --key value, as pretraining's options; - or _ in keys
                if "=" in a:
                    k, v = a[2:].split("=", 1)
                elif args and not args[0].startswith("--"):
                    k, v = a[2:], args.pop(0)
                else:
                    raise ConfigError(f"{shown(a)} has no value: write --key=value or --key value")
                overrides[k.replace("-", "_")] = v  # text: parsed by the setting's type
            else:
                files.append(a)
        return load_config(files, overrides)
    except ConfigError as e:
        raise SystemExit("error: " + " ".join(str(e).splitlines())) from None
