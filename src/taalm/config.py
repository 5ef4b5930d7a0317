"""Typed configs shared by the CLI, YAML files and the Python API.

Each command has one dataclass; its fields (with the paper's defaults) are the command's options: ``dummy_steps``
becomes ``--dummy-steps``, ``--config FILE.yaml`` fills fields from a file, and explicit flags win over the file.
Validation happens in ``__post_init__`` with errors that name the option.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from taalm.errors import TaalmError

C = TypeVar("C")


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help text (shown by ``taalm CMD --help``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise TaalmError(f"option --{name.replace('_', '-')}: {message}")


def _check_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, name, f"{value!r} is not one of {', '.join(choices)}")


@dataclass
class ModelOptions:
    """How θ (and φ's backbone) are loaded and adapted; shared by every command that trains."""

    lora_r: int = option(64, "LoRA rank (paper: 64)")
    lora_alpha: int = option(16, "LoRA alpha (paper: 16)")
    lora_dropout: float = option(0.1, "LoRA dropout (paper: 0.1)")
    qlora: bool = option(False, "load θ in 4 bit (needs CUDA and bitsandbytes)")
    dtype: str = option("auto", "compute dtype: auto (bf16 autocast on GPU, float32 on CPU), float32, bfloat16, float64")
    device: str = option("auto", "auto, cpu, cuda, cuda:N")
    attn_implementation: str = option("auto", "attention kernel for plain steps: auto, eager, sdpa")
    log: str = option("none", "experiment tracking: none, tensorboard, wandb")

    def __post_init__(self) -> None:
        _check(self.lora_r > 0, "lora_r", "must be positive")
        _check(self.lora_alpha > 0, "lora_alpha", "must be positive")
        _check(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)")
        _check_choice(self.dtype, "dtype", ("auto", "float32", "bfloat16", "float64"))
        _check_choice(self.attn_implementation, "attn_implementation", ("auto", "eager", "sdpa"))
        _check_choice(self.log, "log", ("none", "tensorboard", "wandb"))


OBJECTIVES = ("obj", "change2", "change3")


@dataclass
class MetaTrainConfig(ModelOptions):
    """``taalm meta-train``: learn φ so that one weighted inner step of θ on D best solves T_D."""

    theta: str = option("smollm2-135m", "base model θ: alias, local directory or Hugging Face id")
    pairs: str = option("", "JSONL of {document, task, answer} (LAMA-ckl rows with evidence/task_descriptive/object work too)")
    out: str = option("", "output directory: the trained φ, its config, history and checkpoints")
    phi: str = option("", "φ backbone (default: same as --theta); must share θ's tokenizer")
    phi_layers: int = option(0, "keep only the first N transformer layers of φ's backbone (0: all)")
    dummy_steps: int = option(1, "non-differentiable inner steps before the differentiable one")
    inner_lr: float = option(2e-4, "inner AdamW learning rate (θ)")
    inner_weight_decay: float = option(0.01, "inner AdamW weight decay")
    outer_lr: float = option(2e-4, "outer AdamW learning rate (φ)")
    meta_batch: int = option(16, "pairs per φ update (their meta-gradients are averaged)")
    inner_batch: int = option(1, "pairs per inner problem (official: 1; larger is faster, changes the inner problem)")
    max_length: int = option(512, "documents are truncated to this many tokens (with a warning)")
    objective: str = option("obj", "outer objective: obj (task label NLL after the step), change2, change3")
    restrict: bool = option(False, "add the official restrict term: |NLL change| on an unrelated task")
    updates: int = option(0, "number of φ updates (0: --epochs passes over the pairs)")
    epochs: int = option(1, "passes over the pairs when --updates is 0")
    held_out: int = option(0, "pairs kept out of training (the last N), for validation and inspection")
    checkpoint_every: int = option(10, "φ updates between checkpoints")
    resume: bool = option(False, "continue from the checkpoint in --out")
    seed: int = option(0, "seed for data order, LoRA init and dropout")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(bool(self.pairs), "pairs", "is required")
        _check(bool(self.out), "out", "is required")
        _check(self.dummy_steps >= 0, "dummy_steps", "must be >= 0")
        _check(self.phi_layers >= 0, "phi_layers", "must be >= 0")
        _check(self.inner_lr > 0, "inner_lr", "must be positive")
        _check(self.outer_lr > 0, "outer_lr", "must be positive")
        _check(self.meta_batch > 0, "meta_batch", "must be positive")
        _check(self.inner_batch > 0, "inner_batch", "must be positive")
        _check(self.meta_batch % self.inner_batch == 0, "meta_batch", "must be a multiple of --inner-batch")
        _check(self.max_length >= 2, "max_length", "must be >= 2")
        _check_choice(self.objective, "objective", OBJECTIVES)
        _check(self.updates >= 0, "updates", "must be >= 0")
        _check(self.epochs > 0, "epochs", "must be positive")
        _check(self.held_out >= 0, "held_out", "must be >= 0")
        _check(self.checkpoint_every > 0, "checkpoint_every", "must be positive")


@dataclass
class WeightsConfig:
    """``taalm weights``: show where a trained φ puts its weight."""

    phi: str = option("", "trained φ directory (output of meta-train)")
    text: str = option("", "a document to weigh")
    file: str = option("", "JSONL of documents ({text} or {document} or LAMA-ckl rows)")
    out: str = option("weights.html", "HTML heatmap to write (a PNG is written next to it)")
    limit: int = option(20, "at most this many documents from --file")
    max_length: int = option(512, "documents are truncated to this many tokens")
    color: bool = option(True, "colour the terminal output")
    relative: bool = option(True, "show weights divided by each document's largest (the loss ignores their scale)")
    device: str = option("auto", "auto, cpu, cuda")

    def __post_init__(self) -> None:
        _check(bool(self.phi), "phi", "is required")
        _check(bool(self.text) != bool(self.file), "text", "give exactly one of --text and --file")
        _check(self.limit > 0, "limit", "must be positive")


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    tp = hints[f.name]
    if isinstance(tp, types.UnionType):  # "X | None"
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    return tp


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per dataclass field; defaults stay unset so YAML values are not overridden by them."""
    parser.add_argument("--config", help="YAML (or JSON) file with option values; flags override it")
    for f in dataclasses.fields(cls):
        tp = _field_type(cls, f)
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        if typing.get_origin(tp) is list:
            parser.add_argument(flag, nargs="+", default=argparse.SUPPRESS, help=help_text)
        elif tp is bool:
            parser.add_argument(flag, type=_parse_bool, nargs="?", const=True, default=argparse.SUPPRESS,
                                help=help_text, metavar="BOOL")
        else:
            parser.add_argument(flag, type=tp, default=argparse.SUPPRESS, help=help_text)


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TaalmError(f"{path}: config file not found")
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise TaalmError(f"{path}:{line + 1 if line is not None else '?'}: malformed YAML") from None
    if not isinstance(data, dict):
        raise TaalmError(f"{path}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Construct ``cls`` from a mapping, rejecting unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise TaalmError(f"{source}: unknown option {unknown[0]!r}")
    try:
        return cls(**values)
    except TypeError as e:
        raise TaalmError(f"{source}: {e}") from None


def config_from_args(cls: type[C], namespace: argparse.Namespace) -> C:
    values: dict[str, Any] = {}
    config_path = getattr(namespace, "config", None)
    if config_path:
        values.update(load_config_file(config_path))
    values.update({k: v for k, v in vars(namespace).items() if k not in ("config", "command", "func", "benchmark")})
    if "preset" in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
        values = with_preset(values)
    return build_config(cls, values, source=config_path or "command line")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """The resolved config, next to every output, as YAML (readable back with ``--config``)."""
    import yaml

    from taalm.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True))


def config_json(config: Any) -> str:
    return json.dumps(to_dict(config), sort_keys=True)


@dataclass
class LearnConfig(ModelOptions):
    """``taalm learn``: θ learns a document set with one method; probes are evaluated after every epoch."""

    model: str = option("smollm2-135m", "base model θ: alias, local directory or Hugging Face id")
    docs: str = option("", "JSONL of documents {text} (optional answer/task: oracle weights)")
    out: str = option("", "output directory: adapter weights, metrics.jsonl, config, learning-curve PNG")
    method: str = option("finetune", "finetune, oracle, taalm, rho1, recadam, mixreview, kadapter, or a combination "
                                     "such as taalm+kadapter")
    phi: str = option("", "trained φ directory (method taalm)")
    probes: list[str] = option([], "probe sets NAME=FILE.jsonl ({task, answer} rows); accuracy and PPL per epoch")  # noqa: RUF009 (option() returns a dataclass field)
    epochs: int = option(30, "passes over the documents")
    lr: float = option(1e-4, "AdamW learning rate")
    batch_size: int = option(64, "documents per optimizer step (official LAMA-ckl: 8 per GPU x 8 GPUs)")
    micro_batch: int = option(8, "documents per forward pass (gradients are accumulated up to --batch-size)")
    max_length: int = option(512, "documents longer than this are truncated to it, with a warning")
    eval_batch: int = option(32, "probes per evaluation forward pass")
    rho1_ratio: float = option(0.6, "RHO-1: fraction of tokens kept per sequence")
    recadam_k: float = option(0.5, "RecAdam: sigmoid anneal rate k")
    recadam_t0: int = option(250, "RecAdam: anneal midpoint t0 (optimizer steps)")
    recadam_coefficient: float = option(5000.0, "RecAdam: pretrain (quadratic pull) coefficient")
    review_docs: str = option("", "Mix-Review: JSONL of documents not to forget, replayed during training")
    review_ratio: float = option(1.0, "Mix-Review: review documents per training document at epoch 0")
    review_decay: float = option(0.9, "Mix-Review: the review share at epoch e is ratio * decay**e (1.0: constant)")
    checkpoint_every: int = option(0, "optimizer steps between mid-epoch checkpoints (0: only at epoch ends)")
    resume: bool = option(False, "continue the run in --out")
    seed: int = option(0, "seed for data order, adapter init and dropout")

    def __post_init__(self) -> None:
        super().__post_init__()
        from taalm.methods import parse_method

        _check(bool(self.docs), "docs", "is required")
        _check(bool(self.out), "out", "is required")
        method = parse_method(self.method)
        _check(not (method.weights == "taalm" and not self.phi), "phi", "method taalm needs a trained φ (--phi DIR)")
        _check(not (method.mixreview and not self.review_docs), "review_docs",
               "method mixreview needs documents to review (--review-docs FILE)")
        _check(self.epochs > 0, "epochs", "must be positive")
        _check(self.lr > 0, "lr", "must be positive")
        _check(self.batch_size > 0, "batch_size", "must be positive")
        _check(self.micro_batch > 0, "micro_batch", "must be positive")
        _check(self.max_length >= 2, "max_length", "must be >= 2")
        _check(0.0 < self.rho1_ratio <= 1.0, "rho1_ratio", "must be in (0, 1]")
        _check(self.review_ratio >= 0, "review_ratio", "must be >= 0")
        _check(0.0 < self.review_decay <= 1.0, "review_decay", "must be in (0, 1]")
        _check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        for spec in self.probes:
            _check("=" not in spec or bool(spec.split("=", 1)[0]) and bool(spec.split("=", 1)[1]), "probes",
                   f"{spec!r} is not NAME=FILE")


def probe_sets(specs: list[str]) -> dict[str, str]:
    """``["to_learn=a.jsonl", "b.jsonl"]`` → ``{"to_learn": "a.jsonl", "b": "b.jsonl"}``."""
    out = {}
    for spec in specs:
        name, path = spec.split("=", 1) if "=" in spec else (Path(spec).stem, spec)
        if name in out:
            raise TaalmError(f"option --probes: two probe sets named {name!r}")
        out[name] = path
    return out


@dataclass
class TailorConfig:
    """``taalm tailor``: select the LAMA-ckl sets that fit a model (what it does not know / knows)."""

    model: str = option("smollm2-135m", "model to tailor the sets to: alias, local directory or Hugging Face id")
    out: str = option("", "output directory: to_learn.jsonl, not_to_forget.jsonl, meta_pool.jsonl, tailor.json")
    split: str = option("tailored", "tailored (by the model's own accuracy) or official (the paper's sets as shipped)")
    data_dir: str = option("", "directory with variant/invariant_*.jsonl (default: the copies shipped with taalm)")
    to_learn: int = option(0, "stop once this many To-Learn rows are found (rows scored in a seeded order; 0: all)")
    not_to_forget: int = option(0, "stop once this many Not-To-Forget rows are found (0: all)")
    seed: int = option(0, "order in which rows are scored when a limit is set")
    eval_batch: int = option(32, "rows per forward pass")
    max_length: int = option(512, "documents are truncated to this many tokens")
    device: str = option("auto", "auto, cpu, cuda")

    def __post_init__(self) -> None:
        _check(bool(self.out), "out", "is required")
        _check(self.to_learn >= 0 and self.not_to_forget >= 0, "to_learn", "limits must be >= 0")
        _check_choice(self.split, "split", ("tailored", "official"))
        _check(self.eval_batch > 0, "eval_batch", "must be positive")


@dataclass
class BenchConfig(ModelOptions):
    """``taalm bench lama-ckl``: every method on LAMA-ckl, the paper's table, curves and a summary."""

    model: str = option("smollm2-135m", "base model θ")
    out: str = option("", "output directory (resumable: finished methods are skipped)")
    preset: str = option("", "paper or quick: fills every option not given explicitly")
    methods: str = option("finetune,oracle,taalm,rho1,recadam,mixreview,kadapter,taalm+mixreview,taalm+recadam,"
                          "taalm+kadapter", "comma-separated methods")
    split: str = option("tailored", "tailored or official")
    tailor_dir: str = option("", "an existing `taalm tailor` output (default: tailor into OUT/split)")
    phi: str = option("", "trained φ directory (default: meta-train φ on the meta pool into OUT/phi)")
    to_learn: int = option(0, "use at most this many To-Learn rows (0: all)")
    not_to_forget: int = option(0, "use at most this many Not-To-Forget rows (0: all)")
    meta_pool: int = option(0, "use at most this many meta-pool pairs for φ (0: all)")
    epochs: int = option(30, "epochs of learning")
    lr: float = option(1e-4, "learning rate of θ")
    batch_size: int = option(64, "documents per optimizer step")
    micro_batch: int = option(8, "documents per forward pass")
    max_length: int = option(512, "documents are truncated to this many tokens")
    eval_batch: int = option(32, "probes per forward pass")
    meta_updates: int = option(0, "φ updates (0: one pass over the meta pool)")
    meta_batch: int = option(16, "pairs per φ update")
    meta_inner_lr: float = option(2e-4, "inner AdamW learning rate of meta-training (θ)")
    meta_outer_lr: float = option(2e-4, "outer AdamW learning rate of meta-training (φ)")
    inner_batch: int = option(1, "pairs per inner problem")
    phi_layers: int = option(0, "keep only the first N layers of φ's backbone (0: all)")
    dummy_steps: int = option(1, "non-differentiable inner steps before the differentiable one")
    objective: str = option("obj", "φ's outer objective: obj, change2, change3")
    meta_max_length: int = option(512, "max tokens of a meta-training document")
    seed: int = option(0, "seed for sampling, data order and initialisation")

    def __post_init__(self) -> None:
        super().__post_init__()
        from taalm.methods import parse_method

        _check(bool(self.out), "out", "is required")
        _check_choice(self.split, "split", ("tailored", "official"))
        _check_choice(self.objective, "objective", OBJECTIVES)
        _check(bool(self.method_list()), "methods", "no method given")
        for name in self.method_list():
            parse_method(name)
        for name in ("to_learn", "not_to_forget", "meta_pool", "meta_updates"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")
        _check(self.epochs > 0, "epochs", "must be positive")

    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's LAMA-ckl protocol: all rows, 30 epochs, lr 1e-4, 64 documents per step, φ on the whole pool.
    "paper": {"epochs": 30, "lr": 1e-4, "batch_size": 64, "micro_batch": 8, "max_length": 512, "to_learn": 0,
              "not_to_forget": 0, "meta_pool": 0, "meta_batch": 16, "inner_batch": 1, "meta_updates": 0},
    # A CPU-sized run: a few dozen rows, short documents, a short φ meta-training, a larger lr for the few steps.
    "quick": {"epochs": 4, "lr": 1e-3, "batch_size": 8, "micro_batch": 8, "max_length": 96, "to_learn": 16,
              "not_to_forget": 16, "meta_pool": 64, "meta_batch": 4, "inner_batch": 1, "meta_updates": 16,
              "meta_inner_lr": 1e-3, "meta_outer_lr": 3e-3,
              "meta_max_length": 64, "phi_layers": 4, "lora_dropout": 0.0, "methods": "finetune,oracle,taalm"},
}


def with_preset(values: dict[str, Any]) -> dict[str, Any]:
    """Preset values under explicitly given ones."""
    preset = values.get("preset") or ""
    if preset and preset not in PRESETS:
        raise TaalmError(f"option --preset: {preset!r} is not one of {', '.join(PRESETS)}")
    return {**PRESETS.get(preset, {}), **values}
