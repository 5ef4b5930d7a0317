"""Typed configs shared by the CLI, YAML files and the Python API.

Each command has one dataclass: its fields (with the paper's defaults) are the command's options and the docstring
under each field is its help; ``taalm.cli`` turns them into flags with jsonargparse (``dummy_steps`` is
``--dummy_steps``, a nested dataclass such as a benchmark's ``meta`` is ``--meta.inner_lr``), ``--config FILE.yaml``
fills them from a file and explicit flags win. Choices are ``Literal`` types, checked on construction as well
(``check_choices``), so the Python API and YAML files get the same one-line errors as the command line; ranges are
checked in ``__post_init__`` with errors that name the option.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from taalm.errors import TaalmError

C = TypeVar("C")
T = TypeVar("T")


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise TaalmError(f"option --{name}: {message}")


@functools.cache
def _choices(cls: type) -> dict[str, tuple[tuple[Any, ...], tuple[type, ...]]]:
    """For each ``Literal`` field of ``cls``: its allowed values and the other types its union admits."""
    found = {}
    for name, hint in typing.get_type_hints(cls).items():
        members = typing.get_args(hint) if isinstance(hint, types.UnionType) or \
            typing.get_origin(hint) is typing.Union else (hint,)
        literals = [m for m in members if typing.get_origin(m) is Literal]
        if literals:
            others = tuple(m for m in members if typing.get_origin(m) is not Literal)
            found[name] = (tuple(v for m in literals for v in typing.get_args(m)), others)
    return found


def check_choices(config: Any, prefix: str = "") -> None:
    """Every ``Literal`` field holds one of its values (``option --dtype: 'half' is not one of auto, float32, ...``)."""
    for name, (allowed, others) in _choices(type(config)).items():
        value = getattr(config, name)
        if value not in allowed and not isinstance(value, others):
            _check(False, prefix + name, f"{value!r} is not one of {', '.join(map(str, allowed))}")


def listed(value: Any, convert: Callable[[Any], T], name: str, kind: str) -> list[T]:
    """A list option as a list, also from the comma form ``"0,1,2"`` (command line and Python API alike)."""
    items = [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) else value
    try:
        return [convert(x) for x in items]
    except (TypeError, ValueError):
        raise TaalmError(f"option --{name}: {value!r} is not a list of {kind}") from None


@dataclass
class ModelOptions:
    """How θ (and φ's backbone) are loaded and adapted; shared by every command that trains."""

    lora_r: int = 64
    """LoRA rank (paper: 64)"""
    lora_alpha: int = 16
    """LoRA alpha (paper: 16)"""
    lora_dropout: float = 0.1
    """LoRA dropout (paper: 0.1)"""
    qlora: Literal["true", "false", "auto"] | bool = "false"
    """load θ in 4 bit: true (needs CUDA and bitsandbytes), false, or auto (where both are present)"""
    dtype: Literal["auto", "float32", "bfloat16", "float64"] = "auto"
    """compute dtype: auto (bf16 autocast on GPU, float32 on CPU), float32, bfloat16, float64"""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N"""
    attn_implementation: Literal["auto", "eager", "sdpa"] = "auto"
    """attention kernel for plain steps"""
    log: Literal["none", "tensorboard", "wandb"] = "none"
    """experiment tracking"""

    def __post_init__(self) -> None:
        if isinstance(self.qlora, bool):  # YAML and the Python API may say true/false
            self.qlora = "true" if self.qlora else "false"
        self.qlora = str(self.qlora).lower()
        check_choices(self)
        _check(self.lora_r > 0, "lora_r", "must be positive")
        _check(self.lora_alpha > 0, "lora_alpha", "must be positive")
        _check(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)")

    def use_qlora(self) -> bool:
        """Whether θ is loaded in 4 bit: as asked, or (auto) wherever CUDA and bitsandbytes are present."""
        if self.qlora == "auto":
            import importlib.util

            import torch

            return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None
        return self.qlora == "true"


@dataclass
class MetaOptions:
    """How φ is meta-trained: ``taalm meta-train``'s own options, and a benchmark's ``--meta.*`` when it trains φ."""

    phi_model: str = ""
    """φ's backbone (default: θ); must share θ's tokenizer"""
    phi_layers: int = 0
    """keep only the first N transformer layers of φ's backbone (0: all)"""
    phi_lora_r: int = 0
    """LoRA rank of φ's backbone (0: the --lora_r of θ)"""
    phi_echo: bool = False
    """not in the paper: φ reads each document twice and weights a token at its second reading, so that the weight
    can depend on the words after the token (the paper's causal φ sees only those before it: a fact stated answer
    first, "X founded Y", gives no cue at X)"""
    weight_floor: float = 0.0
    """not in the paper: φ's weights are floor + (1 - floor)·sigmoid, bounding their contrast by 1/floor (0: the
    paper's sigmoid)"""
    weight_temperature: float = 1.0
    """not in the paper: φ's weights are sigmoid(logit / temperature); below 1 sharpens their contrast, above 1
    flattens it (1: the paper's sigmoid)"""
    weight_floor_share: float = 0.0
    """not in the paper: instead of a fixed --weight_floor, each document's floor is set so that it carries this share
    of the document's total weight (the same contrast whatever φ's sigmoid mass on the document; 0: off)"""
    answer_mask_steps: int = 0
    """not in the paper: before meta-training, fit φ for this many steps to the answer-token masks of its training
    documents (binary cross-entropy, the oracle's weights as labels; ``taalm.answer_mask``); 0: meta-learning only"""
    answer_mask_lr: float = 1e-3
    """the answer-mask warm start's AdamW learning rate"""
    answer_mask_pos_weight: float = 1.0
    """not in the paper: weight of an answer token's term in the warm start's cross-entropy; above 1 a missed answer
    token (never learned at a low weight) costs more than a weighted non-answer token (1: plain cross-entropy)"""
    dummy_steps: int = 1
    """non-differentiable inner steps before the differentiable one"""
    inner_lr: float = 2e-4
    """inner AdamW learning rate (θ)"""
    inner_weight_decay: float = 0.01
    """inner AdamW weight decay"""
    outer_lr: float = 2e-4
    """outer AdamW learning rate (φ)"""
    meta_batch: int = 16
    """pairs per φ update (their meta-gradients are averaged)"""
    inner_batch: int = 1
    """pairs per inner problem (official: 1; larger is faster, changes the inner problem)"""
    pair_batch: int = 1
    """inner problems computed together in one batch, θ's LoRA stacked per row (each still its own problem: the same
    gradient, less time, more memory); 1: one at a time"""
    max_length: int = 512
    """documents longer than this are cut to a window around the answer"""
    objective: Literal["obj", "change2", "change3"] = "obj"
    """outer objective: task label NLL after the step (obj), or the official change2 / change3"""
    restrict: bool = False
    """add the official restrict term: |NLL change| on an unrelated task"""
    updates: int = 0
    """number of φ updates (0: --epochs passes over the pairs)"""
    epochs: int = 1
    """passes over the pairs when --updates is 0 (both 0: no meta-update, φ is the --answer_mask_steps warm start,
    validated once)"""
    held_out: int = -1
    """pairs kept out of training for validation (-1: 16, or a tenth below 160 pairs, none for 1 pair; 0: none)"""
    val_every: int = 10
    """φ updates between validations (also at update 0 and at the end)"""
    val_epochs: int = 4
    """validation: epochs θ learns the held-out documents"""
    val_lr: float = 2e-4
    """validation: θ's learning rate (use the learning phase's; in a benchmark 0 means its --lr)"""
    val_lr_by_kind: dict[str, float] = field(default_factory=dict)
    """validation: θ's learning rate for a kind of document, overriding --val_lr for it (e.g. {"lama": 1e-3}: a kind
    whose uniform run learns nothing at --val_lr ties every φ at a gain of 0)"""
    val_batch_size: int = 8
    """validation: documents per optimizer step (use the learning phase's; in a benchmark 0 means its --batch_size)"""
    val_group: int = 0
    """validation: learn each kind's held-out pairs in groups of about this many, each group from θ's start, their
    scores pooled (0: all together): a large held-out set measured at a small one's step count"""
    val_metric: Literal["accuracy", "nll"] = "accuracy"
    """validation gain measured on: accuracy (ties broken by NLL) or nll"""
    select: Literal["best", "last"] = "best"
    """the φ kept: best (highest validation gain) or last"""
    checkpoint_every: int = 10
    """φ updates between checkpoints"""

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("answer_mask_steps", "dummy_steps", "phi_layers", "phi_lora_r", "updates", "epochs",
                     "val_batch_size", "val_group"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("meta_batch", "inner_batch", "pair_batch", "val_every", "val_epochs",
                     "checkpoint_every"):
            _check(getattr(self, name) > 0, name, "must be positive")
        _check(0.0 <= self.weight_floor < 1.0, "weight_floor", "must be in [0, 1)")
        _check(self.weight_temperature > 0, "weight_temperature", "must be positive")
        _check(0.0 <= self.weight_floor_share < 1.0, "weight_floor_share", "must be in [0, 1)")
        _check(not (self.weight_floor and self.weight_floor_share), "weight_floor_share",
               "sets the floor per document: leave --weight_floor at 0")
        _check(self.answer_mask_lr > 0, "answer_mask_lr", "must be positive")
        _check(self.answer_mask_pos_weight > 0, "answer_mask_pos_weight", "must be positive")
        _check(self.inner_lr > 0, "inner_lr", "must be positive")
        _check(self.outer_lr > 0, "outer_lr", "must be positive")
        _check(self.val_lr >= 0, "val_lr", "must be >= 0")
        _check(all(lr > 0 for lr in self.val_lr_by_kind.values()), "val_lr_by_kind", "must be positive")
        _check(self.meta_batch % self.inner_batch == 0, "meta_batch", "must be a multiple of --inner_batch")
        _check(self.pair_batch == 1 or self.inner_batch == 1, "pair_batch", "stacks one-pair problems: needs "
                                                                            "--inner_batch 1")
        _check(self.max_length >= 2, "max_length", "must be >= 2")
        _check(self.held_out >= -1, "held_out", "must be >= 0 (or -1: automatic)")
        _check(self.updates or self.epochs or self.answer_mask_steps, "epochs",
               "0 with --updates 0 leaves φ untrained: needs --answer_mask_steps")


@dataclass
class MetaTrainConfig(MetaOptions, ModelOptions):
    """``taalm meta-train``: learn φ so that one weighted inner step of θ on D best solves T_D."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("pairs", "out")

    theta: str = "smollm2-135m"
    """base model θ: alias, local directory or Hugging Face id"""
    pairs: str = ""
    """JSONL of {document, task, answer} (LAMA-ckl rows with evidence/task_descriptive/object work too)"""
    out: str = ""
    """output directory: the selected φ, its config, history, validation checkpoints"""
    task_format: Literal["descriptive", "schematic"] = "descriptive"
    """LAMA-ckl pairs: the cloze task (descriptive) or 'Guess the object' (schematic, needs task_schematic in each
    row)"""
    resume: bool = False
    """continue from the checkpoint in --out"""
    revalidate: str = ""
    """no meta-training: validate the φ checkpoints of this earlier run (made with the same pairs, θ and seed) with
    this command's validation options and write to --out the run as if it had been validated so"""
    uniform_from: str = ""
    """take the uniform-weight validation scores recorded by this earlier run (the same pairs, θ, seed and validation
    options, checked) instead of learning them again: candidates compared on one held-out set skip those runs"""
    seed: int = 0
    """seed for data order, held-out split, LoRA init and dropout"""

    def __post_init__(self) -> None:
        ModelOptions.__post_init__(self)
        MetaOptions.__post_init__(self)
        _check(bool(self.pairs), "pairs", "is required")
        _check(bool(self.out), "out", "is required")
        _check(self.val_lr > 0, "val_lr", "must be positive")
        _check(self.val_batch_size > 0, "val_batch_size", "must be positive")

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
    """``taalm weights``: show where a trained φ puts its weight; with ``--position_check``, whether it weighs the
    fact tokens of TemporalWiki's built documents or their place (``taalm.position_check``)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("phi",)

    phi: str = ""
    """trained φ directory (output of meta-train)"""
    text: str = ""
    """a document to weigh"""
    file: str = ""
    """JSONL of documents ({text} or {document} or LAMA-ckl rows)"""
    out: str = ""
    """HTML heatmap to write, a PNG next to it (default: weights.html); with --position_check a JSON of the lifts
    (default: none, the table is printed)"""
    limit: int = 20
    """at most this many documents from --file"""
    max_length: int = 512
    """documents are truncated to this many tokens (--position_check: longer ones are skipped)"""
    color: bool = True
    """colour the terminal output"""
    relative: bool = True
    """show weights divided by each document's largest (the loss ignores their scale)"""
    device: str = "auto"
    """auto, cpu, cuda"""
    position_check: bool = False
    """instead of a heatmap: φ's fact-weight lift on TemporalWiki documents built from --period's probes, with the
    facts in place, moved first and moved last"""
    answer_ranking: bool = False
    """instead of a heatmap: φ's answer-token ROC-AUC on --per_kind evaluation-side documents of each kind (LAMA-ckl,
    fictional, TemporalWiki), beside a random ranking's 99.9th percentile on the same documents"""
    per_kind: int = 32
    """--answer_ranking: documents of each kind"""
    period: str = "0901-1001"
    """--position_check: the TemporalWiki period whose changed facts are built"""
    subjects: int = 32
    """--position_check: this many seeded subjects, one document each (0: all)"""
    seed: int = 0
    """--position_check: the seed of the subjects and the builder (as the benchmark's --seed); --answer_ranking: of
    the documents"""

    def __post_init__(self) -> None:
        _check(bool(self.phi), "phi", "is required")
        _check(self.limit > 0, "limit", "must be positive")
        _check(self.max_length >= 2, "max_length", "must be >= 2")
        _check(not (self.position_check and self.answer_ranking), "answer_ranking", "give one of --position_check "
                                                                                   "and --answer_ranking")
        if self.answer_ranking:
            _check(not self.text and not self.file, "answer_ranking", "uses its own documents: give neither --text "
                                                                      "nor --file")
            _check(self.per_kind > 0, "per_kind", "must be positive")
            return
        if self.position_check:
            from taalm.bench.twiki_data import PERIODS

            _check(not self.text and not self.file, "position_check", "builds its own documents: give neither "
                                                                      "--text nor --file")
            _check(self.period in PERIODS, "period", f"{self.period!r} is not one of {', '.join(PERIODS)}")
            _check(self.subjects >= 0, "subjects", "must be >= 0")
            return
        _check(bool(self.text) != bool(self.file), "text", "give exactly one of --text and --file")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) file of option values, as a dict; errors name the file and line."""
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


@dataclass
class LoopOptions:
    """Settings of the one continual-learning loop, shared by ``taalm learn``, the benchmarks and φ's validation."""

    epochs: int = 30
    """passes over the documents"""
    lr: float = 1e-4
    """AdamW learning rate of θ"""
    batch_size: int = 64
    """documents per optimizer step (official LAMA-ckl: 8 per GPU x 8 GPUs)"""
    micro_batch: int = 8
    """documents per forward pass (gradients are accumulated up to --batch_size)"""
    max_length: int = 512
    """documents longer than this are truncated to it, with a warning"""
    eval_batch: int = 32
    """probes per evaluation forward pass"""
    exact_match: bool = True
    """also score whole-answer exact match after each epoch: greedy decoding from each probe's prefix must start with
    the answer (false: no decoding; the metrics hold null)"""
    rho1_ratio: float = 0.6
    """RHO-1: fraction of tokens kept per sequence"""
    recadam_k: float = 0.5
    """RecAdam: sigmoid anneal rate k"""
    recadam_t0: int = 250
    """RecAdam: anneal midpoint t0 (optimizer steps)"""
    recadam_coefficient: float = 5000.0
    """RecAdam: pretrain (quadratic pull) coefficient γ; -1: 0.5 / --lr, the paper's lr·γ (1e-4 · 5000): at lr·γ ≥ 2
    the pull overshoots θ*"""
    review_ratio: float = 1.0
    """Mix-Review: review documents per training document at epoch 0"""
    review_decay: float = 1.0
    """Mix-Review: the review share at epoch e is ratio * decay**e (official TAALM runs: 1.0, constant)"""
    gradient_checkpointing: bool = False
    """recompute θ's activations in the backward pass: less memory, about a third more time"""
    seed: int = 0
    """seed for data order, adapter init and dropout"""

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

    REQUIRED: ClassVar[tuple[str, ...]] = ("docs", "out")

    model: str = "smollm2-135m"
    """base model θ: alias, local directory or Hugging Face id"""
    docs: str = ""
    """JSONL of documents {text} (optional answer/task: oracle weights)"""
    out: str = ""
    """output directory: adapter weights, metrics.jsonl, config, learning-curve PNG"""
    method: str = "finetune"
    """finetune, oracle, taalm, rho1, recadam, mixreview, kadapter, or a combination such as taalm+kadapter"""
    phi: str = ""
    """trained φ: a directory written by meta-train, or a shipped alias (smollm2-135m)"""
    probes: list[str] = field(default_factory=list)
    """probe sets NAME=FILE.jsonl ({task, answer} rows); accuracy and NLL per epoch"""
    review_docs: str = ""
    """Mix-Review: JSONL of documents not to forget, replayed during training"""
    init_from: str = ""
    """start from the trained adapter (LoRA or K-Adapter) of an earlier `taalm learn` run directory, with a fresh
    optimizer (e.g. last month's run)"""
    checkpoint_every: int = 0
    """optimizer steps between mid-epoch checkpoints (0: only at epoch ends)"""
    resume: bool = False
    """continue the run in --out"""

    def __post_init__(self) -> None:
        super().__post_init__()
        from taalm.methods import parse_method

        _check(bool(self.docs), "docs", "is required")
        _check(bool(self.out), "out", "is required")
        method = parse_method(self.method)
        _check(not (method.weights == "taalm" and not self.phi), "phi", "method taalm needs a trained φ (--phi DIR)")
        _check(not (method.mixreview and not self.review_docs), "review_docs",
               "method mixreview needs documents to review (--review_docs FILE)")
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
    """The preset's values (``cls.PRESETS[values["preset"]]``) under the explicitly given ones; a nested option
    group such as ``meta`` is merged key by key."""
    presets = getattr(cls, "PRESETS", {})
    preset = values.get("preset") or ""
    if preset and preset not in presets:
        raise TaalmError(f"option --preset: {preset!r} is not one of {', '.join(presets)}")
    merged = {**presets.get(preset, {}), **values}
    for key, value in presets.get(preset, {}).items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            merged[key] = {**value, **values[key]}
    return merged


@dataclass
class ExportConfig:
    """``taalm export``: a `taalm learn` run's LoRA merged into θ, saved as a plain transformers model."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("run", "out")

    run: str = ""
    """a finished `taalm learn` run directory (its adapter/ and config.yaml)"""
    out: str = ""
    """new directory for the merged model, θ's tokenizer and a model card"""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the merged weights"""

    def __post_init__(self) -> None:
        _check(bool(self.run), "run", "is required")
        _check(bool(self.out), "out", "is required")
        check_choices(self)


@dataclass
class ComparePhiConfig:
    """``taalm compare-phi``: choose among trained φs by their worst kind's validation gain on the same held-out pairs.

    The runs differ in a knob (layers, weight floor or temperature, objective...); the rule is meta-train's."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("runs",)

    runs: list[str] = field(default_factory=list)
    """meta-train (or --revalidate) output directories, validated on the same held-out pairs"""
    out: str = ""
    """JSON to write: the rule, the chosen run and every candidate's validation (default: print only); a PNG of the
    gains per kind beside it"""

    def __post_init__(self) -> None:
        _check(len(self.runs) >= 2, "runs", "needs at least two runs to compare")
        _check(len(set(self.runs)) == len(self.runs), "runs", "must be distinct")


@dataclass
class ValidatePhiConfig:
    """``taalm validate-phi``: trained φs validated on held-out pairs of your own, as meta-training validates its
    checkpoints (θ learns the documents for a few epochs with φ's weights and with uniform weights, per kind), and the
    worst-kind rule's choice among them."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("phi", "pairs", "out")

    phi: list[str] = field(default_factory=list)
    """the φs: shipped aliases, trained φ directories, Hub ids (each with its own weight floor and temperature)"""
    pairs: str = ""
    """JSONL of {document, task, answer[, kind]}: every pair is held out; none should be in any φ's training pairs"""
    out: str = ""
    """directory to write: one meta-train-style record per φ (compare-phi reads them), compare.json, table.md"""
    like: str = ""
    """a meta-train run (its directory) whose θ start and validation options to measure with, so gains compare with
    that run's (default: meta-train's defaults with --theta)"""
    theta: str = "smollm2-135m"
    """base model θ when no --like run is given"""
    group: int = 0
    """learn each kind's pairs in groups of about this many, each from θ's start (0: the --like run's --val_group,
    all together without one): many fresh pairs measured at the step count of the run's own validation"""
    device: str = ""
    """where θ learns: auto, cpu, cuda, cuda:N (default: the --like run's device; auto without one)"""

    def __post_init__(self) -> None:
        _check(bool(self.phi), "phi", "needs at least one φ")
        _check(len(set(self.phi)) == len(self.phi), "phi", "must be distinct")
        _check(self.group >= 0, "group", "must be >= 0")


@dataclass
class ExportPhiConfig:
    """``taalm export-phi``: a trained φ re-saved in the Hub format with a model card (how the shipped φs are made)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("phi", "out")

    phi: str = ""
    """the trained φ: a meta-train output directory, a φ directory of either format, an alias"""
    out: str = ""
    """directory to write (replaced), e.g. src/taalm/resources/phi/NAME to ship it as --phi NAME"""
    records: str = ""
    """directory of the meta-training records for the card: config.yaml, data.json, selection.json, history.jsonl
    (default: the φ's own directory)"""
    storage_dtype: Literal["bfloat16", "float32"] = "bfloat16"
    """dtype the tensors are stored in"""

    def __post_init__(self) -> None:
        _check(bool(self.phi), "phi", "is required")
        _check(bool(self.out), "out", "is required")
        check_choices(self)
