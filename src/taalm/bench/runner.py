"""The skeleton every benchmark fills, and what their runs share: resumable learning runs, φ (shipped, given or
meta-trained), learning-rate selection on held-out data, the device and command record, and atomic summaries.

``run(bench, cfg)`` is one benchmark run, the same for every benchmark: ``prepare`` the shared data, choose the lr on
``held_out`` pairs, obtain φ, then for every seed ``prepare_seed`` and ``run_method`` for every method (one progress
bar over seeds × methods), pool the seeds into 95% intervals (``taalm.stats``) and write the summary, ``table`` and
``plots``. A benchmark (``Benchmark``) fills those hooks with its data and its metric.

A benchmark run is a directory; every part of it (φ, each lr candidate, each method) is a sub-directory that is
skipped when finished (``DONE``; only if it recorded the same inputs, ``taalm.fingerprint``: φ is checked for every
seed's parts before anything is learned, the rest when a part is reached), resumed from its
checkpoint when killed, and restarted when killed before its first checkpoint. Each seed (``--seeds``) is a run
directory ``OUT/seed-<s>`` of its own (its split, data order and LoRA init); shared parts (tailoring, lr selection,
φ) are computed once outside.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from taalm import ckl, fingerprint, meta_train, models
from taalm.bench.config import BenchOptions
from taalm.config import LearnConfig, MetaTrainConfig, ModelOptions, held_out_count, loop_options, save_config
from taalm.data import Pair
from taalm.distributed import Processes
from taalm.errors import TaalmError
from taalm.io import atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from taalm.methods import parse_method
from taalm.stats import FactScores, Statistic, bootstrap, describe
from taalm.weighting import resolve_phi, shipped_phis


def finished(directory: Path) -> bool:
    return (directory / fingerprint.DONE).is_file()


def resumable(directory: Path) -> bool:
    """Whether an unfinished run in ``directory`` has a checkpoint to resume; one killed before its first
    checkpoint holds nothing worth keeping and is cleared, so it starts over instead of refusing a non-empty --out."""
    if (directory / "checkpoint").exists():
        return True
    if directory.is_dir():
        shutil.rmtree(directory)
    return False


def resume_part(directory: Path, procs: Processes) -> bool:
    """``resumable`` for every process of a data-parallel run: the main one clears a part killed before its first
    checkpoint, then all agree on whether it resumes."""
    if procs.is_main_process:
        resumable(directory)
    procs.wait_for_everyone()
    return (directory / "checkpoint").exists()


def model_options(cfg: ModelOptions) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(ModelOptions)}


def device_name(device: str) -> str:
    resolved = models.pick_device(device)
    if resolved.type == "cuda":
        return torch.cuda.get_device_name(resolved)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def command_line(cfg: Any, command: str, benchmark: str) -> str:
    """The command that reproduces the run: as typed, or rebuilt from the config (Python API)."""
    if command:
        return command
    return f"taalm bench {benchmark} {' '.join(_flags(dataclasses.asdict(cfg)))}"


def _flags(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Options as the CLI reads them: nested configs as ``--meta.inner_lr``, lists and booleans as JSON."""
    flags = []
    for key, value in values.items():
        if isinstance(value, dict):
            flags += _flags(value, f"{prefix}{key}.")
        elif value not in ("", None, []):
            text = json.dumps(value, separators=(",", ":")) if isinstance(value, list | bool) else str(value)
            flags.append(f"--{prefix}{key} {shlex.quote(text)}")
    return flags


def learn_run(cfg: LearnConfig) -> tuple[list[dict], float]:
    """``taalm learn`` as one part of a benchmark: skipped when finished (with the same inputs: ``taalm.fingerprint``),
    else resumed or restarted. Returns the metrics (those the run just recorded, or a finished run's metrics.jsonl)
    and the run's seconds: the per-epoch seconds (training and evaluation, not loading) summed, so a run resumed in
    another invocation still counts all of its epochs."""
    out = Path(cfg.out)
    if finished(out):
        fingerprint.check_reusable(cfg)
        metrics = [r for _, r in read_jsonl(out / "metrics.jsonl")]
    else:
        metrics = ckl.learn(dataclasses.replace(cfg, resume=resume_part(out, Processes(cfg.device)))).metrics
    return metrics, sum({r["epoch"]: r.get("seconds", 0.0) for r in metrics}.values())


def held_out_pairs(pairs: list[Pair], cfg: BenchOptions) -> list[Pair]:
    """The pairs meta-training holds out for validation (the same seeded split): where the lr is chosen."""
    return meta_train.split_held_out(pairs, held_out_count(cfg.meta.held_out, len(pairs)), cfg.seed)[1]


def meta_train_config(cfg: BenchOptions, pairs: str, out: Path, **overrides: Any) -> MetaTrainConfig:
    """φ's meta-training as the benchmark asks for it (``--meta.*``); validation learns at --meta.val_lr and
    --meta.val_batch_size (0: the benchmark's own lr and batch size)."""
    values = {**model_options(cfg), **dataclasses.asdict(cfg.meta), "theta": cfg.model, "pairs": pairs,
              "out": str(out), "val_lr": cfg.meta.val_lr or cfg.lr,
              "val_batch_size": cfg.meta.val_batch_size or cfg.batch_size, "seed": cfg.seed}
    values.pop("qlora")  # meta-training needs a double backward through θ: full-precision weights
    return MetaTrainConfig(**{**values, **overrides})


def check_phi_model(cfg: BenchOptions) -> None:
    """A separate φ backbone must share θ's tokenizer (its weights are aligned to θ's tokens); checked up front."""
    if cfg.meta.phi_model and cfg.meta.phi_model != cfg.model and cfg.needs_phi() and not models.same_tokenizer(
            models.load_tokenizer(cfg.model), models.load_tokenizer(cfg.meta.phi_model)):
        raise TaalmError(f"option --meta.phi_model: {cfg.meta.phi_model!r} does not share the tokenizer of --model "
                         f"{cfg.model!r}; φ's weights could not be aligned to θ's tokens")


def phi_source(cfg: BenchOptions) -> str:
    """``--phi`` resolved: ``auto`` becomes the φ shipped for ``--model`` if there is one, else ``train``."""
    if cfg.phi != "auto":
        return cfg.phi
    return cfg.model if cfg.model in shipped_phis() else "train"


def obtain_phi(cfg: BenchOptions, pairs: Path | None, directory: Path, **meta_overrides: Any) -> dict[str, Any]:
    """φ for the run: a shipped alias or a given directory, or meta-trained on ``pairs`` into ``directory``
    (resumable). ``auto`` takes the φ shipped for ``cfg.model`` when there is one. Returns what the summary records,
    with φ's content digest (``taalm.fingerprint``: an alias names another φ once a new one is shipped)."""
    source = phi_source(cfg)
    if source != "train":
        path = resolve_phi(source)
        selection = path / "selection.json"
        return {"source": "shipped" if source in shipped_phis() else "given", "phi": source, "dir": str(path),
                "digest": fingerprint.phi_digest(str(path)),
                "selection": json.loads(selection.read_text()) if selection.is_file() else None}
    if pairs is None:
        raise TaalmError("option --phi: this benchmark has no meta-training pairs here; give a trained φ")
    seconds, meta_cfg = None, meta_train_config(cfg, str(pairs), directory, **meta_overrides)
    if finished(directory):
        fingerprint.check_reusable(meta_cfg)
    else:
        started = time.time()
        meta_train.meta_train(dataclasses.replace(meta_cfg, resume=resume_part(directory, Processes(cfg.device))))
        seconds = round(time.time() - started, 1)
    return {"source": "meta-trained", "phi": str(directory), "dir": str(directory), "meta_train_seconds": seconds,
            "digest": fingerprint.phi_digest(str(directory)),
            "selection": json.loads((directory / "selection.json").read_text())}


def select_lr(cfg: BenchOptions, docs: list[dict], tasks: list[dict], directory: Path,
              metric: str = "accuracy", method: str = "finetune",
              candidates: list[float] | None = None) -> dict[str, Any] | None:
    """Choose θ's lr among ``candidates`` (default ``--lr_candidates``): ``method`` learns the held-out ``docs``
    with each, and is scored on their ``tasks`` after every epoch; the (lr, epoch) with the best ``metric`` wins
    (accuracy: highest; nll: lowest; the smaller lr and the earlier epoch on ties). None without candidates."""
    candidates = cfg.lr_candidate_list() if candidates is None else candidates
    if not candidates:
        return None
    procs = Processes(cfg.device)
    if procs.is_main_process:
        write_jsonl(directory / "docs.jsonl", docs)
        write_jsonl(directory / "tasks.jsonl", tasks)
    procs.wait_for_everyone()
    sign = 1.0 if metric == "accuracy" else -1.0
    scores = {}
    for lr in sorted(candidates):
        metrics, _ = learn_run(learn_config(cfg, lr=lr, method=method, docs=str(directory / "docs.jsonl"),
                                            probes=[f"held_out={directory / 'tasks.jsonl'}"],
                                            out=str(directory / f"lr-{lr:g}")))
        curve = [r[metric] for r in sorted(metrics, key=lambda r: r["epoch"])]
        best = max(range(1, len(curve)), key=lambda e: (sign * curve[e], -e))
        scores[f"{lr:g}"] = {"best": curve[best], "epoch": best, "curve": curve}
    chosen = max(scores, key=lambda k: (sign * scores[k]["best"], -float(k)))
    record = {"rule": f"{method}'s best-epoch {metric} on φ's held-out pairs ({'highest' if sign > 0 else 'lowest'}); "
                      "the smaller lr and the earlier epoch on ties",
              "metric": metric, "held_out": len(docs), "candidates": scores, "chosen": float(chosen),
              "epoch": scores[chosen]["epoch"]}
    if procs.is_main_process:
        atomic_write_json(directory / "selection.json", record)
    return record


def select_lrs(cfg: BenchOptions, docs: list[dict], tasks: list[dict], directory: Path,
               metric: str = "accuracy") -> dict[str, Any] | None:
    """``select_lr`` per adapter family: LoRA methods take finetune's choice; when the run has K-Adapter methods they
    take the kadapter method's own choice among ``--kadapter_lr_candidates`` on the same pairs (recorded under
    ``"kadapter"``), because freshly initialised adapter blocks diverge at learning rates a LoRA adapter takes."""
    selection = select_lr(cfg, docs, tasks, directory, metric)
    if selection is not None and any(parse_method(name).kadapter for name in cfg.method_list()):
        selection["kadapter"] = select_lr(cfg, docs, tasks, directory / "kadapter", metric, method="kadapter",
                                          candidates=cfg.kadapter_lr_candidate_list())
        if Processes(cfg.device).is_main_process:
            atomic_write_json(directory / "selection.json", selection)
    return selection


def with_lr(cfg: Any, selection: dict[str, Any] | None, method: str = "finetune", epochs: bool = False) -> Any:
    """``cfg`` with the lr (and, with ``epochs``, the epoch count) chosen for ``method``'s adapter family."""
    if selection is None:
        return cfg
    if parse_method(method).kadapter and selection.get("kadapter"):
        selection = selection["kadapter"]
    values = {"lr": selection["chosen"], **({"epochs": selection["epoch"]} if epochs else {})}
    return dataclasses.replace(cfg, **values)


def learn_config(cfg: BenchOptions, **values: Any) -> LearnConfig:
    """A method's ``taalm learn`` settings: the benchmark's model and loop options plus ``values``. With Mix-Review
    and --review_in_batch the step's documents are shared: batch_size / (1 + ratio) new ones, the rest reviews."""
    options = {**loop_options(cfg), **values}
    if "method" in values and parse_method(values["method"]).mixreview and cfg.review_in_batch:
        options["batch_size"] = max(1, round(options["batch_size"] / (1 + options["review_ratio"])))
    return LearnConfig(**model_options(cfg), **options, model=cfg.model)


def previous_summary(out: Path) -> dict[str, Any]:
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# --- the skeleton: one benchmark run, whatever the benchmark ------------------------------------------------------


@dataclass
class SeedRun:
    """One seed of a benchmark: what the summary records per method (``methods``), the per-fact scores the
    intervals come from (``scores[method]``: set -> metric -> values, facts last; None where the metrics hold none)
    and anything else of the seed's (``data``: its split, provenance)."""

    seed: int
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: dict[str, FactScores | None] | None = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


class Benchmark:
    """The hooks ``run`` calls, in its order. ``prepare`` may set ``phi_pairs`` (φ's meta-training pairs); ``run``
    sets ``lr_selection`` and ``phi`` before the seeds, so ``run_method`` can use them. ``cfg`` is the run's config,
    with the chosen lr (and, with ``lr_epochs``, epochs) once chosen, and each seed's ``--seed`` inside the seed."""

    name: ClassVar[str] = ""  # as in `taalm bench <name>`: the summary's "benchmark" and the rebuilt command
    settings: ClassVar[tuple[str, ...]] = ()  # config fields the summary records under "settings" (with "seeds")
    lr_metric: ClassVar[str] = "accuracy"  # how held-out learning runs are compared (accuracy: highest; nll: lowest)
    lr_epochs: ClassVar[bool] = False  # the lr selection also chooses the number of epochs

    def __init__(self) -> None:
        self.phi_pairs: Path | None = None
        self.lr_selection: dict[str, Any] | None = None
        self.phi: dict[str, Any] | None = None

    def prepare(self, cfg: Any, out: Path) -> None:
        """The data every seed shares (tailoring, φ's pairs), checked before anything is learned."""

    def held_out(self, cfg: Any, out: Path) -> tuple[list[dict], list[dict]] | None:
        """The lr selection's documents ({text[, answer]}) and tasks ({task, answer}); never an evaluated fact."""
        return None

    def meta_overrides(self, cfg: Any) -> dict[str, Any]:
        """Meta-training options of this benchmark's own (beyond ``meta_train_config``)."""
        return {}

    def prepare_seed(self, cfg: Any, out: Path) -> SeedRun:
        """A seed's own data under ``out``; the returned run may already hold rows' scores (a base model's)."""
        return SeedRun(cfg.seed)

    def run_method(self, cfg: Any, name: str, out: Path, run: SeedRun) -> tuple[dict[str, Any], FactScores | None]:
        """Method ``name`` learned in seed directory ``out`` (resumable): its summary row and per-fact scores."""
        raise NotImplementedError

    def statistic(self, cfg: Any) -> Statistic:
        """The bootstrap's statistic (``taalm.stats``) on mean per-fact scores."""
        raise NotImplementedError

    def summary(self, cfg: Any, runs: list[SeedRun], bootstraps: dict, out: Path) -> dict[str, Any]:
        """The summary's own keys: the data and the rows over seeds ("methods" last)."""
        raise NotImplementedError

    def table(self, summary: dict[str, Any]) -> str:
        raise NotImplementedError

    def plots(self, cfg: Any, summary: dict[str, Any], runs: list[SeedRun], out: Path) -> None:
        """Figures into ``out`` (the main process only)."""


def run(bench: Benchmark, cfg: BenchOptions, command: str = "") -> dict[str, Any]:
    """One benchmark run in ``cfg.out``: shared data, lr selection, φ, every seed × method, intervals, summary.json,
    table.md and plots; resumable. Under accelerate launch every process runs this and the main one writes. OUT's
    config.yaml (and a seed's) is written once its parts are done, so a run refused part-way (a finished part with
    other inputs) leaves OUT's records those of the run that made them."""
    started = time.time()
    check_phi_model(cfg)
    procs = Processes(cfg.device)
    out = Path(cfg.out)
    previous = previous_summary(out)
    bench.prepare(cfg, out)
    held = bench.held_out(cfg, out) if cfg.lr_candidate_list() else None
    if held is not None:
        bench.lr_selection = select_lrs(cfg, *held, out / "lr_selection", bench.lr_metric)
        cfg = with_lr(cfg, bench.lr_selection, epochs=bench.lr_epochs)
    if cfg.needs_phi():
        bench.phi = obtain_phi(cfg, bench.phi_pairs, out / "phi", **bench.meta_overrides(cfg))
        fingerprint.check_phi_of_finished_runs([seed_dir(out, s) for s in cfg.seed_list()], bench.phi["digest"])
    runs = run_seeds(bench, cfg)
    bootstraps, record = intervals(runs, bench.statistic(cfg), cfg.baseline_method())
    own = bench.summary(cfg, runs, bootstraps, out)
    summary = {"benchmark": bench.name, "model": cfg.model, "device": device_name(cfg.device),
               "command": command_line(cfg, command, bench.name),
               "wall_seconds": round(time.time() - started + previous.get("wall_seconds", 0.0), 1),
               "settings": {**{name: getattr(cfg, name) for name in bench.settings}, "seeds": cfg.seed_list()},
               "intervals": record, "lr_selection": bench.lr_selection, "phi": bench.phi, **own}
    if procs.is_main_process:
        table = bench.table(summary)
        save_config(cfg, out / "config.yaml")
        atomic_write_json(out / "summary.json", summary)
        atomic_write_text(out / "table.md", table)
        bench.plots(cfg, summary, runs, out)
        print(table)
        print(record.get("note", record["method"]))
    return summary


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed-{seed}"


def run_seeds(bench: Benchmark, cfg: BenchOptions) -> list[SeedRun]:
    """Every seed in order in ``OUT/seed-<s>`` (``cfg`` with that seed: it changes the split, the data order and the
    LoRA init), and in it every method; one progress bar over both. Each method's run is resumable on its own, so a
    second invocation with more seeds runs only the new ones."""
    procs = Processes(cfg.device)
    seeds, methods = cfg.seed_list(), cfg.method_list()
    runs = []
    with tqdm(total=len(seeds) * len(methods), desc=f"bench {bench.name}", unit="run", dynamic_ncols=True,
              disable=not procs.is_main_process) as progress:
        for seed in seeds:
            seed_cfg, out = dataclasses.replace(cfg, seed=seed), seed_dir(Path(cfg.out), seed)
            run = bench.prepare_seed(seed_cfg, out)
            for name in methods:
                progress.set_postfix_str(f"seed {seed}, {name}")
                run.methods[name], run.scores[name] = bench.run_method(seed_cfg, name, out, run)
                progress.update()
            if procs.is_main_process:
                save_config(seed_cfg, out / "config.yaml")
            if None in run.scores.values():
                run.scores = None
            runs.append(run)
    return runs


def per_probe(records: list[dict], probe: str, epochs: list[int]) -> dict[str, np.ndarray] | None:
    """The per-fact scores of metrics records (``per_probe`` lists) of ``probe`` at ``epochs``: metric ->
    (len(epochs), facts); None when a record has none (a run from before taalm recorded them)."""
    rows = {r["epoch"]: r.get("per_probe") for r in records if r["probe"] == probe}
    if any(not rows.get(e) for e in epochs):
        return None
    metrics = [k for k, v in rows[epochs[0]].items() if v is not None and all(rows[e].get(k) is not None
                                                                                for e in epochs)]
    return {k: np.array([rows[e][k] for e in epochs], dtype=float) for k in metrics}


def intervals(runs: list[SeedRun], statistic: Statistic, baseline: str = "finetune") -> tuple[dict, dict[str, Any]]:
    """The bootstrap over every seed's per-fact scores (``taalm.stats``): per method its statistics (per-seed values,
    mean, 95% interval) and paired differences to ``baseline``; and the record of how they were computed. Without
    per-fact scores in some seed: no intervals, and the record says why."""
    seeds = [r.seed for r in runs]
    if any(r.scores is None for r in runs):
        return {}, {"method": None, "seeds": seeds, "note": "no interval: some metrics.jsonl hold no per-probe scores "
                                                            "(runs from before taalm recorded them)"}
    methods = list(runs[0].scores)
    result = bootstrap([r.scores for r in runs], statistic, baseline if baseline in methods else None)
    return result, describe(seeds, baseline=baseline if baseline in methods else None)


def with_intervals(row: dict[str, Any], bootstrap: dict | None) -> dict[str, Any]:
    """``row`` with the bootstrap's 95% intervals (``ci95``) and paired differences (``vs_<baseline>``), when there
    is a bootstrap."""
    if bootstrap:
        row["ci95"] = {k: v["ci95"] for k, v in bootstrap["stats"].items()}
        row.update({k: v for k, v in bootstrap.items() if k.startswith("vs_")})
    return row


def mean_over_seeds(values: list[Any]) -> Any:
    """The element-wise mean of equally shaped nested dicts/lists of numbers (one per seed); other leaves (None,
    text) are kept when every seed agrees, else None. With one seed: that seed's values, unchanged."""
    first = values[0]
    if isinstance(first, dict):
        return {k: mean_over_seeds([v[k] for v in values]) for k in first if all(k in v for v in values)}
    if isinstance(first, list) and all(isinstance(v, list) and len(v) == len(first) for v in values):
        return [mean_over_seeds([v[i] for v in values]) for i in range(len(first))]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sum(values) / len(values) if len(values) > 1 else first
    return first if all(v == first for v in values) else None
