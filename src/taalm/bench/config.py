"""Typed configs of the benchmarks (CLI = YAML = Python) and their presets.

``BenchOptions`` holds what every benchmark shares: θ, the learning loop (``LoopOptions``), the methods, and how φ is
obtained (``--phi``: shipped, given, or meta-trained with the ``meta_*`` options). Each benchmark adds its data options
and its presets (``PRESETS``, applied under explicitly given options).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from taalm.config import OBJECTIVES, TASK_FORMATS, LoopOptions, ModelOptions, _check, _check_choice, option

PHI_SOURCES = ("train", "auto")


def _numbers(text: str) -> list[float]:
    """A comma-separated list of numbers ("1e-3,3e-3"); empty text gives []."""
    return [float(x) for x in text.split(",") if x.strip()]


@dataclass
class BenchOptions(LoopOptions, ModelOptions):
    """What every benchmark shares: θ, the learning loop, the methods, and φ."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    model: str = option("smollm2-135m", "base model θ: alias, local directory or Hugging Face id")
    out: str = option("", "output directory (resumable: finished parts are skipped)")
    preset: str = option("", "fills every option not given explicitly (see the benchmark's presets)")
    methods: str = option("finetune", "comma-separated methods")
    seeds: str = option("", "comma-separated seeds, each a run in OUT/seed-<s> with its own split, data order and "
                            "LoRA init (tailoring, lr selection and φ are shared); intervals pool them (empty: --seed)")
    lr_candidates: str = option("", "comma-separated learning rates: θ's --lr is chosen among them by finetune's "
                                    "score on φ's held-out pairs (never on an evaluated set), and K-Adapter "
                                    "methods' by kadapter's own; empty: use --lr")
    kadapter_lr_candidates: str = option("", "K-Adapter methods' learning rates to choose among (freshly initialised "
                                             "adapter blocks need smaller ones); empty: --lr-candidates")
    review_in_batch: bool = option(True, "Mix-Review: review documents take their share of --batch-size (official: 32 "
                                         "new + 32 review per 64-document step); false: they come on top")
    phi: str = option("train", "φ: train (meta-train on the benchmark's meta pairs), auto (the φ shipped for --model, "
                               "else train), a shipped alias, or a trained φ directory")
    phi_model: str = option("", "φ's backbone when meta-training (default: --model); must share θ's tokenizer")
    phi_layers: int = option(0, "meta-training: keep only the first N layers of φ's backbone (0: all)")
    phi_lora_r: int = option(0, "meta-training: LoRA rank of φ (0: --lora-r)")
    meta_updates: int = option(0, "meta-training: φ updates (0: --meta-epochs passes over the pairs)")
    meta_epochs: int = option(1, "meta-training: passes over the pairs when --meta-updates is 0")
    meta_batch: int = option(16, "meta-training: pairs per φ update")
    meta_inner_lr: float = option(2e-4, "meta-training: inner AdamW learning rate (θ)")
    meta_outer_lr: float = option(2e-4, "meta-training: outer AdamW learning rate (φ)")
    inner_batch: int = option(1, "meta-training: pairs per inner problem")
    meta_pair_batch: int = option(1, "meta-training: one-pair inner problems computed together, stacked (same gradient)")
    dummy_steps: int = option(1, "meta-training: non-differentiable inner steps before the differentiable one")
    objective: str = option("obj", "meta-training: outer objective (obj, change2, change3)")
    meta_max_length: int = option(512, "meta-training: documents are windowed around the answer to this many tokens")
    meta_held_out: int = option(-1, "meta-training: pairs held out for validation and lr selection (-1: automatic)")
    meta_val_every: int = option(10, "meta-training: φ updates between validations")
    meta_val_epochs: int = option(4, "meta-training: epochs of each validation run (at --meta-val-lr and "
                                     "--meta-val-batch)")
    meta_val_lr: float = option(0.0, "meta-training: θ's learning rate in each validation run (0: --lr)")
    meta_val_batch: int = option(0, "meta-training: documents per step in each validation run (0: --batch-size)")

    def __post_init__(self) -> None:
        super().__post_init__()
        from taalm.methods import parse_method

        _check(bool(self.out), "out", "is required")
        _check(bool(self.method_list()), "methods", "no method given")
        for name in self.method_list():
            parse_method(name)
        _check_choice(self.objective, "objective", OBJECTIVES)
        _check(bool(self.phi), "phi", f"give one of {', '.join(PHI_SOURCES)}, an alias or a directory")
        for name in ("meta_updates", "phi_layers", "phi_lora_r", "meta_val_batch"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("meta_epochs", "meta_batch", "inner_batch", "meta_val_every", "meta_val_epochs"):
            _check(getattr(self, name) > 0, name, "must be positive")
        _check(self.meta_held_out >= -1, "meta_held_out", "must be >= 0 (or -1: automatic)")
        try:
            seeds = self.seed_list()
        except ValueError:
            seeds = [-1]
        _check(all(s >= 0 for s in seeds) and len(set(seeds)) == len(seeds), "seeds",
               f"{self.seeds!r} is not a list of distinct non-negative integers")
        _check(self.meta_val_lr >= 0, "meta_val_lr", "must be >= 0 (0: --lr)")
        for name in ("lr_candidates", "kadapter_lr_candidates"):
            try:
                candidates = _numbers(getattr(self, name))
            except ValueError:
                candidates = [0.0]
            _check(all(lr > 0 for lr in candidates), name, f"{getattr(self, name)!r} is not a list of positive "
                                                           "numbers")

    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]

    def seed_list(self) -> list[int]:
        """The seeds to run, in order: ``--seeds``, or ``--seed`` alone."""
        return [int(x) for x in str(self.seeds).split(",") if x.strip()] or [self.seed]

    def lr_candidate_list(self) -> list[float]:
        return _numbers(self.lr_candidates)

    def kadapter_lr_candidate_list(self) -> list[float]:
        return _numbers(self.kadapter_lr_candidates) or self.lr_candidate_list()

    def needs_phi(self) -> bool:
        from taalm.methods import parse_method

        return any(parse_method(m).weights == "taalm" for m in self.method_list())


@dataclass
class TailorConfig:
    """``taalm tailor``: select the LAMA-ckl sets that fit a model (what it does not know / knows)."""

    model: str = option("smollm2-135m", "model to tailor the sets to: alias, local directory or Hugging Face id")
    out: str = option("", "output directory: to_learn.jsonl, not_to_forget.jsonl, meta_pool.jsonl, tailor.json")
    split: str = option("tailored", "tailored (To-Learn from the fixed split's evaluation part, by the model's own "
                                    "accuracy) or official (the paper's sets: every variant row To-Learn, every "
                                    "invariant_descriptive row Not-To-Forget)")
    data_dir: str = option("", "directory with variant/invariant_*.jsonl (default: the copies shipped with taalm)")
    to_learn: int = option(0, "stop once this many To-Learn rows are found (evaluation-part rows scored in a seeded "
                              "order; 0: all)")
    not_to_forget: int = option(0, "keep this many Not-To-Forget rows, in a seeded order (0: all)")
    pool_max_accuracy: float = option(0.5, "meta pool: only facts the model does not know, base accuracy below this on "
                                           "both the descriptive and the schematic task (the official φ pairs: < 0.5); "
                                           "1.0 keeps every remaining fact")
    seed: int = option(0, "order in which rows are scored and picked when a limit is set")
    eval_batch: int = option(32, "rows per forward pass")
    max_length: int = option(512, "documents are truncated to this many tokens")
    device: str = option("auto", "auto, cpu, cuda")

    def __post_init__(self) -> None:
        _check(bool(self.out), "out", "is required")
        _check(self.to_learn >= 0 and self.not_to_forget >= 0, "to_learn", "limits must be >= 0")
        _check_choice(self.split, "split", ("tailored", "official"))
        _check(self.eval_batch > 0, "eval_batch", "must be positive")
        _check(0.0 < self.pool_max_accuracy <= 1.0, "pool_max_accuracy", "must be in (0, 1]")


ALL_LAMA_METHODS = ("finetune,oracle,taalm,rho1,recadam,mixreview,kadapter,taalm+kadapter,taalm+mixreview,"
                    "taalm+recadam")
CPU_LAMA_METHODS = "finetune,oracle,taalm,rho1,recadam,mixreview,kadapter,taalm+kadapter,taalm+mixreview"


@dataclass
class LamaCklConfig(BenchOptions):
    """``taalm bench lama-ckl``: every method on LAMA-ckl, the paper's table, curves and a summary."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The paper's protocol: the official split (all 500 variant rows To-Learn, all 500 invariant_descriptive rows
        # Not-To-Forget), 30 epochs at lr 1e-4 with 64 documents per step; φ meta-trained on the pool (schematic
        # tasks, 16 pairs per update, 30 epochs, validated every 10 updates on 16 held-out pairs that θ learns for 4
        # epochs at lr 2e-4, 8 per step: ta_eval.py); Mix-Review at a constant ratio of 1 over invariant_descriptive.
        "paper": {"methods": ALL_LAMA_METHODS, "split": "official", "epochs": 30, "lr": 1e-4, "batch_size": 64,
                  "micro_batch": 8, "max_length": 512, "to_learn": 0, "not_to_forget": 0, "meta_pool": 0,
                  "meta_batch": 16, "meta_epochs": 30, "meta_updates": 0, "meta_held_out": 16, "meta_val_every": 10,
                  "meta_val_epochs": 4, "meta_val_lr": 2e-4, "meta_val_batch": 8, "task_format": "schematic",
                  "review_ratio": 1.0, "review_decay": 1.0, "phi": "train", "window": False, "qlora": "auto"},
        # A real experiment on 2 CPU cores (see results/lama_ckl/smollm2-135m-cpu): 64 + 64 tailored facts, documents
        # windowed to 128 tokens around the answer, one lr for every method (1e-3: finetune's best on 32 held-out
        # meta-pool pairs among 3e-4, 1e-3, 3e-3; the record is in that directory), RecAdam's anneal midpoint at half
        # of the 80 steps, φ shipped for the model or meta-trained with these meta_* settings.
        "cpu": {"methods": CPU_LAMA_METHODS, "epochs": 10, "batch_size": 8, "micro_batch": 4, "max_length": 128,
                "window": True, "to_learn": 64, "not_to_forget": 64, "lr": 1e-3, "review_ratio": 1.0,
                "review_decay": 1.0, "recadam_t0": 40, "phi": "auto", "phi_layers": 4, "meta_max_length": 128,
                "meta_batch": 8, "meta_outer_lr": 1e-3, "meta_updates": 48, "meta_held_out": 32, "meta_val_every": 4,
                "meta_val_epochs": 4, "lora_dropout": 0.1},
        # The demo (make demo): a small tailored split learned with finetune, oracle and taalm with the shipped φ.
        "quick": {"methods": "finetune,oracle,taalm", "epochs": 4, "batch_size": 8, "micro_batch": 8,
                  "max_length": 128, "window": True, "to_learn": 16, "not_to_forget": 16, "lr": 3e-4, "phi": "auto",
                  "phi_layers": 4, "meta_max_length": 128, "meta_batch": 4, "meta_updates": 16, "meta_held_out": 8,
                  "meta_val_every": 8, "meta_val_epochs": 2, "meta_pool": 64},
    }

    methods: str = option(ALL_LAMA_METHODS, "comma-separated methods")
    split: str = option("tailored", "tailored (To-Learn from the fixed split's evaluation part, by θ's own accuracy) "
                                    "or official (the paper's 500 To-Learn + 500 Not-To-Forget rows)")
    tailor_dir: str = option("", "an existing `taalm tailor` output (default: tailor into OUT/split)")
    to_learn: int = option(0, "use at most this many To-Learn rows (0: all)")
    not_to_forget: int = option(0, "use at most this many Not-To-Forget rows (0: all)")
    meta_pool: int = option(0, "use at most this many meta-pool pairs for φ (0: all)")
    window: bool = option(False, "cut documents longer than --max-length to a window around the answer (instead of "
                                 "truncating them)")
    task_format: str = option("descriptive", "φ's meta-training tasks: descriptive (cloze) or schematic")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice(self.split, "split", ("tailored", "official"))
        _check_choice(self.task_format, "task_format", TASK_FORMATS)
        for name in ("to_learn", "not_to_forget", "meta_pool"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")



PAPER_TWIKI_METHODS = ("finetune,recadam,mixreview,rho1,taalm,kadapter,kadapter+recadam,kadapter+mixreview,"
                       "kadapter+rho1,kadapter+taalm")
LEARN_PERIODS = "0901-1001,1001-1101,1101-1201"


@dataclass
class TemporalWikiConfig(BenchOptions):
    """``taalm bench temporalwiki``: θ learns three monthly Wikipedia periods in sequence with every method; changed
    (to learn) and unchanged (not to forget) object NLL before and after each period."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The official protocol: every probe, 1 epoch per period at lr 1e-4 with 64 documents per step, documents up
        # to 512 tokens (the official diffsets via --diffsets, else built from the probes), Mix-Review at a constant
        # ratio of 1, φ meta-trained on period 0801-0901 only and validated as ta_eval.py did (16 held-out pairs,
        # 4 epochs at lr 2e-4, 8 per step).
        "paper": {"methods": PAPER_TWIKI_METHODS, "epochs": 1, "lr": 1e-4, "batch_size": 64, "micro_batch": 8,
                  "max_length": 512, "changed_subjects": 0, "unchanged": 0, "review_ratio": 1.0,
                  "review_decay": 1.0, "phi": "train", "meta_batch": 16, "meta_epochs": 30, "meta_held_out": 16,
                  "meta_val_every": 10, "meta_val_epochs": 4, "meta_val_lr": 2e-4, "meta_val_batch": 8,
                  "qlora": "auto"},
        # A real experiment on 2 CPU cores (results/temporalwiki/smollm2-135m-cpu): a seeded subset of changed
        # subjects and unchanged probes per period, the same for every method; lr and epochs (up to 3) chosen on
        # held-out 0801-0901 documents (K-Adapter methods' lr among smaller ones: their new blocks diverge at 1e-3);
        # RecAdam's γ at the paper's lr·γ; φ shipped for the model ("<model>-temporalwiki") or meta-trained on
        # 0801-0901.
        "cpu": {"methods": "finetune,taalm,rho1,recadam,mixreview,kadapter,taalm+kadapter", "epochs": 3,
                "lr": 1e-3, "lr_candidates": "1e-3,3e-3", "kadapter_lr_candidates": "1e-4,3e-4,1e-3",
                "batch_size": 8, "micro_batch": 4, "max_length": 256, "changed_subjects": 32, "unchanged": 64,
                "review_ratio": 1.0, "review_decay": 1.0, "recadam_t0": 6, "recadam_coefficient": -1.0, "phi": "auto",
                "phi_layers": 4, "meta_subjects": 400, "meta_max_length": 256, "meta_batch": 8, "meta_outer_lr": 2e-3,
                "meta_updates": 24, "meta_held_out": 32, "meta_val_every": 6, "meta_val_epochs": 2,
                "lora_dropout": 0.1},
    }

    methods: str = option(PAPER_TWIKI_METHODS, "comma-separated methods (the paper's: no oracle)")
    periods: str = option(LEARN_PERIODS, "the periods θ learns, in order (0801-0901 is φ's and never learned)")
    diffsets: str = option("", "directory with the official diff documents, one {period}.jsonl of {text} rows per "
                               "period (default: documents built from the probes)")
    data_dir: str = option("", "directory with {period}_{changed,unchanged}.jsonl probes (default: shipped copies)")
    changed_subjects: int = option(0, "per period, learn and probe this many seeded changed subjects (0: all)")
    unchanged: int = option(0, "per period, probe this many seeded unchanged facts (0: all)")
    meta_subjects: int = option(0, "0801-0901 subjects whose documents make φ's meta-training pairs (0: all)")
    review_paragraphs: int = option(512, "Mix-Review: general Wikipedia paragraphs (never evaluated) to replay")
    eval_all_periods: bool = option(False, "after each period also probe every other period's sets (forgetting of "
                                           "what was learned before)")

    def __post_init__(self) -> None:
        super().__post_init__()
        from taalm.bench.twiki_data import LEARN_PERIODS as KNOWN

        for period in self.period_list():
            _check(period in KNOWN, "periods", f"{period!r} is not a learned period ({', '.join(KNOWN)})")
        _check(bool(self.period_list()), "periods", "no period given")
        _check(len(set(self.period_list())) == len(self.period_list()), "periods", "a period is repeated")
        for name in ("changed_subjects", "unchanged", "meta_subjects", "review_paragraphs"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")

    def period_list(self) -> list[str]:
        return [p.strip() for p in self.periods.split(",") if p.strip()]


@dataclass
class FictionalConfig(BenchOptions):
    """``taalm bench fictional``: facts about generated fictional entities (no pretrained model can know them) learned
    with every method; Not-To-Forget = LAMA-ckl facts θ knows. Headline: To-Learn accuracy at the last epoch."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # GPU sizes in the paper's protocol: 500 facts and 500 NF, 30 epochs at lr 1e-4 with 64 documents per step;
        # φ meta-trained on 2048 generated train-side pairs, validated as the paper's (16 held-out pairs, 4 epochs at
        # lr 2e-4, 8 per step).
        "paper": {"methods": ALL_LAMA_METHODS, "epochs": 30, "lr": 1e-4, "batch_size": 64, "micro_batch": 8,
                  "max_length": 256, "to_learn": 500, "not_to_forget": 500, "filler": 6, "phi_pairs": 2048,
                  "held_out": 32, "review_ratio": 1.0, "review_decay": 1.0, "phi": "train", "meta_batch": 16,
                  "meta_epochs": 4, "meta_updates": 0, "meta_max_length": 256, "meta_held_out": 16,
                  "meta_val_every": 32, "meta_val_epochs": 4, "meta_val_lr": 2e-4, "meta_val_batch": 8,
                  "qlora": "auto"},
        # 2 CPU cores, SmolLM2: 64 facts in documents of 4 filler sentences (55-105 tokens), 8 per step, 6 epochs;
        # lr chosen by finetune among 1e-3 and 3e-3 on 16 held-out train-side pairs; φ shipped for the model. Measured
        # on 2 threads: 92 s per epoch (8 steps of ~10 s, then scoring 128 probes), so finetune, oracle and taalm
        # take about 30 minutes, the lr selection 4 and NF tailoring 1 (the first seed only).
        "cpu": {"methods": "finetune,oracle,taalm", "epochs": 6, "lr": 1e-3, "lr_candidates": "1e-3,3e-3",
                "batch_size": 8, "micro_batch": 8, "max_length": 128, "to_learn": 64, "not_to_forget": 64,
                "filler": 4, "phi_pairs": 512, "held_out": 16, "phi": "auto", "phi_layers": 4,
                "meta_max_length": 128, "meta_batch": 8, "meta_outer_lr": 1e-3, "meta_updates": 48,
                "meta_held_out": 32, "meta_val_every": 4, "meta_val_epochs": 4, "lora_dropout": 0.1},
        # The demo: about 6 minutes on 2 cores (2 per method, NF tailoring 1), and the oracle separates from finetune
        # by epoch 2 (SmolLM2, seed 0: To-Learn accuracy after epochs 1-4, finetune 0.046 / 0.066 / 0.207 / 0.380,
        # oracle 0.062 / 0.225 / 0.450 / 0.699).
        "quick": {"methods": "finetune,oracle,taalm", "epochs": 4, "lr": 3e-3, "batch_size": 6, "micro_batch": 6,
                  "max_length": 128, "to_learn": 24, "not_to_forget": 16, "filler": 2, "phi_pairs": 64,
                  "held_out": 16, "phi": "auto", "phi_layers": 4, "meta_max_length": 128, "meta_batch": 4,
                  "meta_updates": 16, "meta_held_out": 8, "meta_val_every": 8, "meta_val_epochs": 2},
    }

    methods: str = option("finetune,oracle,taalm", "comma-separated methods")
    to_learn: int = option(64, "generated facts θ learns (the generator's test side), new for every seed")
    not_to_forget: int = option(64, "Not-To-Forget: a seeded subset of the LAMA-ckl facts θ knows (tailored)")
    phi_pairs: int = option(512, "generated train-side pairs φ meta-trains on (--phi train)")
    held_out: int = option(32, "generated train-side pairs, not φ's, on which --lr-candidates are compared")
    filler: int = option(4, "neutral filler sentences per document; the fact sentence goes first, between or last")
    tailor_dir: str = option("", "an existing `taalm tailor` output whose not_to_forget.jsonl gives the NF facts "
                                 "(default: tailor into OUT/split)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("to_learn", "not_to_forget", "phi_pairs"):
            _check(getattr(self, name) > 0, name, "must be positive")
        _check(self.held_out >= 0, "held_out", "must be >= 0")
        _check(self.held_out > 0 or not self.lr_candidate_list(), "held_out", "--lr-candidates are compared on "
                                                                              "these pairs: give at least one")
        _check(self.filler >= 2, "filler", "must be >= 2 (the fact's place: first, between or last)")
