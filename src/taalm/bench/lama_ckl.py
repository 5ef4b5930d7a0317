"""LAMA-ckl (Seo et al. 2024, §4.1): tailoring the sets to a model, the benchmark, and the paper's table.

    taalm tailor --model smollm2-135m --out runs/split
    taalm bench lama-ckl --model smollm2-135m --preset cpu --out runs/lama

Tailoring keeps what makes the numbers meaningful for *this* model: To-Learn = variant facts of the fixed split's
evaluation part it gets entirely wrong (accuracy 0), Not-To-Forget = invariant_descriptive facts it gets entirely right
(accuracy 1, the official NF file), meta pool = the variant split's φ part and every invariant fact (both files,
deduplicated by uuid) that is not a Not-To-Forget candidate, less every fact that leaks into what any seed evaluates
(``lama_split``: shared evidence paragraph, same or swapped subject and object), so φ never trains on what the
benchmark evaluates, whatever the limits or the seed. ``split=official`` takes the paper's sets instead: all 500
variant rows To-Learn, all 500 invariant_descriptive rows Not-To-Forget. The files and rows: ``lama_data``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from taalm import models, stats
from taalm.bench import lama_data, lama_split, runner
from taalm.bench.config import BenchOptions, LamaCklConfig, TailorConfig
from taalm.bench.lama_data import NF_FILE, SEED_SETS, SETS
from taalm.config import save_config
from taalm.data import encode, load_pairs, pad_token_id
from taalm.distributed import Processes
from taalm.errors import TaalmError
from taalm.io import atomic_dir, atomic_write_json, write_jsonl
from taalm.scoring import score_probes
from taalm.stats import FactScores, Means
from taalm.viz import plot_method_curves

log = logging.getLogger("taalm")


class RowScorer:
    """The base model's label-token accuracy on rows' cloze tasks (loaded once, scored on demand)."""

    def __init__(self, model_name: str, eval_batch: int, max_length: int, device: str):
        self.tokenizer = models.load_tokenizer(model_name)
        self.device = models.pick_device(device)
        self.model = models.load_causal_lm(model_name).to(self.device)
        self.eval_batch, self.max_length = eval_batch, max_length
        self.skipped: list[dict] = []
        self.progress: tqdm | None = None  # ticks once per scored row (``tailor`` shows it)

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
        encoded = [self._task(row, form) for row in rows]
        accuracy = score_probes(self.model, encoded, pad_token_id(self.tokenizer), self.eval_batch, self.device).accuracy
        if self.progress is not None:
            self.progress.update(len(rows))
        return accuracy


class ReusedScores(RowScorer):
    """A RowScorer that answers from the accuracies an earlier tailoring recorded (``known``: per task form, by
    file:line) and scores only rows missing there. ``check`` rescores a seeded sample of the recorded rows of each
    form and refuses on any disagreement: the record must be of this model, tokenizer and settings."""

    def __init__(self, known: dict[str, dict[str, float | None]], *args: Any):
        super().__init__(*args)
        self.known, self.reused = known, 0

    def check(self, rows: list[dict], per_form: int, source: str) -> None:
        for form, known in self.known.items():
            recorded = [r for r in rows if known.get(r["_where"]) is not None and self.usable(r, forms=(form,))]
            sample = random.Random(0).sample(recorded, min(per_form, len(recorded)))
            fresh = RowScorer.__call__(self, sample, form) if sample else []
            differ = [(r["_where"], known[r["_where"]], a) for r, a in zip(sample, fresh)
                      if abs(a - known[r["_where"]]) > 1e-6]
            if differ:
                where, then, now = differ[0]
                raise TaalmError(f"option --reuse_scores: {source}: {len(differ)} of {len(sample)} {form} accuracies "
                                 f"scored again differ (e.g. {where}: recorded {then:.4f}, now {now:.4f}); it was not "
                                 "made by this model with these settings")
        self.skipped.clear()  # the sample's unusable rows are met and recorded again by the tailoring itself

    def __call__(self, rows: list[dict], form: str = "descriptive") -> list[float]:
        known = self.known[form]
        missing = [r for r in rows if known.get(r["_where"]) is None]
        fresh = dict(zip((r["_where"] for r in missing), super().__call__(missing, form) if missing else []))
        self.reused += len(rows) - len(missing)
        if self.progress is not None:
            self.progress.update(len(rows) - len(missing))
        return [fresh[r["_where"]] if r["_where"] in fresh else known[r["_where"]] for r in rows]


def reused_scores(cfg: TailorConfig, paths: dict[str, Path], rows: dict[str, list[dict]]) -> ReusedScores:
    """``--reuse_scores``: a ReusedScores from an earlier tailor.json of ``cfg.model`` on the same data files,
    checked on ``cfg.reuse_check`` rows per form."""
    import json

    source = Path(cfg.reuse_scores)
    try:
        report = json.loads(source.read_text(encoding="utf-8"))
        files, model = report["files"], report["model"]
        known = {"descriptive": report["base_accuracy"], "schematic": report["meta_pool_schematic_accuracy"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TaalmError(f"option --reuse_scores: {source}: not a tailor.json ({type(e).__name__}: {e})") from None
    if model != cfg.model:
        raise TaalmError(f"option --reuse_scores: {source}: tailored for {model}, not {cfg.model}")
    changed = [name for name, path in paths.items() if files.get(name, {}).get("sha256") != lama_data.sha256(path)]
    if changed:
        raise TaalmError(f"option --reuse_scores: {source}: made on other data ({', '.join(changed)} differ)")
    scorer = ReusedScores(known, cfg.model, cfg.eval_batch, cfg.max_length, cfg.device)
    scorer.check([r for name in lama_data.FILES for r in rows[name]], cfg.reuse_check, str(source))
    return scorer


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


def _by_source(rows: list[dict]) -> dict[str, int]:
    variant = sum(r["_where"].startswith("variant") for r in rows)
    return {"variant_phi_part": variant, "invariant": len(rows) - variant}


def meta_pool(rows: dict[str, list[dict]], phi_part: list[dict], evaluated: list[dict], scorer: RowScorer,
              scores: dict[str, float | None], max_accuracy: float) -> tuple[list[dict], dict[str, float], dict[str, Any]]:
    """φ's pairs: the variant split's ``phi_part`` and the invariant facts (deduplicated by uuid) that are not
    ``evaluated`` (every row any seed could evaluate: evaluation-part variant rows and Not-To-Forget candidates), less
    those that leak into them (``lama_split.leak_filter``) and those unusable in either task form. Below 1.0, only
    facts the model does not know: base accuracy under ``max_accuracy`` on the descriptive and on the schematic task,
    as the official φ pairs were chosen. Returns the pool, the schematic accuracies scored (by file:line) and what was
    left out, and why."""
    taken = {r["uuid"] for r in evaluated + rows["variant"]}
    candidates = list(phi_part)
    for r in rows["invariant_descriptive"] + rows["invariant_schematic"]:
        if r["uuid"] not in taken:
            candidates.append(r)
            taken.add(r["uuid"])
    kept, left_out = lama_split.leak_filter(candidates, evaluated)
    unusable = {s["row"] for s in scorer.skipped}
    remaining = [r for r in kept if r["_where"] not in unusable and scorer.usable(r, forms=("descriptive", "schematic"))]
    pool, schematic = remaining, {}
    if max_accuracy < 1.0:
        unscored = [r for r in remaining if r["_where"] not in scores]
        scores.update(zip((r["_where"] for r in unscored), scorer(unscored) if unscored else []))
        with_schematic = [r for r in remaining if isinstance(r.get("task_schematic"), str)]
        schematic = dict(zip((r["_where"] for r in with_schematic), scorer(with_schematic, "schematic")
                             if with_schematic else []))
        unknown = lambda r: scores[r["_where"]] < max_accuracy and schematic.get(r["_where"], 0.0) < max_accuracy
        pool = [r for r in remaining if unknown(r)]
    report = {"rule": lama_split.LEAK_RULE, "candidates": _by_source(candidates),
              "left_out": {"rows": len(candidates) - len(kept),
                           **{f"for_{reason}": len(where) for reason, where in left_out.items()}},
              "after_leak_filters": _by_source(kept), "unusable": len(kept) - len(remaining),
              "known": len(remaining) - len(pool), "meta_pool": _by_source(pool), "left_out_rows": left_out}
    return pool, schematic, report


def _rules(cfg: TailorConfig) -> dict[str, Any]:
    """tailor.json's words for what went where."""
    if cfg.split == "official":
        rules = {"to_learn": "all variant rows", "not_to_forget": f"all {NF_FILE} rows",
                 "meta_pool": "invariant facts (descriptive + schematic, deduplicated by uuid) that are no "
                              "Not-To-Forget row, less every fact that leaks into an evaluated set (meta_pool_filters)"}
    else:
        known = "" if cfg.pool_max_accuracy >= 1.0 else (
            f"; only facts the model does not know: base accuracy below {cfg.pool_max_accuracy} on both the "
            "descriptive and the schematic task (the official φ pairs' rule)")
        rules = {"to_learn": "variant rows of the split's evaluation part with base accuracy 0",
                 "not_to_forget": f"{NF_FILE} rows with base accuracy 1",
                 "meta_pool": "the variant split's φ part and every invariant fact (descriptive + schematic, "
                              f"deduplicated by uuid) that is no {NF_FILE} Not-To-Forget candidate, whatever the "
                              "limits, less every fact that leaks into an evaluated set (meta_pool_filters)" + known}
    return {**rules, "limits": {"to_learn": cfg.to_learn, "not_to_forget": cfg.not_to_forget, "seed": cfg.seed}}


def tailor(cfg: TailorConfig, scorer: RowScorer | None = None) -> Path:
    """Write to_learn / not_to_forget / meta_pool (JSONL) and tailor.json (model, hashes, the variant split, counts,
    what the pool left out and why, per-row accuracy). ``scorer`` stands in for the model's (default: ``cfg.model``)."""
    paths = {name: lama_data.data_file(name, cfg.data_dir) for name in lama_data.FILES}
    rows = {name: lama_data.read_rows(path) for name, path in paths.items()}
    if scorer is None:
        scorer = reused_scores(cfg, paths, rows) if cfg.reuse_scores else \
            RowScorer(cfg.model, cfg.eval_batch, cfg.max_length, cfg.device)
    scores: dict[str, float | None] = {}
    official = cfg.split == "official"
    evaluation, phi_part = (rows["variant"], []) if official else lama_split.split_variant(rows["variant"])
    with tqdm(desc="tailor: base accuracy", unit="row", dynamic_ncols=True) as scorer.progress:
        to_learn = _select(evaluation, lambda a: official or a == 0.0, cfg.to_learn, cfg.seed, scorer, scores,
                           document=True)
        # Every NF candidate is scored, whatever the limit: the meta pool leaves out all of them, so a φ trained on
        # one tailoring's pool never saw a fact that another tailoring (other limits or seed) puts in Not-To-Forget.
        candidates = _select(rows[NF_FILE], lambda a: official or a == 1.0, 0, cfg.seed, scorer, scores)
        pool, pool_scores, pool_report = meta_pool(rows, phi_part, evaluation + candidates, scorer, scores,
                                                   1.0 if official else cfg.pool_max_accuracy)
    nf = candidates
    if cfg.not_to_forget:
        order = list(candidates)
        random.Random(cfg.seed).shuffle(order)
        nf = order[:cfg.not_to_forget]
    if scorer.skipped:
        log.warning("%d rows skipped (answer not usable); listed in tailor.json", len(scorer.skipped))
    report = {
        "model": cfg.model, "split": cfg.split,
        "files": {name: {"path": str(p), "sha256": lama_data.sha256(p), "rows": len(rows[name])} for name, p in paths.items()},
        "rule": _rules(cfg),
        "variant_split": {"rule": "official: every variant row is To-Learn" if official else lama_split.RULE,
                          "version": None if official else lama_split.SPLIT_VERSION,
                          "evaluation": len(evaluation), "phi": len(phi_part),
                          "evaluation_sha256": lama_split.fingerprint(evaluation)},
        "counts": {"to_learn": len(to_learn), "not_to_forget": len(nf), "meta_pool": len(pool),
                   "scored": len(scores), "skipped": len(scorer.skipped)},
        "meta_pool_filters": pool_report,
        "skipped": scorer.skipped,
        "base_accuracy": scores,
        "meta_pool_schematic_accuracy": pool_scores,
    }
    if isinstance(scorer, ReusedScores):
        report["reused_scores"] = {"from": cfg.reuse_scores, "rows": scorer.reused, "checked_per_form": cfg.reuse_check}
    if official:
        others = [r for name in lama_data.FILES if name != "variant" for r in rows[name]]
        report["official_phi_rule"] = {"rule": lama_split.OFFICIAL_PHI_RULE,
                                       "rows_meeting_it": sum(map(lama_split.meets_official_phi_rule, others)),
                                       "differences": list(lama_split.OFFICIAL_POOL_DIFFERENCES)}
    with atomic_dir(cfg.out) as tmp:
        for name, selected in (("to_learn", to_learn), ("not_to_forget", nf), ("meta_pool", pool)):
            write_jsonl(tmp / f"{name}.jsonl", [lama_data.pair_record(r) for r in selected])
        atomic_write_json(tmp / "tailor.json", report)
        save_config(cfg, tmp / "config.yaml")
    print(f"tailored LAMA-ckl for {cfg.model}: {report['counts']}")
    return Path(cfg.out)


def summarize_curve(curve: list[tuple[float, float]]) -> dict[str, Any]:
    """The paper's columns from a curve indexed by epoch (0 = before training): Top Acc = max To-Learn over the
    training epochs (earliest on ties, compared to 12 decimals like ``statistic``), its epoch, NF Acc at that epoch,
    Total Knowledge = Top + NF."""
    if len(curve) < 2:
        raise ValueError("a curve needs epoch 0 and at least one training epoch")
    best = max(range(1, len(curve)), key=lambda e: (round(curve[e][0], 12), -e))
    top, nf = curve[best]
    return {"top_acc": top, "epoch": best, "nf_acc": nf, "total": top + nf, "curve": [list(p) for p in curve]}


def curve_from_metrics(records: list[dict]) -> list[tuple[float, float]]:
    acc = {(r["epoch"], r["probe"]): r["accuracy"] for r in records}
    epochs = sorted({r["epoch"] for r in records})
    return [(acc[(e, "to_learn")], acc[(e, "not_to_forget")]) for e in epochs]


def exact_match_at(records: list[dict], epoch: int) -> float | None:
    """To-Learn whole-answer exact match at ``epoch`` (None where it was not scored)."""
    return next((r.get("exact_match") for r in records if r["epoch"] == epoch and r["probe"] == "to_learn"), None)


def fact_scores(records: list[dict]) -> FactScores | None:
    """Per-fact scores of a run's metrics for the bootstrap: To-Learn accuracy (and exact match) and NF accuracy,
    each (epochs, facts); None when the records hold no per-probe lists."""
    epochs = sorted({r["epoch"] for r in records})
    learn, keep = (runner.per_probe(records, probe, epochs) for probe in ("to_learn", "not_to_forget"))
    if learn is None or keep is None:
        return None
    return {"to_learn": {k: v for k, v in learn.items() if k in ("accuracy", "exact_match")},
            "not_to_forget": {"accuracy": keep["accuracy"]}}


def statistic(means: Means) -> dict[str, np.ndarray]:
    """The bootstrap's statistic, per replicate (first axis) from mean per-fact scores over epochs: Top Acc = max of
    the To-Learn curve over epochs >= 1 (earliest on ties), NF Acc and exact match at that epoch, Total = Top + NF,
    and both curves (for the plot's band)."""
    curve, keep = means["to_learn"]["accuracy"], means["not_to_forget"]["accuracy"]
    best = 1 + np.argmax(np.round(curve[:, 1:], 12), axis=1)
    at = lambda values: np.take_along_axis(values, best[:, None], axis=1)[:, 0]
    columns = {"top_acc": at(curve), "nf_acc": at(keep)}
    columns["total"] = columns["top_acc"] + columns["nf_acc"]
    if "exact_match" in means["to_learn"]:
        columns["exact_match"] = at(means["to_learn"]["exact_match"])
    return {**columns, "curve_to_learn": curve, "curve_not_to_forget": keep}


def curve_band(ci: dict[str, Any]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """The curves' 95% band from ``statistic``'s intervals: (lower, upper) curves of (To-Learn, NF) points."""
    (learn_lo, learn_hi), (keep_lo, keep_hi) = ci["curve_to_learn"], ci["curve_not_to_forget"]
    return list(zip(learn_lo, keep_lo, strict=True)), list(zip(learn_hi, keep_hi, strict=True))


def plot_curves(methods: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Every method's mean (To-Learn, NF) curve, with its 95% band where the row has intervals."""
    bands = {n: curve_band(m["ci95"]) for n, m in methods.items() if m.get("ci95")}
    plot_method_curves({n: [tuple(p) for p in m["curve"]] for n, m in methods.items()}, path, title=title, bands=bands)


def prepare_sets(cfg: LamaCklConfig, split_dir: Path, sets: Path, names: tuple[str, ...] = SETS) -> dict[str, Any]:
    """The run's ``names`` files among To-Learn, Not-To-Forget and meta pool: subsets of the tailored split seeded by
    ``cfg.seed`` (documents windowed with --window); returns their counts and how many documents were windowed."""
    limits = {"to_learn": cfg.to_learn, "not_to_forget": cfg.not_to_forget, "meta_pool": cfg.meta_pool}
    chosen = {name: lama_data.subsample(split_dir / f"{name}.jsonl", limits[name], cfg.seed) for name in names}
    if any(not chosen[name] for name in SEED_SETS if name in names):
        raise TaalmError(f"{split_dir}: empty To-Learn or Not-To-Forget set "
                         f"({ {k: len(v) for k, v in chosen.items()} })")
    windowed = {}
    if cfg.window and set(SEED_SETS) & set(names):
        tokenizer = models.load_tokenizer(cfg.model)
        # what θ learns (and Mix-Review replays); φ's pool is windowed by meta-training
        for name in (n for n in SEED_SETS if n in names):
            chosen[name], windowed[name] = lama_data.windowed(chosen[name], tokenizer, cfg.max_length)
    procs = Processes(cfg.device)
    if procs.is_main_process:
        for name, records in chosen.items():
            write_jsonl(sets / f"{name}.jsonl", records)
    procs.wait_for_everyone()
    return {"counts": {k: len(v) for k, v in chosen.items()}, "windowed": windowed}


def table(summary: dict[str, Any]) -> str:
    """The paper's columns as ``mean ± half-width`` of the 95% interval (just the mean without one), the top epoch
    of each seed, exact match, and the paired difference to the baseline with its interval."""
    seeds = summary["intervals"]["seeds"]
    base = summary["intervals"].get("baseline") or "finetune"
    about = f"{len(seeds)} seeds" if len(seeds) > 1 else "1 seed: ± over facts only"
    header = (f"| Method ({about}) | Top Acc | Epoch | NF Acc | Total Knowledge | Exact Match | "
              f"Δ Top Acc vs {base} [95%] | Δ NF Acc vs {base} [95%] | seconds |")
    lines = [header, "|---" * 9 + "|"]
    for name, m in summary["methods"].items():
        ci, vs = m.get("ci95") or {}, m.get(f"vs_{base}") or {}
        em = "—" if m.get("exact_match") is None else stats.plus_minus(m["exact_match"], ci.get("exact_match"))
        cells = [name, stats.plus_minus(m["top_acc"], ci.get("top_acc")), ",".join(map(str, m["epochs"])),
                 stats.plus_minus(m["nf_acc"], ci.get("nf_acc")), stats.plus_minus(m["total"], ci.get("total")), em,
                 stats.difference(vs.get("top_acc")), stats.difference(vs.get("nf_acc")), f"{m['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tailored_split(cfg: BenchOptions, out: Path, **options: Any) -> Path:
    """The tailored split a run uses: --tailor_dir, or ``tailor`` (with ``options``) into OUT/split once, by the
    main process."""
    split_dir = Path(cfg.tailor_dir) if cfg.tailor_dir else out / "split"
    if not (split_dir / "tailor.json").is_file():
        if cfg.tailor_dir:
            raise TaalmError(f"option --tailor_dir: {split_dir} has no tailor.json")
        procs = Processes(cfg.device)
        if procs.is_main_process:
            tailor(TailorConfig(model=cfg.model, out=str(split_dir), device=cfg.device, eval_batch=cfg.eval_batch,
                                **options))
        procs.wait_for_everyone()
    return split_dir


def learn_method(cfg: BenchOptions, name: str, out: Path, lr_selection: dict | None,
                 phi: dict | None) -> tuple[list[dict], float]:
    """Method ``name`` learns the seed's ``sets/to_learn.jsonl`` in ``out/methods/<name>`` (resumable), at the lr
    chosen for its adapter family, probed on To-Learn and Not-To-Forget after every epoch (Mix-Review replays the NF
    documents, as the official code does). Shared by LAMA-ckl and the fictional benchmark."""
    to_learn, nf = out / "sets" / "to_learn.jsonl", out / "sets" / "not_to_forget.jsonl"
    return runner.learn_run(runner.learn_config(
        runner.with_lr(cfg, lr_selection, name), method=name, docs=str(to_learn), out=str(out / "methods" / name),
        phi=phi["dir"] if phi else "", probes=[f"to_learn={to_learn}", f"not_to_forget={nf}"], review_docs=str(nf),
        checkpoint_every=1))


def method_summary(name: str, runs: list[runner.SeedRun], bootstrap: dict | None, epochs: int) -> dict[str, Any]:
    """A method's row over the seeds: the paper's columns as means over seeds, the mean curve and the epoch where it
    peaks, each seed's top epoch and values, and (from the bootstrap) the 95% intervals and the paired differences."""
    per_seed = {str(r.seed): r.methods[name] for r in runs}
    mean = runner.mean_over_seeds(list(per_seed.values()))
    seconds = sum(m["seconds"] for m in per_seed.values())
    entry = {"top_acc": mean["top_acc"], "epoch": summarize_curve(mean["curve"])["epoch"], "nf_acc": mean["nf_acc"],
             "total": mean["total"], "exact_match": mean["exact_match"], "curve": mean["curve"],
             "epochs": [m["epoch"] for m in per_seed.values()], "seconds": round(seconds, 1),
             "seconds_per_epoch": round(seconds / (epochs * len(runs)), 1), "seeds": per_seed}
    return runner.with_intervals(entry, bootstrap)


class LamaCkl(runner.Benchmark):
    """Tailor every candidate once (or reuse --tailor_dir); the meta pool (φ's pairs, the lr selection's held-out
    ones) is shared; each seed subsamples its own To-Learn and NF rows and learns them with every method."""

    name = "lama-ckl"
    settings = ("epochs", "lr", "batch_size", "max_length", "window", "review_ratio", "review_decay", "lora_r",
                "lora_dropout", "seed")

    def prepare(self, cfg: LamaCklConfig, out: Path) -> None:
        self.split_dir = tailored_split(cfg, out, split=cfg.split)  # every candidate, no limit
        self.shared = prepare_sets(cfg, self.split_dir, out / "sets", ("meta_pool",))
        self.phi_pairs = out / "sets" / "meta_pool.jsonl"

    def held_out(self, cfg: LamaCklConfig, out: Path) -> tuple[list[dict], list[dict]]:
        held = [{"document": p.document, "task": p.task, "answer": p.answer}
                for p in runner.held_out_pairs(load_pairs(self.phi_pairs, cfg.task_format), cfg)]
        if cfg.window:
            held, _ = lama_data.windowed(held, models.load_tokenizer(cfg.model), cfg.max_length)
        return ([{"text": r["document"], "answer": r["answer"]} for r in held],
                [{"task": r["task"], "answer": r["answer"]} for r in held])

    def meta_overrides(self, cfg: LamaCklConfig) -> dict[str, Any]:
        return {"task_format": cfg.task_format}

    def prepare_seed(self, cfg: LamaCklConfig, out: Path) -> runner.SeedRun:
        return runner.SeedRun(cfg.seed, data=prepare_sets(cfg, self.split_dir, out / "sets", SEED_SETS))

    def run_method(self, cfg: LamaCklConfig, name: str, out: Path,
                   run: runner.SeedRun) -> tuple[dict[str, Any], FactScores | None]:
        metrics, seconds = learn_method(cfg, name, out, self.lr_selection, self.phi)
        top = summarize_curve(curve_from_metrics(metrics))
        return ({**top, "exact_match": exact_match_at(metrics, top["epoch"]), "seconds": round(seconds, 1)},
                fact_scores(metrics))

    def statistic(self, cfg: LamaCklConfig) -> stats.Statistic:
        return statistic

    def summary(self, cfg: LamaCklConfig, runs: list[runner.SeedRun], bootstraps: dict, out: Path) -> dict[str, Any]:
        return {"split": {**runs[0].data["counts"], **self.shared["counts"]}, "split_kind": cfg.split,
                "windowed": runner.mean_over_seeds([r.data["windowed"] for r in runs]),
                "seed_splits": {str(r.seed): r.data for r in runs},
                "methods": {name: method_summary(name, runs, bootstraps.get(name), cfg.epochs)
                            for name in cfg.method_list()}}

    def table(self, summary: dict[str, Any]) -> str:
        return table(summary)

    def plots(self, cfg: LamaCklConfig, summary: dict[str, Any], runs: list[runner.SeedRun], out: Path) -> None:
        counts = summary["split"]
        plot_curves(summary["methods"], out / "curves.png",
                    title=f"LAMA-ckl, {cfg.model} ({counts['to_learn']} to learn, {counts['not_to_forget']} NF, "
                          f"{len(runs)} seed{'s' if len(runs) > 1 else ''}; band: 95% interval)")


def run_bench(cfg: LamaCklConfig, command: str = "") -> dict[str, Any]:
    """Tailor every candidate once (or reuse), choose the lr (optional) and get φ, shared by every seed; then per
    seed (``--seeds``) its split and every method in OUT/seed-<s>; intervals over facts and seeds; resumable."""
    return runner.run(LamaCkl(), cfg, command)
