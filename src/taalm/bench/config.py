"""Typed configs of the benchmarks (CLI = YAML = Python) and their presets.

``BenchOptions`` holds what every benchmark shares: θ, the learning loop (``LoopOptions``), the methods, and how φ is
obtained (``--phi``: shipped, given, or meta-trained with the ``--meta.*`` options, the same ``MetaOptions`` as
``taalm meta-train``). Each benchmark adds its data options; its presets are YAML files shipped in
``taalm/resources/presets/<benchmark>/`` (``--preset NAME`` fills every option not given explicitly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar, Literal

from taalm.config import LoopOptions, MetaOptions, ModelOptions, _check, check_choices, listed
from taalm.errors import TaalmError

PHI_SOURCES = ("train", "auto")


def learn_periods() -> list[str]:
    """TemporalWiki's learned periods (``twiki_data.LEARN_PERIODS``, imported when needed: it loads the data code)."""
    from taalm.bench.twiki_data import LEARN_PERIODS

    return list(LEARN_PERIODS)


def load_presets(benchmark: str) -> dict[str, dict[str, Any]]:
    """The presets shipped for ``benchmark``: ``{name: values}`` from ``resources/presets/<benchmark>/<name>.yaml``."""
    import yaml

    folder = resources.files("taalm") / "resources" / "presets" / benchmark
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    return {f.name.removesuffix(".yaml"): yaml.safe_load(f.read_text(encoding="utf-8")) for f in files}


def bench_meta(values: MetaOptions | dict[str, Any] | None = None) -> MetaOptions:
    """A benchmark's meta-training options: validation learns at the benchmark's own lr and batch size unless told
    (``val_lr`` and ``val_batch_size`` 0); a mapping (YAML, presets, Python) is checked with ``--meta.`` names."""
    if isinstance(values, MetaOptions):
        return values
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(MetaOptions)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TaalmError(f"unknown option 'meta.{unknown[0]}'")
    try:
        return MetaOptions(**{"val_lr": 0.0, "val_batch_size": 0, **values})
    except TaalmError as e:
        raise TaalmError(str(e).replace("option --", "option --meta.", 1)) from None


@dataclass
class BenchOptions(LoopOptions, ModelOptions):
    """What every benchmark shares: θ, the learning loop, the methods, and φ."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    REQUIRED: ClassVar[tuple[str, ...]] = ("out",)

    model: str = "smollm2-135m"
    """base model θ: alias, local directory or Hugging Face id"""
    out: str = ""
    """output directory (resumable: finished parts are skipped)"""
    preset: str = ""
    """fills every option not given explicitly (the benchmark's presets: see --help's description)"""
    methods: list[str] = field(default_factory=lambda: ["finetune"])
    """methods to run, e.g. [finetune,taalm] (or finetune,taalm)"""
    baseline: str = ""
    """the method every other is paired with in the intervals and tables, one of --methods (empty: finetune, when it
    runs)"""
    seeds: list[int] = field(default_factory=list)
    """seeds, each a run in OUT/seed-<s> with its own split, data order and LoRA init (tailoring, lr selection and φ
    are shared); intervals pool them (empty: --seed)"""
    lr_candidates: list[float] = field(default_factory=list)
    """learning rates: θ's --lr is chosen among them by finetune's score on φ's held-out pairs (never on an evaluated
    set), and K-Adapter methods' by kadapter's own; empty: use --lr"""
    kadapter_lr_candidates: list[float] = field(default_factory=list)
    """K-Adapter methods' learning rates to choose among (freshly initialised adapter blocks need smaller ones); empty:
    --lr_candidates"""
    review_in_batch: bool = True
    """Mix-Review: review documents take their share of --batch_size (official: 32 new + 32 review per 64-document
    step); false: they come on top"""
    phi: str = "train"
    """φ: train (meta-train on the benchmark's meta pairs with --meta.*), auto (the φ shipped for --model, else train),
    a shipped alias, or a trained φ directory"""
    meta: MetaOptions = field(default_factory=bench_meta)
    """φ's meta-training when --phi trains it (as `taalm meta-train`; validation at the benchmark's --lr and
    --batch_size unless --meta.val_lr / --meta.val_batch_size are set)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        from taalm.methods import parse_method

        self.meta = bench_meta(self.meta)
        self.methods = listed(self.methods, str, "methods", "method names")
        self.seeds = listed(self.seeds, int, "seeds", "distinct non-negative integers")
        for name in ("lr_candidates", "kadapter_lr_candidates"):
            setattr(self, name, listed(getattr(self, name), float, name, "positive numbers"))
            _check(all(lr > 0 for lr in getattr(self, name)), name, f"{getattr(self, name)!r} is not a list of "
                                                                    "positive numbers")
        _check(bool(self.out), "out", "is required")
        _check(bool(self.methods), "methods", "no method given")
        for name in self.methods:
            parse_method(name)
        _check(not self.baseline or self.baseline in self.methods, "baseline",
               f"{self.baseline!r} is not one of the methods ({', '.join(self.methods)})")
        _check(bool(self.phi), "phi", f"give one of {', '.join(PHI_SOURCES)}, an alias or a directory")
        _check(all(s >= 0 for s in self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds",
               f"{self.seeds!r} is not a list of distinct non-negative integers")
        _check(not self.preset or self.preset in self.PRESETS, "preset",
               f"{self.preset!r} is not one of {', '.join(self.PRESETS)}")

    def method_list(self) -> list[str]:
        return list(self.methods)

    def seed_list(self) -> list[int]:
        """The seeds to run, in order: ``--seeds``, or ``--seed`` alone."""
        return list(self.seeds) or [self.seed]

    def lr_candidate_list(self) -> list[float]:
        return list(self.lr_candidates)

    def kadapter_lr_candidate_list(self) -> list[float]:
        return list(self.kadapter_lr_candidates) or self.lr_candidate_list()

    def baseline_method(self) -> str:
        """The method the others are paired with: --baseline, else finetune."""
        return self.baseline or "finetune"

    def needs_phi(self) -> bool:
        from taalm.methods import parse_method

        return any(parse_method(m).weights == "taalm" for m in self.method_list())


@dataclass
class TailorConfig:
    """``taalm tailor``: select the LAMA-ckl sets that fit a model (what it does not know / knows)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("out",)

    model: str = "smollm2-135m"
    """model to tailor the sets to: alias, local directory or Hugging Face id"""
    out: str = ""
    """output directory: to_learn.jsonl, not_to_forget.jsonl, meta_pool.jsonl, tailor.json"""
    split: Literal["tailored", "official"] = "tailored"
    """tailored (To-Learn from the fixed split's evaluation part, by the model's own accuracy) or official (the
    paper's sets: every variant row To-Learn, every invariant_descriptive row Not-To-Forget)"""
    data_dir: str = ""
    """directory with variant/invariant_*.jsonl (default: the copies shipped with taalm)"""
    to_learn: int = 0
    """stop once this many To-Learn rows are found (evaluation-part rows scored in a seeded order; 0: all)"""
    not_to_forget: int = 0
    """keep this many Not-To-Forget rows, in a seeded order (0: all)"""
    pool_max_accuracy: float = 0.5
    """meta pool: only facts the model does not know, base accuracy below this on both the descriptive and the
    schematic task (the official φ pairs: < 0.5); 1.0 keeps every remaining fact"""
    seed: int = 0
    """order in which rows are scored and picked when a limit is set"""
    eval_batch: int = 32
    """rows per forward pass"""
    max_length: int = 512
    """documents are truncated to this many tokens"""
    device: str = "auto"
    """auto, cpu, cuda"""
    reuse_scores: str = ""
    """a tailor.json of an earlier tailoring of the same model and data files: its base accuracies are reused, after
    --reuse_check of them per task form were scored again and all agreed; other rows are scored"""
    reuse_check: int = 32
    """rows per task form scored again before --reuse_scores is trusted"""

    def __post_init__(self) -> None:
        _check(bool(self.out), "out", "is required")
        _check(self.reuse_check > 0, "reuse_check", "must be positive")
        _check(self.to_learn >= 0 and self.not_to_forget >= 0, "to_learn", "limits must be >= 0")
        check_choices(self)
        _check(self.eval_batch > 0, "eval_batch", "must be positive")
        _check(0.0 < self.pool_max_accuracy <= 1.0, "pool_max_accuracy", "must be in (0, 1]")


@dataclass
class PhiDataConfig:
    """``taalm phi-data``: φ's meta-training pairs from several kinds of documents (``taalm.bench.phi_data``), for
    ``taalm meta-train --pairs``, which validates φ on each kind and selects it by the worst."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("lama_pool", "out")

    lama_pool: str = ""
    """the LAMA-ckl meta pool tailored to θ: meta_pool.jsonl of `taalm tailor --model THETA --out DIR`"""
    out: str = ""
    """JSONL to write (document, task, answer, kind, source); the mixture's record goes beside it (.json)"""
    per_kind: int = 256
    """pairs of each kind (lama, fictional, temporalwiki), seeded"""
    seed: int = 0
    """seed of the sampling, the generated facts and the built documents"""
    filler: int = 4
    """fictional documents: filler sentences around the fact"""
    generator_version: Literal["1", "2", "3", "4"] = "2"
    """fictional generator: 2 gives the train side its own filler sentences, 3 its own wording of every relation too
    (none of the test side's fact sentences), 4 relations of its own only (22, none the test side asks); 1 rebuilds
    the pairs of φs made before 2026-12-02 (whose train side shared the test side's filler)"""
    split_lama: bool = False
    """two LAMA-ckl kinds, lama_variant (the To-Learn relations: the variant split's φ part) and lama_invariant, each
    --per_kind pairs (or as many as the pool has) and validated on its own, instead of one lama kind"""
    temporalwiki_wording: Literal["shared", "own"] = "shared"
    """TemporalWiki documents' fact sentences: the phrasings the benchmark's documents use (shared, as φs made before
    2026-12-06), or φ's own (none an evaluated document's; twiki_data.PHI_TEMPLATES)"""

    def __post_init__(self) -> None:
        _check(bool(self.lama_pool), "lama_pool", "is required")
        _check(bool(self.out), "out", "is required")
        _check(self.per_kind > 0, "per_kind", "must be positive")
        _check(self.filler >= 0, "filler", "must be >= 0")


@dataclass
class CompareRunsConfig:
    """``taalm bench compare``: NEW's method − OLD's method on the same benchmark's sets, paired fact by fact with the
    benchmark's own statistic and bootstrap (``taalm.bench.compare``)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("new", "old")

    new: str = ""
    """OUT directory of a finished benchmark run (lama-ckl, fictional or temporalwiki)"""
    old: str = ""
    """OUT directory of a finished run of the same benchmark on the same sets (it may be NEW itself)"""
    new_method: str = "taalm"
    """NEW's method whose rows are compared"""
    old_method: str = "taalm"
    """OLD's method whose rows are compared (finetune: the baseline of the run NEW reused)"""
    seeds: list[int] = field(default_factory=list)
    """seeds to pair (default: every seed both runs have)"""
    out: str = ""
    """JSON to write: both means, the paired difference's per-seed values, mean and 95 % interval per statistic
    (default: print only)"""

    def __post_init__(self) -> None:
        _check(bool(self.new), "new", "is required")
        _check(bool(self.old), "old", "is required")
        _check(self.new != self.old or self.new_method != self.old_method, "old_method",
               "compares a method with itself: name another run or method")


@dataclass
class LamaCklConfig(BenchOptions):
    """``taalm bench lama-ckl``: every method on LAMA-ckl, the paper's table, curves and a summary."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = load_presets("lama-ckl")

    methods: list[str] = field(default_factory=lambda: list(LamaCklConfig.PRESETS["paper"]["methods"]))
    """methods to run, e.g. [finetune,taalm] (or finetune,taalm)"""
    split: Literal["tailored", "official"] = "tailored"
    """tailored (To-Learn from the fixed split's evaluation part, by θ's own accuracy) or official (the paper's 500
    To-Learn + 500 Not-To-Forget rows)"""
    tailor_dir: str = ""
    """an existing `taalm tailor` output (default: tailor into OUT/split)"""
    to_learn: int = 0
    """use at most this many To-Learn rows (0: all)"""
    not_to_forget: int = 0
    """use at most this many Not-To-Forget rows (0: all)"""
    meta_pool: int = 0
    """use at most this many meta-pool pairs for φ (0: all)"""
    window: bool = False
    """cut documents longer than --max_length to a window around the answer (instead of truncating them)"""
    task_format: Literal["descriptive", "schematic"] = "descriptive"
    """φ's meta-training tasks: descriptive (cloze) or schematic"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("to_learn", "not_to_forget", "meta_pool"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")


@dataclass
class TemporalWikiConfig(BenchOptions):
    """``taalm bench temporalwiki``: θ learns three monthly Wikipedia periods in sequence with every method; changed
    (to learn) and unchanged (not to forget) object NLL before and after each period."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = load_presets("temporalwiki")

    methods: list[str] = field(default_factory=lambda: list(TemporalWikiConfig.PRESETS["paper"]["methods"]))
    """methods to run, e.g. [finetune,taalm] (or finetune,taalm); the paper's: no oracle"""
    periods: list[str] = field(default_factory=learn_periods)
    """the periods θ learns, in order (0801-0901 is φ's and never learned)"""
    diffsets: str = ""
    """directory with the official diff documents, one {period}.jsonl of {text} rows per period (default: documents
    built from the probes)"""
    data_dir: str = ""
    """directory with {period}_{changed,unchanged}.jsonl probes (default: shipped copies)"""
    changed_subjects: int = 0
    """per period, learn and probe this many seeded changed subjects (0: all)"""
    unchanged: int = 0
    """per period, probe this many seeded unchanged facts (0: all)"""
    meta_subjects: int = 0
    """0801-0901 subjects whose documents make φ's meta-training pairs (0: all)"""
    review_paragraphs: int = 512
    """Mix-Review: general Wikipedia paragraphs (never evaluated) to replay"""
    eval_all_periods: bool = False
    """after each period also probe every other period's sets (forgetting of what was learned before)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.periods = listed(self.periods, str, "periods", "periods")
        known = learn_periods()
        for period in self.periods:
            _check(period in known, "periods", f"{period!r} is not a learned period ({', '.join(known)})")
        _check(bool(self.periods), "periods", "no period given")
        _check(len(set(self.periods)) == len(self.periods), "periods", "a period is repeated")
        for name in ("changed_subjects", "unchanged", "meta_subjects", "review_paragraphs"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")

    def period_list(self) -> list[str]:
        return list(self.periods)


@dataclass
class FictionalConfig(BenchOptions):
    """``taalm bench fictional``: facts about generated fictional entities (no pretrained model can know them) learned
    with every method; Not-To-Forget = LAMA-ckl facts θ knows. Headline: To-Learn accuracy at the last epoch."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = load_presets("fictional")

    methods: list[str] = field(default_factory=lambda: ["finetune", "oracle", "taalm"])
    """methods to run, e.g. [finetune,taalm] (or finetune,taalm)"""
    to_learn: int = 64
    """generated facts θ learns (the generator's test side), new for every seed"""
    not_to_forget: int = 64
    """Not-To-Forget: a seeded subset of the LAMA-ckl facts θ knows (tailored)"""
    phi_pairs: int = 512
    """generated train-side pairs φ meta-trains on (--phi train)"""
    held_out: int = 32
    """generated train-side pairs, not φ's, on which --lr_candidates are compared"""
    filler: int = 4
    """neutral filler sentences per document; the fact sentence goes first, between or last"""
    generator_version: Literal["1", "2", "3", "4"] = "2"
    """generator of the train side (φ's pairs, lr selection): 2 gives it its own filler sentences, 3 its own wording
    of every relation too, 4 relations of its own only; 1 reproduces runs made before 2026-12-02. The test side
    (To-Learn) is the same in all"""
    style: Literal["prose", "letter", "record"] = "prose"
    """how the To-Learn documents are written: prose (filler sentences around the fact), or a kind of document φ
    never trains on: letter (a personal letter) or record (an archive card, one field per line)"""
    tailor_dir: str = ""
    """an existing `taalm tailor` output whose not_to_forget.jsonl gives the NF facts (default: tailor into
    OUT/split)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("to_learn", "not_to_forget", "phi_pairs"):
            _check(getattr(self, name) > 0, name, "must be positive")
        _check(self.held_out >= 0, "held_out", "must be >= 0")
        _check(self.held_out > 0 or not self.lr_candidate_list(), "held_out", "--lr_candidates are compared on "
                                                                              "these pairs: give at least one")
        _check(self.filler >= 2, "filler", "must be >= 2 (the fact's place: first, between or last)")
