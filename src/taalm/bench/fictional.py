"""Fictional facts: θ learns facts about generated entities that no pretrained model can know (``fictional_data``).

    taalm bench fictional --model smollm2-135m --preset cpu --out runs/fictional

To-Learn = generated facts of the generator's test side (new ones for every seed), each in a short document of
filler sentences, probed by a paraphrased cloze; Not-To-Forget = LAMA-ckl facts θ knows (``taalm tailor``'s
not_to_forget.jsonl, tailored into OUT/split as LAMA-ckl does). φ, when meta-trained, and the lr selection use the
generator's train side: other invented names, relations that only partly overlap. The headline is To-Learn accuracy
at the LAST epoch (nothing is learned before, so nothing to forget of it); Top Acc and NF at the top epoch beside it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from taalm import models, stats
from taalm.bench import fictional_data as gen
from taalm.bench import lama_ckl, lama_data, runner
from taalm.bench.config import FictionalConfig
from taalm.data import encode
from taalm.distributed import Processes
from taalm.errors import TaalmError
from taalm.io import read_jsonl, write_jsonl

SEED_SETS = ("to_learn", "not_to_forget")  # a seed's own facts
SHARED_SETS = ("phi_pairs", "held_out")  # the train side: φ's meta-training and the lr selection, one for every seed
SETS = SEED_SETS + SHARED_SETS


def to_learn_facts(cfg: FictionalConfig, seed: int) -> list[gen.FictionalFact]:
    return gen.generate("test", cfg.to_learn, seed, cfg.filler, style=cfg.style)


def train_side(cfg: FictionalConfig, seed: int) -> tuple[list[gen.FictionalFact], list[gen.FictionalFact]]:
    """φ's pairs and the lr-selection pairs: one generation of the train side, cut in two (disjoint facts)."""
    facts = gen.generate("train", cfg.phi_pairs + cfg.held_out, seed, cfg.filler, cfg.generator_version)
    return facts[:cfg.phi_pairs], facts[cfg.phi_pairs:]


def check_fits(facts: list[gen.FictionalFact], tokenizer, max_length: int) -> None:
    """Every document and probe keeps its answer within --max_length tokens (else a one-line error)."""
    for f in facts:
        for text, what in ((f.document, "document"), (f.probe, "probe")):
            encode(tokenizer, text, max_length, answer=f.answer,
                   where=f"generated fact {f.uuid} ({what}; lower --filler or raise --max_length)")


def not_to_forget(cfg: FictionalConfig, seed: int, split_dir: Path, tokenizer) -> tuple[list[dict], int]:
    """A seeded subset of the tailored Not-To-Forget rows, documents windowed to --max_length around the answer
    (only Mix-Review reads them); returns the rows and how many were windowed."""
    rows = [r for _, r in read_jsonl(split_dir / "not_to_forget.jsonl")]
    if not rows:
        raise TaalmError(f"{split_dir / 'not_to_forget.jsonl'}: no Not-To-Forget rows")
    if cfg.not_to_forget < len(rows):
        rows = sorted(random.Random(seed).sample(rows, cfg.not_to_forget), key=lambda r: r["uuid"])
    return lama_data.windowed(rows, tokenizer, cfg.max_length)


def prepare_sets(cfg: FictionalConfig, seed: int, sets: Path, split_dir: Path,
                 names: tuple[str, ...] = SETS) -> dict[str, Any]:
    """Write ``names`` among to_learn.jsonl (generated test-side facts: documents and probes in one file),
    not_to_forget.jsonl (seeded subset of the tailored split), phi_pairs.jsonl and held_out.jsonl (train side) under
    ``sets``; returns the provenance: generator version, counts, relation overlap, fact places."""
    tokenizer = models.load_tokenizer(cfg.model)
    files: dict[str, list[dict]] = {}
    provenance: dict[str, Any] = {"generator_version": cfg.generator_version, "seed": seed, "filler": cfg.filler,
                                  **({"style": cfg.style} if cfg.style != "prose" else {}),
                                  "relations": gen.relation_overlap(cfg.generator_version),
                                  "names": "invented words from syllables; a word's side (test or train) is fixed by "
                                           "a hash of the word, so the sides never share one"}
    if "to_learn" in names:
        facts = to_learn_facts(cfg, seed)
        check_fits(facts, tokenizer, cfg.max_length)
        files["to_learn"] = [f.record() for f in facts]
        provenance["to_learn"] = gen.describe(facts)
    if "not_to_forget" in names:
        files["not_to_forget"], windowed = not_to_forget(cfg, seed, split_dir, tokenizer)
        provenance["not_to_forget"] = {"source": str(split_dir / "not_to_forget.jsonl"),
                                       "rows": len(files["not_to_forget"]), "windowed": windowed}
    if set(SHARED_SETS) & set(names):
        pairs, held = train_side(cfg, seed)
        check_fits(pairs + held, tokenizer, cfg.max_length)
        files["phi_pairs"], files["held_out"] = [f.pair() for f in pairs], [f.pair() for f in held]
        provenance["phi_pairs"], provenance["held_out"] = gen.describe(pairs), gen.describe(held)
    provenance["counts"] = {name: len(files[name]) for name in names}
    procs = Processes(cfg.device)
    if procs.is_main_process:
        for name in names:
            write_jsonl(sets / f"{name}.jsonl", files[name])
    procs.wait_for_everyone()
    return provenance


def statistic(means: stats.Means) -> dict[str, np.ndarray]:
    """LAMA-ckl's columns (Top Acc, its epoch's NF Acc, ...) plus this benchmark's headline: To-Learn accuracy and NF
    accuracy at the last epoch."""
    columns = lama_ckl.statistic(means)
    columns["last_acc"] = columns["curve_to_learn"][:, -1]
    columns["last_nf_acc"] = columns["curve_not_to_forget"][:, -1]
    if "exact_match" in means["to_learn"]:
        columns["last_exact_match"] = means["to_learn"]["exact_match"][:, -1]
    return columns


def method_result(metrics: list[dict]) -> dict[str, Any]:
    """One run's row: To-Learn accuracy, NF accuracy and exact match at the last epoch, and the paper's columns with
    exact match at the top epoch (as ``statistic`` computes them, so a row and its interval are of one epoch)."""
    curve = lama_ckl.curve_from_metrics(metrics)
    top = lama_ckl.summarize_curve(curve)
    return {"last_acc": curve[-1][0], "last_nf_acc": curve[-1][1],
            "last_exact_match": lama_ckl.exact_match_at(metrics, len(curve) - 1), **top,
            "exact_match": lama_ckl.exact_match_at(metrics, top["epoch"])}


def method_summary(name: str, runs: list[runner.SeedRun], bootstrap: dict | None) -> dict[str, Any]:
    """A method's row over the seeds: means of the per-seed columns, each seed's values, and (from the bootstrap)
    the 95% intervals and the paired differences to the baseline (finetune unless --baseline)."""
    per_seed = {str(r.seed): r.methods[name] for r in runs}
    entry = {**runner.mean_over_seeds(list(per_seed.values())), "epochs": [m["epoch"] for m in per_seed.values()],
             "seconds": round(sum(m["seconds"] for m in per_seed.values()), 1), "seeds": per_seed}
    entry["epoch"] = lama_ckl.summarize_curve(entry["curve"])["epoch"]  # where the mean curve peaks
    return runner.with_intervals(entry, bootstrap)


def table(summary: dict[str, Any]) -> str:
    """To-Learn and NF accuracy at the last epoch (the headline), Top Acc and NF at the top epoch, each ``mean ±
    half-width`` of the 95% interval, and the paired difference of the headline to the baseline."""
    base = summary["intervals"].get("baseline") or "finetune"
    header = (f"| Method | To-Learn Acc (last epoch) | NF Acc (last epoch) | Top Acc | Epoch | NF Acc (top epoch) | "
              f"Δ last vs {base} [95%] | seconds |")
    lines = [header, "|---" * 8 + "|"]
    for name, m in summary["methods"].items():
        ci, vs = m.get("ci95") or {}, m.get(f"vs_{base}") or {}
        cells = [name, stats.plus_minus(m["last_acc"], ci.get("last_acc")),
                 stats.plus_minus(m["last_nf_acc"], ci.get("last_nf_acc")), stats.plus_minus(m["top_acc"],
                 ci.get("top_acc")), ",".join(map(str, m["epochs"])), stats.plus_minus(m["nf_acc"], ci.get("nf_acc")),
                 stats.difference(vs.get("last_acc")), f"{m['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


class Fictional(runner.Benchmark):
    """NF tailored once (or --tailor_dir) and the train side written once (φ's pairs, the lr selection's held-out
    pairs: never an evaluated fact); each seed generates its own To-Learn facts, takes its NF subset and learns them
    with every method, as LAMA-ckl's methods do (``lama_ckl.learn_method``)."""

    name = "fictional"
    settings = ("epochs", "lr", "batch_size", "max_length", "filler", "lora_r", "lora_dropout", "seed")

    def prepare(self, cfg: FictionalConfig, out: Path) -> None:
        # every NF candidate; the To-Learn search stops at one row and the meta pool is not scored: neither is used
        self.split_dir = lama_ckl.tailored_split(cfg, out, to_learn=1, pool_max_accuracy=1.0)
        self.shared = prepare_sets(cfg, cfg.seed, out / "sets", self.split_dir, SHARED_SETS)
        self.phi_pairs = out / "sets" / "phi_pairs.jsonl"

    def held_out(self, cfg: FictionalConfig, out: Path) -> tuple[list[dict], list[dict]]:
        pairs = [r for _, r in read_jsonl(out / "sets" / "held_out.jsonl")]
        return ([{"text": p["document"], "answer": p["answer"]} for p in pairs],
                [{"task": p["task"], "answer": p["answer"]} for p in pairs])

    def prepare_seed(self, cfg: FictionalConfig, out: Path) -> runner.SeedRun:
        return runner.SeedRun(cfg.seed, data=prepare_sets(cfg, cfg.seed, out / "sets", self.split_dir, SEED_SETS))

    def run_method(self, cfg: FictionalConfig, name: str, out: Path,
                   run: runner.SeedRun) -> tuple[dict[str, Any], stats.FactScores | None]:
        metrics, seconds = lama_ckl.learn_method(cfg, name, out, self.lr_selection, self.phi)
        return {**method_result(metrics), "seconds": round(seconds, 1)}, lama_ckl.fact_scores(metrics)

    def statistic(self, cfg: FictionalConfig) -> stats.Statistic:
        return statistic

    def summary(self, cfg: FictionalConfig, runs: list[runner.SeedRun], bootstraps: dict,
                out: Path) -> dict[str, Any]:
        return {"headline": "last_acc", "split": {**runs[0].data["counts"], **self.shared["counts"]},
                "provenance": self.shared, "seed_splits": {str(r.seed): r.data for r in runs},
                "methods": {name: method_summary(name, runs, bootstraps.get(name)) for name in cfg.method_list()}}

    def table(self, summary: dict[str, Any]) -> str:
        return table(summary)

    def plots(self, cfg: FictionalConfig, summary: dict[str, Any], runs: list[runner.SeedRun], out: Path) -> None:
        counts = summary["split"]
        lama_ckl.plot_curves(summary["methods"], out / "curves.png",
                             title=f"Fictional facts{'' if cfg.style == 'prose' else f' ({cfg.style}s)'}, {cfg.model} "
                                   f"({counts['to_learn']} to learn, "
                                   f"{counts['not_to_forget']} NF, {len(runs)} seed{'s' if len(runs) > 1 else ''}; "
                                   "band: 95% interval)")


def run_bench(cfg: FictionalConfig, command: str = "") -> dict[str, Any]:
    """Tailor NF (or reuse), write the train side, choose the lr on its held-out pairs, get φ (shipped or
    meta-trained on phi_pairs.jsonl); then per seed its facts and every method; a summary with intervals."""
    return runner.run(Fictional(), cfg, command)
