"""TemporalWiki (Jang et al. 2022; TAALM §4.2): θ learns three monthly Wikipedia periods in sequence.

    taalm bench temporalwiki --model smollm2-135m --preset cpu --out runs/twiki

Every method carries one adapter across the periods (``taalm learn --init-from``) with a fresh optimizer each period.
Before and after each period the changed (to learn) and unchanged (not to forget) probes of that period are scored
with the official metric: per probe the mean NLL of the object's tokens (its last occurrence), averaged over probes,
not exponentiated (lower is better); accuracy and exp(token NLL) are recorded beside it. The base model is scored on
every period once. φ is meta-trained on period 0801-0901 only (or given). Without the official diff documents
(``--diffsets``) the documents are built from the probes, and every output says so.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from taalm import models
from taalm.bench import runner
from taalm.bench import twiki_data as data
from taalm.bench.config import TemporalWikiConfig
from taalm.config import save_config
from taalm.data import load_pairs
from taalm.distributed import Processes
from taalm.io import atomic_write_json, atomic_write_text, write_jsonl

KINDS = ("changed", "unchanged")
SHIPPED_SUFFIX = "-temporalwiki"  # --phi auto takes the φ shipped as "<model>-temporalwiki" (trained on 0801-0901)
METRICS = ("nll", "accuracy", "perplexity")


def _period_seed(seed: int, period: str) -> int:
    return seed * 1000 + data.PERIODS.index(period)


def prepare_data(cfg: TemporalWikiConfig, sets: Path) -> dict[str, Any]:
    """Write each learned period's documents and probes, φ's meta-training pairs and Mix-Review's paragraphs under
    ``sets``; returns the provenance (what the documents are, counts, hashes, the builder's version). Everything is
    read and checked before anything is written."""
    facts = {p: {k: data.load_facts(data.probe_file(p, k, cfg.data_dir)) for k in KINDS} for p in data.PERIODS}
    everything = [f for period in facts.values() for kind in period.values() for f in kind]
    pool = data.context_pool(exclude_facts=everything)  # no paragraph that could state an evaluated fact
    random.Random(cfg.seed).shuffle(pool)
    review, context = pool[:cfg.review_paragraphs], pool[cfg.review_paragraphs:] or pool
    files: dict[str, list[dict]] = {"review.jsonl": [{"text": t} for t in review]}
    provenance: dict[str, Any] = {"documents": "diffsets" if cfg.diffsets else "built-from-probes",
                                  "builder_version": None if cfg.diffsets else data.BUILDER_VERSION,
                                  "context_pool": len(context), "review_paragraphs": len(review), "periods": {}}
    for period in cfg.period_list():
        changed = data.select_subjects(facts[period]["changed"], cfg.changed_subjects, cfg.seed)
        unchanged = data.select_subset(facts[period]["unchanged"], cfg.unchanged, cfg.seed)
        if cfg.diffsets:
            texts = data.load_diffsets(cfg.diffsets, period)
            record = {"documents": len(texts), "source": str(data.diffset_file(cfg.diffsets, period))}
        else:
            built = data.build_documents(changed, context, _period_seed(cfg.seed, period))
            texts, record = [d.text for d in built], data.provenance(changed, built, _period_seed(cfg.seed, period))
        files[f"{period}/docs.jsonl"] = [{"text": t} for t in texts]
        files[f"{period}/changed.jsonl"] = [data.probe_record(f) for f in changed]
        files[f"{period}/unchanged.jsonl"] = [data.probe_record(f) for f in unchanged]
        provenance["periods"][period] = {**record, "changed_probes": len(changed), "unchanged_probes": len(unchanged)}
    if cfg.lr_candidate_list() or cfg.needs_phi() and runner.phi_source(cfg, SHIPPED_SUFFIX) == "train":
        meta_facts = data.select_subjects(facts[data.PHI_PERIOD]["changed"], cfg.meta_subjects, cfg.seed)
        built = data.build_documents(meta_facts, context, _period_seed(cfg.seed, data.PHI_PERIOD))
        files["phi_pairs.jsonl"] = data.meta_pairs(built)
        provenance["phi_pairs"] = {**data.provenance(meta_facts, built, _period_seed(cfg.seed, data.PHI_PERIOD)),
                                   "period": data.PHI_PERIOD, "pairs": len(meta_facts)}
    procs = Processes(cfg.device)
    if procs.is_main:
        for name, records in files.items():
            write_jsonl(sets / name, records)
    procs.barrier()
    return provenance


def probe_specs(cfg: TemporalWikiConfig, sets: Path, period: str) -> list[str]:
    """The probe sets scored in ``period``'s run: its own (changed, unchanged), and with --eval-all-periods every
    other learned period's as ``changed@PERIOD`` / ``unchanged@PERIOD``."""
    specs = [f"{kind}={sets / period / f'{kind}.jsonl'}" for kind in KINDS]
    if cfg.eval_all_periods:
        specs += [f"{kind}@{other}={sets / other / f'{kind}.jsonl'}" for other in cfg.period_list() if other != period
                  for kind in KINDS]
    return specs


def evaluate_base(cfg: TemporalWikiConfig, sets: Path, out: Path) -> dict[str, Any]:
    """The base model (no adapter) on every learned period's probes, once (``base.json``)."""
    path = out / "base.json"
    procs = Processes(cfg.device)
    if not path.is_file() and procs.is_main:
        atomic_write_json(path, _score_base(cfg, sets))
    procs.barrier()
    return json.loads(path.read_text())


def _score_base(cfg: TemporalWikiConfig, sets: Path) -> dict[str, Any]:
    """The base model's scores of each period's own changed and unchanged probes."""
    from taalm.ckl import encode_probes, evaluate
    from taalm.config import probe_sets
    from taalm.data import load_probes, pad_token_id

    tokenizer = models.load_tokenizer(cfg.model)
    device = models.pick_device(cfg.device)
    model = models.load_causal_lm(cfg.model, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation).to(device)
    result = {}
    for period in cfg.period_list():
        files = probe_sets(probe_specs(cfg, sets, period)[:2])
        probes = encode_probes(tokenizer, {k: load_probes(v) for k, v in files.items()}, cfg.max_length)
        result[period] = evaluate(model, probes, pad_token_id(tokenizer), cfg.eval_batch, device, cfg.dtype)
    return result


def _scores(metrics: list[dict], epoch: int) -> dict[str, dict[str, float]]:
    return {r["probe"]: {k: r[k] for k in METRICS} for r in metrics if r["epoch"] == epoch}


def run_method(cfg: TemporalWikiConfig, name: str, sets: Path, out: Path, phi: dict | None,
               lr_selection: dict | None = None) -> dict[str, Any]:
    """One method through the periods in order, each continuing the previous period's adapter, at the lr and epochs
    chosen for its adapter family."""
    cfg = runner.with_lr(cfg, lr_selection, name, epochs=True)
    result: dict[str, Any] = {}
    init_from = ""
    for period in cfg.period_list():
        run_dir = out / "methods" / name / period
        metrics, seconds = runner.learn_run(runner.learn_config(
            cfg, method=name, docs=str(sets / period / "docs.jsonl"), out=str(run_dir), init_from=init_from,
            phi=phi["dir"] if phi else "", probes=probe_specs(cfg, sets, period),
            review_docs=str(sets / "review.jsonl"), checkpoint_every=1))
        last = max(r["epoch"] for r in metrics)
        result[period] = {"before": _scores(metrics, 0), "after": _scores(metrics, last), "seconds": round(seconds, 1)}
        init_from = str(run_dir)
    result["average"] = {kind: sum(result[p]["after"][kind]["nll"] for p in cfg.period_list()) / len(cfg.period_list())
                         for kind in KINDS}
    return result


def table(summary: dict[str, Any]) -> str:
    """The paper's layout: rows base + methods; CHANGED / UNCHANGED object NLL after each period, and averages."""
    periods = list(summary["base"])
    header = "| Method | " + " | ".join(f"{p} CHANGED | {p} UNCHANGED" for p in periods) + " | AVG CHANGED | AVG UNCHANGED |"
    title = f"TemporalWiki, {summary['model']}, documents: {summary['data']['documents']} (object NLL, lower is better)"
    lines = [title, "", header, "|---" * (2 * len(periods) + 3) + "|"]
    rows = {"base": {p: summary["base"][p] for p in periods}}
    rows.update({name: {p: m[p]["after"] for p in periods} for name, m in summary["methods"].items()})
    for name, by_period in rows.items():
        values = [by_period[p][kind]["nll"] for p in periods for kind in KINDS]
        averages = [sum(by_period[p][kind]["nll"] for p in periods) / len(periods) for kind in KINDS]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values + averages) + " |")
    return "\n".join(lines) + "\n"


def run_bench(cfg: TemporalWikiConfig, command: str = "") -> dict[str, Any]:
    """Data, lr/epochs chosen on 0801-0901 (optional), φ, the base row, every method through every period."""
    from taalm.viz import plot_period_curves, plot_tradeoff

    started = time.time()
    runner.check_phi_model(cfg)
    out = Path(cfg.out)
    previous = runner.previous_summary(out)
    sets = out / "sets"
    provenance = prepare_data(cfg, sets)  # checks every input before the first write
    pairs = sets / "phi_pairs.jsonl" if (sets / "phi_pairs.jsonl").is_file() else None
    lr_selection = None
    if pairs is not None and cfg.lr_candidate_list():  # lr and epochs are chosen on 0801-0901 held-out pairs
        held = runner.held_out_pairs(load_pairs(pairs), cfg)
        docs = list(dict.fromkeys(p.document for p in held))
        lr_selection = runner.select_lrs(cfg, [{"text": d} for d in docs], [{"task": p.task, "answer": p.answer}
                                                                            for p in held], out / "lr_selection", "nll")
        cfg = runner.with_lr(cfg, lr_selection, epochs=True)
    procs = Processes(cfg.device)
    if procs.is_main:
        save_config(cfg, out / "config.yaml")
    # φ is selected by the benchmark's own metric, the answer NLL
    phi = runner.obtain_phi(cfg, pairs, out / "phi", SHIPPED_SUFFIX, val_metric="nll") if cfg.needs_phi() else None
    base = evaluate_base(cfg, sets, out)
    methods = {name: run_method(cfg, name, sets, out, phi, lr_selection) for name in cfg.method_list()}
    summary = {
        "benchmark": "temporalwiki", "model": cfg.model, "device": runner.device_name(cfg.device),
        "command": runner.command_line(cfg, command, "temporalwiki"),
        "wall_seconds": round(time.time() - started + previous.get("wall_seconds", 0.0), 1),
        "data": provenance, "periods": cfg.period_list(),
        "settings": {"epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size, "max_length": cfg.max_length,
                     "review_ratio": cfg.review_ratio, "review_decay": cfg.review_decay, "recadam_t0": cfg.recadam_t0,
                     "lora_r": cfg.lora_r, "lora_dropout": cfg.lora_dropout, "seed": cfg.seed},
        "metric": "per probe the mean NLL of the object's tokens (last occurrence), averaged over probes; "
                  "not exponentiated, lower is better",
        "lr_selection": lr_selection, "phi": phi, "base": base, "methods": methods,
    }
    if procs.is_main:
        atomic_write_json(out / "summary.json", summary)
        atomic_write_text(out / "table.md", table(summary))
        title = f"TemporalWiki, {cfg.model} ({provenance['documents']})"
        plot_period_curves(summary, out / "curves.png", title=title)
        plot_tradeoff(summary, out / "tradeoff.png", title=title)
        print(table(summary))
    return summary
