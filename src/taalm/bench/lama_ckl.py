"""LAMA-ckl (Seo et al. 2024, §4.1): tailoring the sets to a model, the benchmark runner, and the paper's table.

    taalm tailor --model smollm2-135m --out runs/split
    taalm bench lama-ckl --model smollm2-135m --preset cpu --out runs/lama

Tailoring keeps what makes the numbers meaningful for *this* model: To-Learn = variant facts it gets entirely wrong
(accuracy 0), Not-To-Forget = invariant_descriptive facts it gets entirely right (accuracy 1, the official NF file),
meta pool = every other invariant fact (both invariant files, deduplicated by uuid) that is neither a variant fact nor
any Not-To-Forget candidate, so φ never trains on a fact the benchmark evaluates, whatever the limits.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from pathlib import Path
from typing import Any

from taalm import models
from taalm.bench import runner
from taalm.bench.config import LamaCklConfig, TailorConfig
from taalm.config import save_config
from taalm.data import encode, load_pairs, pad_token_id
from taalm.distributed import Processes
from taalm.errors import TaalmError
from taalm.io import atomic_dir, atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from taalm.windowing import answer_window

log = logging.getLogger("taalm")
FILES = ("variant", "invariant_descriptive", "invariant_schematic")
NF_FILE = "invariant_descriptive"
REQUIRED = ("uuid", "subject", "object", "evidence", "task_descriptive")


def data_file(name: str, data_dir: str = "") -> Path:
    if data_dir:
        return Path(data_dir) / f"{name}.jsonl"
    return Path(__file__).parents[1] / "resources" / "lama_ckl" / f"{name}.jsonl.gz"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """LAMA-ckl rows, each checked for its fields; ``_where`` records file:line for reports."""
    rows = []
    for line, record in read_jsonl(path):
        for name in REQUIRED:
            if not isinstance(record.get(name), str) or not record[name].strip():
                raise TaalmError(f"{path}:{line}: missing field {name!r}")
        rows.append({**record, "_where": f"{path.name}:{line}"})
    return rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pair_record(row: dict[str, Any]) -> dict[str, Any]:
    """The row as taalm's generic record: document (evidence), task (cloze), answer (object)."""
    record = {"document": row["evidence"], "task": row["task_descriptive"], "answer": row["object"],
              "text": row["evidence"], "uuid": row["uuid"], "subject": row["subject"]}
    if isinstance(row.get("task_schematic"), str):
        record["task_schematic"] = row["task_schematic"]
    return record


class RowScorer:
    """The base model's label-token accuracy on rows' cloze tasks (loaded once, scored on demand)."""

    def __init__(self, model_name: str, eval_batch: int, max_length: int, device: str):
        self.tokenizer = models.load_tokenizer(model_name)
        self.device = models.pick_device(device)
        self.model = models.load_causal_lm(model_name).to(self.device)
        self.eval_batch, self.max_length = eval_batch, max_length
        self.skipped: list[dict] = []

    def _task(self, row: dict, form: str = "descriptive"):
        return encode(self.tokenizer, row[f"task_{form}"], self.max_length, answer=row["object"], where=row["_where"])

    def usable(self, row: dict, document: bool = False, forms: tuple[str, ...] = ("descriptive",)) -> bool:
        """Whether the answer survives tokenization of the task in every form (and, with ``document``, of the
        evidence θ learns: a fact cut out of its document cannot be learned, and oracle weights need it); else
        listed in ``skipped``."""
        try:
            for form in forms:
                if form == "descriptive" or isinstance(row.get(f"task_{form}"), str):
                    self._task(row, form)
            if document:
                encode(self.tokenizer, row["evidence"], self.max_length, answer=row["object"],
                       where=f"{row['_where']} (evidence)")
        except TaalmError as e:
            self.skipped.append({"row": row["_where"], "uuid": row["uuid"], "reason": str(e)})
            return False
        return True

    def __call__(self, rows: list[dict], form: str = "descriptive") -> list[float]:
        """Accuracy per row on its task in ``form``; rows must be ``usable`` (``_select`` checks them first)."""
        from taalm.ckl import score_probes

        encoded = [self._task(row, form) for row in rows]
        return score_probes(self.model, encoded, pad_token_id(self.tokenizer), self.eval_batch, self.device).accuracy


def _select(rows: list[dict], keep, limit: int, seed: int, scorer: RowScorer, scores: dict[str, float | None],
            chunk: int = 64, document: bool = False) -> list[dict]:
    """Usable rows whose base accuracy satisfies ``keep``; with a limit, rows are scored in a seeded order until
    enough. Unusable rows (see ``RowScorer.usable``) are recorded with accuracy None and never selected."""
    order = list(rows)
    if limit:
        random.Random(seed).shuffle(order)
    selected: list[dict] = []
    for k in range(0, len(order), chunk):
        part = []
        for row in order[k:k + chunk]:
            if scorer.usable(row, document):
                part.append(row)
            else:
                scores[row["_where"]] = None
        for row, score in zip(part, scorer(part) if part else []):
            scores[row["_where"]] = score
            if score is not None and keep(score) and (not limit or len(selected) < limit):
                selected.append(row)
        if limit and len(selected) >= limit:
            break
    return selected


def meta_pool(rows: dict[str, list[dict]], taken: set[str], scorer: RowScorer, scores: dict[str, float | None],
              max_accuracy: float) -> tuple[list[dict], dict[str, float]]:
    """The invariant facts not ``taken`` (deduplicated by uuid, usable in both task forms); below 1.0, only those
    the model does not know: base accuracy under ``max_accuracy`` on the descriptive and on the schematic task, as
    the official φ pairs were chosen. Returns the pool and the schematic accuracies scored (by file:line)."""
    remaining, seen = [], set()
    unusable = {s["row"] for s in scorer.skipped}
    for r in rows["invariant_descriptive"] + rows["invariant_schematic"]:
        if r["uuid"] not in taken | seen and r["_where"] not in unusable and \
                scorer.usable(r, forms=("descriptive", "schematic")):
            remaining.append(r)
            seen.add(r["uuid"])
    if max_accuracy >= 1.0:
        return remaining, {}
    unscored = [r for r in remaining if r["_where"] not in scores]
    scores.update(zip((r["_where"] for r in unscored), scorer(unscored) if unscored else []))
    with_schematic = [r for r in remaining if isinstance(r.get("task_schematic"), str)]
    schematic = dict(zip((r["_where"] for r in with_schematic), scorer(with_schematic, "schematic")
                         if with_schematic else []))
    unknown = lambda r: scores[r["_where"]] < max_accuracy and schematic.get(r["_where"], 0.0) < max_accuracy
    return [r for r in remaining if unknown(r)], schematic


def tailor(cfg: TailorConfig) -> Path:
    """Write to_learn / not_to_forget / meta_pool (JSONL) and tailor.json (model, hashes, counts, per-row accuracy)."""
    paths = {name: data_file(name, cfg.data_dir) for name in FILES}
    rows = {name: read_rows(path) for name, path in paths.items()}
    scorer = RowScorer(cfg.model, cfg.eval_batch, cfg.max_length, cfg.device)
    scores: dict[str, float | None] = {}
    official = cfg.split == "official"
    to_learn = _select(rows["variant"], lambda a: official or a == 0.0, cfg.to_learn, cfg.seed, scorer, scores,
                       document=True)
    # Every NF candidate is scored, whatever the limit: the meta pool leaves out all of them, so a φ trained on one
    # tailoring's pool never saw a fact that another tailoring (other limits or seed) puts in Not-To-Forget.
    candidates = _select(rows[NF_FILE], lambda a: official or a == 1.0, 0, cfg.seed, scorer, scores)
    nf = candidates
    if cfg.not_to_forget:
        order = list(candidates)
        random.Random(cfg.seed).shuffle(order)
        nf = order[:cfg.not_to_forget]
    taken = {r["uuid"] for r in candidates} | {r["uuid"] for r in rows["variant"]}
    pool, pool_scores = meta_pool(rows, taken, scorer, scores, 1.0 if official else cfg.pool_max_accuracy)
    if scorer.skipped:
        log.warning("%d rows skipped (answer not usable); listed in tailor.json", len(scorer.skipped))
    report = {
        "model": cfg.model, "split": cfg.split,
        "files": {name: {"path": str(p), "sha256": _sha256(p), "rows": len(rows[name])} for name, p in paths.items()},
        "rule": {"to_learn": "all variant rows" if official else "variant rows with base accuracy 0",
                 "not_to_forget": f"all {NF_FILE} rows" if official else f"{NF_FILE} rows with base accuracy 1",
                 "meta_pool": f"every other invariant fact (descriptive + schematic, deduplicated by uuid): no variant "
                              f"fact and no {NF_FILE} fact that is a Not-To-Forget candidate, whatever the limits"
                              + ("" if official or cfg.pool_max_accuracy >= 1.0 else
                                 f"; only facts the model does not know: base accuracy below {cfg.pool_max_accuracy}"
                                 " on both the descriptive and the schematic task (the official φ pairs' rule)"),
                 "limits": {"to_learn": cfg.to_learn, "not_to_forget": cfg.not_to_forget, "seed": cfg.seed}},
        "counts": {"to_learn": len(to_learn), "not_to_forget": len(nf), "meta_pool": len(pool),
                   "scored": len(scores), "skipped": len(scorer.skipped)},
        "skipped": scorer.skipped,
        "base_accuracy": scores,
        "meta_pool_schematic_accuracy": pool_scores,
    }
    with atomic_dir(cfg.out) as tmp:
        for name, selected in (("to_learn", to_learn), ("not_to_forget", nf), ("meta_pool", pool)):
            write_jsonl(tmp / f"{name}.jsonl", [pair_record(r) for r in selected])
        atomic_write_json(tmp / "tailor.json", report)
        save_config(cfg, tmp / "config.yaml")
    print(f"tailored LAMA-ckl for {cfg.model}: {report['counts']}")
    return Path(cfg.out)


def summarize_curve(curve: list[tuple[float, float]]) -> dict[str, Any]:
    """The paper's columns from a curve indexed by epoch (0 = before training): Top Acc = max To-Learn over the
    training epochs (earliest on ties), its epoch, NF Acc at that epoch, Total Knowledge = Top + NF."""
    if len(curve) < 2:
        raise ValueError("a curve needs epoch 0 and at least one training epoch")
    best = max(range(1, len(curve)), key=lambda e: (curve[e][0], -e))
    top, nf = curve[best]
    return {"top_acc": top, "epoch": best, "nf_acc": nf, "total": top + nf, "curve": [list(p) for p in curve]}


def curve_from_metrics(records: list[dict]) -> list[tuple[float, float]]:
    acc = {(r["epoch"], r["probe"]): r["accuracy"] for r in records}
    epochs = sorted({r["epoch"] for r in records})
    return [(acc[(e, "to_learn")], acc[(e, "not_to_forget")]) for e in epochs]


def _subsample(path: Path, limit: int, seed: int) -> list[dict[str, Any]]:
    records = [r for _, r in read_jsonl(path)]
    if limit and limit < len(records):
        records = sorted(random.Random(seed).sample(records, limit), key=lambda r: r["uuid"])
    return records


def _windowed(records: list[dict[str, Any]], tokenizer, max_length: int) -> tuple[list[dict[str, Any]], int]:
    """Each record's document cut to a window of ``max_length`` tokens around its answer (when it is longer)."""
    out, count = [], 0
    for r in records:
        window = answer_window(tokenizer, r["document"], r["answer"], max_length, where=r.get("uuid", ""))
        count += window.windowed
        out.append({**r, "document": window.text, "text": window.text})
    return out, count


def prepare_sets(cfg: LamaCklConfig, split_dir: Path, sets: Path) -> dict[str, Any]:
    """The run's To-Learn, Not-To-Forget and meta-pool files (seeded subsets, documents windowed with --window);
    returns their counts and how many documents were windowed."""
    chosen = {"to_learn": _subsample(split_dir / "to_learn.jsonl", cfg.to_learn, cfg.seed),
              "not_to_forget": _subsample(split_dir / "not_to_forget.jsonl", cfg.not_to_forget, cfg.seed),
              "meta_pool": _subsample(split_dir / "meta_pool.jsonl", cfg.meta_pool, cfg.seed)}
    if not chosen["to_learn"] or not chosen["not_to_forget"]:
        raise TaalmError(f"{split_dir}: empty To-Learn or Not-To-Forget set "
                         f"({ {k: len(v) for k, v in chosen.items()} })")
    windowed = {}
    if cfg.window:
        tokenizer = models.load_tokenizer(cfg.model)
        for name in ("to_learn", "not_to_forget"):  # what θ learns (and Mix-Review replays); φ's pool is windowed by
            chosen[name], windowed[name] = _windowed(chosen[name], tokenizer, cfg.max_length)  # meta-train itself
    procs = Processes(cfg.device)
    if procs.is_main:
        for name, records in chosen.items():
            write_jsonl(sets / f"{name}.jsonl", records)
    procs.barrier()
    return {"counts": {k: len(v) for k, v in chosen.items()}, "windowed": windowed}


def _table(summary: dict[str, Any]) -> str:
    lines = ["| Method | Top Acc | Epoch | NF Acc | Total Knowledge | seconds |", "|---|---|---|---|---|---|"]
    for name, m in summary["methods"].items():
        lines.append(f"| {name} | {m['top_acc']:.3f} | {m['epoch']} | {m['nf_acc']:.3f} | {m['total']:.3f} | "
                     f"{m['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def run_bench(cfg: LamaCklConfig, command: str = "") -> dict[str, Any]:
    """Tailor (or reuse), choose the lr (optional), get φ, learn with every method; resumable."""
    from taalm.viz import plot_method_curves

    started = time.time()
    runner.check_phi_model(cfg)
    procs = Processes(cfg.device)  # under accelerate launch: every process runs this; the main one writes
    out = Path(cfg.out)
    previous = runner.previous_summary(out)
    split_dir = Path(cfg.tailor_dir) if cfg.tailor_dir else out / "split"
    if not (split_dir / "tailor.json").is_file():
        if cfg.tailor_dir:
            raise TaalmError(f"option --tailor-dir: {split_dir} has no tailor.json")
        if procs.is_main:
            tailor(TailorConfig(model=cfg.model, out=str(split_dir), split=cfg.split, device=cfg.device,
                                to_learn=cfg.to_learn, not_to_forget=cfg.not_to_forget, seed=cfg.seed,
                                eval_batch=cfg.eval_batch))
        procs.barrier()
    data = prepare_sets(cfg, split_dir, out / "sets")
    sets = {name: out / "sets" / f"{name}.jsonl" for name in ("to_learn", "not_to_forget", "meta_pool")}

    lr_selection = None
    if cfg.lr_candidate_list():
        held = [{"document": p.document, "task": p.task, "answer": p.answer}
                for p in runner.held_out_pairs(load_pairs(sets["meta_pool"], cfg.task_format), cfg)]
        if cfg.window:
            held, _ = _windowed(held, models.load_tokenizer(cfg.model), cfg.max_length)
        lr_selection = runner.select_lrs(cfg, [{"text": r["document"], "answer": r["answer"]} for r in held],
                                         [{"task": r["task"], "answer": r["answer"]} for r in held],
                                         out / "lr_selection")
        cfg = runner.with_lr(cfg, lr_selection)
    if procs.is_main:
        save_config(cfg, out / "config.yaml")
    phi = runner.obtain_phi(cfg, sets["meta_pool"], out / "phi", task_format=cfg.task_format) \
        if cfg.needs_phi() else None

    results: dict[str, Any] = {}
    for name in cfg.method_list():
        run_dir = out / "methods" / name
        metrics, seconds = runner.learn_run(runner.learn_config(
            runner.with_lr(cfg, lr_selection, name), method=name, docs=str(sets["to_learn"]), out=str(run_dir),
            phi=phi["dir"] if phi else "",
            probes=[f"to_learn={sets['to_learn']}", f"not_to_forget={sets['not_to_forget']}"],
            review_docs=str(sets["not_to_forget"]), checkpoint_every=1))
        results[name] = {**summarize_curve(curve_from_metrics(metrics)), "seconds": round(seconds, 1),
                         "seconds_per_epoch": round(seconds / cfg.epochs, 1)}
    summary = {
        "benchmark": "lama-ckl", "model": cfg.model, "split": data["counts"], "split_kind": cfg.split,
        "windowed": data["windowed"], "device": runner.device_name(cfg.device),
        "command": runner.command_line(cfg, command, "lama-ckl"),
        "wall_seconds": round(time.time() - started + previous.get("wall_seconds", 0.0), 1),
        "settings": {"epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size, "max_length": cfg.max_length,
                     "window": cfg.window, "review_ratio": cfg.review_ratio, "review_decay": cfg.review_decay,
                     "lora_r": cfg.lora_r, "lora_dropout": cfg.lora_dropout, "seed": cfg.seed},
        "lr_selection": lr_selection, "phi": phi, "methods": results,
    }
    if procs.is_main:
        atomic_write_json(out / "summary.json", summary)
        atomic_write_text(out / "table.md", _table(summary))
        plot_method_curves({n: [tuple(p) for p in m["curve"]] for n, m in results.items()}, out / "curves.png",
                           title=f"LAMA-ckl, {cfg.model} ({data['counts']['to_learn']} to learn, "
                                 f"{data['counts']['not_to_forget']} NF)")
        print(_table(summary))
    return summary
