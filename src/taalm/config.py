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
    qlora: str = option("false", "load θ in 4 bit: true (needs CUDA and bitsandbytes), false, or auto (where both are "
                                 "present)", const="true")
    dtype: str = option("auto", "compute dtype: auto (bf16 autocast on GPU, float32 on CPU), float32, bfloat16, float64")
    device: str = option("auto", "auto, cpu, cuda, cuda:N")
    attn_implementation: str = option("auto", "attention kernel for plain steps: auto, eager, sdpa")
    log: str = option("none", "experiment tracking: none, tensorboard, wandb")

    def __post_init__(self) -> None:
        if isinstance(self.qlora, bool):  # YAML and the Python API may say true/false
            self.qlora = "true" if self.qlora else "false"
        self.qlora = str(self.qlora).lower()
        _check_choice(self.qlora, "qlora", ("true", "false", "auto"))
        _check(self.lora_r > 0, "lora_r", "must be positive")
        _check(self.lora_alpha > 0, "lora_alpha", "must be positive")
        _check(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)")
        _check_choice(self.dtype, "dtype", ("auto", "float32", "bfloat16", "float64"))
        _check_choice(self.attn_implementation, "attn_implementation", ("auto", "eager", "sdpa"))
        _check_choice(self.log, "log", ("none", "tensorboard", "wandb"))

    def use_qlora(self) -> bool:
        """Whether θ is loaded in 4 bit: as asked, or (auto) wherever CUDA and bitsandbytes are present."""
        if self.qlora == "auto":
            import importlib.util

            import torch

            return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None
        return self.qlora == "true"


OBJECTIVES = ("obj", "change2", "change3")
TASK_FORMATS = ("descriptive", "schematic")


@dataclass
class MetaTrainConfig(ModelOptions):
    """``taalm meta-train``: learn φ so that one weighted inner step of θ on D best solves T_D."""

    theta: str = option("smollm2-135m", "base model θ: alias, local directory or Hugging Face id")
    pairs: str = option("", "JSONL of {document, task, answer} (LAMA-ckl rows with evidence/task_descriptive/object work too)")
    out: str = option("", "output directory: the selected φ, its config, history, validation checkpoints")
    phi_model: str = option("", "φ's backbone (default: same as --theta); must share θ's tokenizer")
    phi_layers: int = option(0, "keep only the first N transformer layers of φ's backbone (0: all)")
    phi_lora_r: int = option(0, "LoRA rank of φ's backbone (0: same as --lora-r)")
    weight_floor: float = option(0.0, "not in the paper: φ's weights are floor + (1 - floor)·sigmoid, bounding their "
                                      "contrast by 1/floor (0: the paper's sigmoid)")
    task_format: str = option("descriptive", "LAMA-ckl pairs: the cloze task (descriptive) or 'Guess the object' "
                                             "(schematic, needs task_schematic in each row)")
    dummy_steps: int = option(1, "non-differentiable inner steps before the differentiable one")
    inner_lr: float = option(2e-4, "inner AdamW learning rate (θ)")
    inner_weight_decay: float = option(0.01, "inner AdamW weight decay")
    outer_lr: float = option(2e-4, "outer AdamW learning rate (φ)")
    meta_batch: int = option(16, "pairs per φ update (their meta-gradients are averaged)")
    inner_batch: int = option(1, "pairs per inner problem (official: 1; larger is faster, changes the inner problem)")
    pair_batch: int = option(1, "inner problems computed together in one batch, θ's LoRA stacked per row (each still "
                                "its own problem: the same gradient, less time, more memory); 1: one at a time")
    max_length: int = option(512, "documents longer than this are cut to a window around the answer")
    objective: str = option("obj", "outer objective: obj (task label NLL after the step), change2, change3")
    restrict: bool = option(False, "add the official restrict term: |NLL change| on an unrelated task")
    updates: int = option(0, "number of φ updates (0: --epochs passes over the pairs)")
    epochs: int = option(1, "passes over the pairs when --updates is 0")
    held_out: int = option(-1, "pairs kept out of training for validation (-1: 16, or 10%% below 160 pairs, none for 1 pair; 0: none)")
    val_every: int = option(10, "φ updates between validations (also at update 0 and at the end)")
    val_epochs: int = option(4, "validation: epochs θ learns the held-out documents")
    val_lr: float = option(2e-4, "validation: θ's learning rate (use the learning phase's)")
    val_batch_size: int = option(8, "validation: documents per optimizer step (use the learning phase's)")
    val_metric: str = option("accuracy", "validation gain measured on: accuracy (ties broken by NLL) or nll")
    select: str = option("best", "the φ written to --out: best (highest validation gain) or last")
    checkpoint_every: int = option(10, "φ updates between checkpoints")
    resume: bool = option(False, "continue from the checkpoint in --out")
    seed: int = option(0, "seed for data order, held-out split, LoRA init and dropout")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(bool(self.pairs), "pairs", "is required")
        _check(bool(self.out), "out", "is required")
        _check(self.dummy_steps >= 0, "dummy_steps", "must be >= 0")
        _check(self.phi_layers >= 0, "phi_layers", "must be >= 0")
        _check(self.phi_lora_r >= 0, "phi_lora_r", "must be >= 0")
        _check(0.0 <= self.weight_floor < 1.0, "weight_floor", "must be in [0, 1)")
        _check_choice(self.task_format, "task_format", TASK_FORMATS)
        _check(self.inner_lr > 0, "inner_lr", "must be positive")
        _check(self.outer_lr > 0, "outer_lr", "must be positive")
        _check(self.meta_batch > 0, "meta_batch", "must be positive")
        _check(self.inner_batch > 0, "inner_batch", "must be positive")
        _check(self.meta_batch % self.inner_batch == 0, "meta_batch", "must be a multiple of --inner-batch")
        _check(self.pair_batch > 0, "pair_batch", "must be positive")
        _check(self.pair_batch == 1 or self.inner_batch == 1, "pair_batch", "stacks one-pair problems: needs "
                                                                            "--inner-batch 1")
        _check(self.max_length >= 2, "max_length", "must be >= 2")
        _check_choice(self.objective, "objective", OBJECTIVES)
        _check(self.updates >= 0, "updates", "must be >= 0")
        _check(self.epochs > 0, "epochs", "must be positive")
        _check(self.held_out >= -1, "held_out", "must be >= 0 (or -1: automatic)")
        _check(self.val_every > 0, "val_every", "must be positive")
        _check(self.val_epochs > 0, "val_epochs", "must be positive")
        _check(self.val_lr > 0, "val_lr", "must be positive")
        _check(self.val_batch_size > 0, "val_batch_size", "must be positive")
        _check_choice(self.val_metric, "val_metric", ("accuracy", "nll"))
        _check_choice(self.select, "select", ("best", "last"))
        _check(self.checkpoint_every > 0, "checkpoint_every", "must be positive")

    def held_out_count(self, n_pairs: int) -> int:
        return held_out_count(self.held_out, n_pairs)


def held_out_count(held_out: int, n_pairs: int) -> int:
    """Pairs kept for validation: as asked, or 16 (10% of the pairs, at least 1, when there are fewer than 160).
    Automatic never holds out the only training pair: with one pair there is no validation."""
    if held_out >= 0:
        return held_out
    return 16 if n_pairs >= 160 else min(max(1, n_pairs // 10), n_pairs - 1)


@dataclass
class WeightsConfig:
    """``taalm weights``: show where a trained φ puts its weight; with ``--position-check``, whether it weighs the
    fact tokens of TemporalWiki's built documents or their place (``taalm.position_check``)."""

    phi: str = option("", "trained φ directory (output of meta-train)")
    text: str = option("", "a document to weigh")
    file: str = option("", "JSONL of documents ({text} or {document} or LAMA-ckl rows)")
    out: str = option("", "HTML heatmap to write, a PNG next to it (default: weights.html); with --position-check a "
                          "JSON of the lifts (default: none, the table is printed)")
    limit: int = option(20, "at most this many documents from --file")
    max_length: int = option(512, "documents are truncated to this many tokens (--position-check: longer ones are "
                                  "skipped)")
    color: bool = option(True, "colour the terminal output")
    relative: bool = option(True, "show weights divided by each document's largest (the loss ignores their scale)")
    device: str = option("auto", "auto, cpu, cuda")
    position_check: bool = option(False, "instead of a heatmap: φ's fact-weight lift on TemporalWiki documents built "
                                         "from --period's probes, with the facts in place, moved first and moved last")
    period: str = option("0901-1001", "--position-check: the TemporalWiki period whose changed facts are built")
    subjects: int = option(32, "--position-check: this many seeded subjects, one document each (0: all)")
    seed: int = option(0, "--position-check: the seed of the subjects and the builder (as the benchmark's --seed)")

    def __post_init__(self) -> None:
        _check(bool(self.phi), "phi", "is required")
        _check(self.limit > 0, "limit", "must be positive")
        _check(self.max_length >= 2, "max_length", "must be >= 2")
        if self.position_check:
            from taalm.bench.twiki_data import PERIODS

            _check(not self.text and not self.file, "position_check", "builds its own documents: give neither "
                                                                      "--text nor --file")
            _check_choice(self.period, "period", PERIODS)
            _check(self.subjects >= 0, "subjects", "must be >= 0")
            return
        _check(bool(self.text) != bool(self.file), "text", "give exactly one of --text and --file")


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
        elif "const" in f.metadata:  # a flag that may stand alone (--qlora) or take a value (--qlora auto)
            parser.add_argument(flag, type=tp, nargs="?", const=f.metadata["const"], default=argparse.SUPPRESS,
                                help=help_text)
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
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  (ClassVars are not fields)
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
    values = apply_preset(cls, values)
    return build_config(cls, values, source=config_path or "command line")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """The resolved config, next to every output, as YAML (readable back with ``--config``). A comment above it
    says what each model alias in it is (the dequantized GGUF, and the Hub model it was quantized from)."""
    import yaml

    from taalm.io import atomic_write_text
    from taalm.models import provenance

    values = to_dict(config)
    notes = {provenance(v) for v in values.values() if isinstance(v, str) and v} - {None}
    header = "".join(f"# {note}\n" for note in sorted(notes))
    atomic_write_text(path, header + yaml.safe_dump(values, sort_keys=False, allow_unicode=True))


def config_json(config: Any) -> str:
    return json.dumps(to_dict(config), sort_keys=True)


@dataclass
class LoopOptions:
    """Settings of the one continual-learning loop, shared by ``taalm learn``, the benchmarks and φ's validation."""

    epochs: int = option(30, "passes over the documents")
    lr: float = option(1e-4, "AdamW learning rate of θ")
    batch_size: int = option(64, "documents per optimizer step (official LAMA-ckl: 8 per GPU x 8 GPUs)")
    micro_batch: int = option(8, "documents per forward pass (gradients are accumulated up to --batch-size)")
    max_length: int = option(512, "documents longer than this are truncated to it, with a warning")
    eval_batch: int = option(32, "probes per evaluation forward pass")
    exact_match: bool = option(True, "also score whole-answer exact match after each epoch: greedy decoding from each "
                                     "probe's prefix must start with the answer (false: no decoding; the metrics hold "
                                     "null)")
    rho1_ratio: float = option(0.6, "RHO-1: fraction of tokens kept per sequence")
    recadam_k: float = option(0.5, "RecAdam: sigmoid anneal rate k")
    recadam_t0: int = option(250, "RecAdam: anneal midpoint t0 (optimizer steps)")
    recadam_coefficient: float = option(5000.0, "RecAdam: pretrain (quadratic pull) coefficient γ; -1: 0.5 / --lr, the "
                                                "paper's lr·γ (1e-4 · 5000): at lr·γ ≥ 2 the pull overshoots θ*")
    review_ratio: float = option(1.0, "Mix-Review: review documents per training document at epoch 0")
    review_decay: float = option(1.0, "Mix-Review: the review share at epoch e is ratio * decay**e (official TAALM "
                                      "runs: 1.0, constant)")
    gradient_checkpointing: bool = option(False, "recompute θ's activations in the backward pass: less memory, ~30%% "
                                                 "more time")
    seed: int = option(0, "seed for data order, adapter init and dropout")

    def __post_init__(self) -> None:
        if hasattr(super(), "__post_init__"):
            super().__post_init__()  # type: ignore[misc]
        _check(self.epochs > 0, "epochs", "must be positive")
        _check(self.lr > 0, "lr", "must be positive")
        _check(self.batch_size > 0, "batch_size", "must be positive")
        _check(self.micro_batch > 0, "micro_batch", "must be positive")
        _check(self.max_length >= 2, "max_length", "must be >= 2")
        _check(self.eval_batch > 0, "eval_batch", "must be positive")
        _check(0.0 < self.rho1_ratio <= 1.0, "rho1_ratio", "must be in (0, 1]")
        _check(self.recadam_coefficient >= 0 or self.recadam_coefficient == -1, "recadam_coefficient",
               "must be >= 0, or -1: 0.5 / lr")
        _check(self.review_ratio >= 0, "review_ratio", "must be >= 0")
        _check(0.0 < self.review_decay <= 1.0, "review_decay", "must be in (0, 1]")


def loop_options(config: Any) -> dict[str, Any]:
    """The ``LoopOptions`` fields of any config that has them, e.g. to hand a benchmark's settings to ``learn``."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(LoopOptions)}


@dataclass
class LearnConfig(LoopOptions, ModelOptions):
    """``taalm learn``: θ learns a document set with one method; probes are evaluated after every epoch."""

    model: str = option("smollm2-135m", "base model θ: alias, local directory or Hugging Face id")
    docs: str = option("", "JSONL of documents {text} (optional answer/task: oracle weights)")
    out: str = option("", "output directory: adapter weights, metrics.jsonl, config, learning-curve PNG")
    method: str = option("finetune", "finetune, oracle, taalm, rho1, recadam, mixreview, kadapter, or a combination "
                                     "such as taalm+kadapter")
    phi: str = option("", "trained φ: a directory written by meta-train, or a shipped alias (smollm2-135m)")
    probes: list[str] = option([], "probe sets NAME=FILE.jsonl ({task, answer} rows); accuracy and NLL per epoch")  # noqa: RUF009 (option() returns a dataclass field)
    review_docs: str = option("", "Mix-Review: JSONL of documents not to forget, replayed during training")
    init_from: str = option("", "start from the trained adapter (LoRA or K-Adapter) of an earlier `taalm learn` run "
                                "directory, with a fresh optimizer (e.g. last month's run)")
    checkpoint_every: int = option(0, "optimizer steps between mid-epoch checkpoints (0: only at epoch ends)")
    resume: bool = option(False, "continue the run in --out")

    def __post_init__(self) -> None:
        super().__post_init__()
        from taalm.methods import parse_method

        _check(bool(self.docs), "docs", "is required")
        _check(bool(self.out), "out", "is required")
        method = parse_method(self.method)
        _check(not (method.weights == "taalm" and not self.phi), "phi", "method taalm needs a trained φ (--phi DIR)")
        _check(not (method.mixreview and not self.review_docs), "review_docs",
               "method mixreview needs documents to review (--review-docs FILE)")
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


def apply_preset(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The preset's values (``cls.PRESETS[values["preset"]]``) under the explicitly given ones."""
    presets = getattr(cls, "PRESETS", {})
    preset = values.get("preset") or ""
    if preset and preset not in presets:
        raise TaalmError(f"option --preset: {preset!r} is not one of {', '.join(presets)}")
    return {**presets.get(preset, {}), **values}


@dataclass
class ExportConfig:
    """``taalm export``: a `taalm learn` run's LoRA merged into θ, saved as a plain transformers model."""

    run: str = option("", "a finished `taalm learn` run directory (its adapter/ and config.yaml)")
    out: str = option("", "new directory for the merged model, θ's tokenizer and a model card")
    dtype: str = option("float32", "dtype of the merged weights: float32 or bfloat16")

    def __post_init__(self) -> None:
        _check(bool(self.run), "run", "is required")
        _check(bool(self.out), "out", "is required")
        _check_choice(self.dtype, "dtype", ("float32", "bfloat16"))


@dataclass
class ExportPhiConfig:
    """``taalm export-phi``: a trained φ re-saved in the Hub format with a model card (how the shipped φs are made)."""

    phi: str = option("", "the trained φ: a meta-train output directory, a φ directory of either format, an alias")
    out: str = option("", "directory to write (replaced), e.g. src/taalm/resources/phi/NAME to ship it as --phi NAME")
    records: str = option("", "directory of the meta-training records for the card: config.yaml, data.json, "
                              "selection.json, history.jsonl (default: the φ's own directory)")
    storage_dtype: str = option("bfloat16", "dtype the tensors are stored in: bfloat16 or float32")

    def __post_init__(self) -> None:
        _check(bool(self.phi), "phi", "is required")
        _check(bool(self.out), "out", "is required")
        _check_choice(self.storage_dtype, "storage_dtype", ("bfloat16", "float32"))
