"""TemporalWiki (Jang et al. 2022; TAALM §4.2): θ learns three monthly Wikipedia periods in sequence.

    taalm bench temporalwiki --model smollm2-135m --preset cpu --out runs/twiki

Every method carries one adapter across the periods (``taalm learn --init_from``) with a fresh optimizer each period.
Before and after each period the changed (to learn) and unchanged (not to forget) probes of that period are scored
with the official metric: per probe the mean NLL of the object's tokens (its last occurrence), averaged over probes,
not exponentiated (lower is better); accuracy and exp(token NLL) are recorded beside it. The base model is scored on
every period once. φ is the one shipped for the model (``--phi auto``: the general φ every benchmark takes), given,
or meta-trained on period 0801-0901 only. Without the official diff documents
(``--diffsets``) the documents are built from the probes, and every output says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from taalm import fingerprint, models, stats
from taalm.bench import runner
from taalm.bench import twiki_data as data
from taalm.bench.config import TemporalWikiConfig
from taalm.config import probe_sets
from taalm.data import load_pairs, load_probes, pad_token_id
from taalm.distributed import Processes
from taalm.errors import TaalmError
from taalm.io import atomic_write_json, write_jsonl
from taalm.position_check import position_check_for_benchmark
from taalm.scoring import encode_probes, evaluate
from taalm.stats import FactScores, Means, Statistic
from taalm.viz import plot_period_curves, plot_tradeoff

KINDS = ("changed", "unchanged")
POSITION_CHECK_LENGTH = 1024  # whole documents: a fact cut off by --max_length would drop out of the check
METRICS = ("nll", "accuracy", "perplexity")
METRIC = ("per probe the mean NLL of the object's tokens (last occurrence), averaged over probes; not exponentiated, "
          "lower is better")


# Where Mix-Review's replayed text differs from the official runs (which replay a Wikipedia 08 snapshot).
REVIEW_SOURCE = ("LAMA-ckl evidence paragraphs (T-REx Wikipedia abstracts, none able to state an evaluated fact) on "
                 "φ's side of the context split, so never around an evaluated fact, "
                 "shuffled by the seed (official: the Wikipedia 0801 snapshot, Wikipedia_Full/wikipedia_08_gpt2)")


def prepare_data(cfg: TemporalWikiConfig, sets: Path) -> dict[str, Any]:
    """Write each learned period's documents and probes, φ's meta-training pairs and Mix-Review's paragraphs under
    ``sets``; returns the provenance (what the documents are, counts, hashes, the builder's version). Everything is
    read and checked before anything is written."""
    facts = data.load_all_facts(cfg.data_dir)
    sides = data.context_sides(facts, cfg.seed)
    review, context = data.review_and_context(sides, cfg.review_paragraphs)
    files: dict[str, list[dict]] = {"review.jsonl": [{"text": t} for t in review]}
    provenance: dict[str, Any] = {"documents": "diffsets" if cfg.diffsets else "built-from-probes",
                                  "builder_version": None if cfg.diffsets else data.BUILDER_VERSION,
                                  "context_pool": len(context), "review_paragraphs": len(review),
                                  "review": REVIEW_SOURCE, "periods": {}}
    for period in cfg.period_list():
        changed = data.select_subjects(facts[period]["changed"], cfg.changed_subjects, cfg.seed)
        unchanged = data.select_subset(facts[period]["unchanged"], cfg.unchanged, cfg.seed)
        if cfg.diffsets:
            texts = data.load_diffsets(cfg.diffsets, period)
            record = {"documents": len(texts), "source": str(data.diffset_file(cfg.diffsets, period))}
            files[f"{period}/docs.jsonl"] = [{"text": t} for t in texts]
        else:
            built = data.build_documents(changed, context, data.period_seed(cfg.seed, period))
            record = data.provenance(changed, built, data.period_seed(cfg.seed, period))
            files[f"{period}/docs.jsonl"] = [data.document_record(d) for d in built]
        files[f"{period}/changed.jsonl"] = [data.probe_record(f) for f in changed]
        files[f"{period}/unchanged.jsonl"] = [data.probe_record(f) for f in unchanged]
        provenance["periods"][period] = {**record, "changed_probes": len(changed), "unchanged_probes": len(unchanged)}
    if cfg.lr_candidate_list() or cfg.needs_phi() and runner.phi_source(cfg) == "train":
        meta_facts = data.select_subjects(facts[data.PHI_PERIOD]["changed"], cfg.meta_subjects, cfg.seed)
        # φ's side: never the evaluated documents' context
        files["phi_pairs.jsonl"], provenance["phi_pairs"] = _phi_pairs(cfg, meta_facts, sides[data.PHI_SIDE])
    procs = Processes(cfg.device)
    if procs.is_main_process:
        for name, records in files.items():
            write_jsonl(sets / name, records)
    procs.wait_for_everyone()
    return provenance


def _phi_pairs(cfg: TemporalWikiConfig, facts: list[data.Fact], context: list[str]) -> tuple[list[dict], dict]:
    """φ's 0801-0901 meta-training pairs and their record: with --diffsets each changed fact paired with a diff
    document of that period holding its subject and object (as the official φ data), else built documents."""
    if cfg.diffsets:
        path = data.diffset_file(cfg.diffsets, data.PHI_PERIOD)
        pairs, record = data.diff_meta_pairs(facts, data.load_diffsets(cfg.diffsets, data.PHI_PERIOD))
        if not pairs:
            raise TaalmError(f"{path}: no {data.PHI_PERIOD} changed fact has a diff document that contains its "
                             "subject and object (φ's meta-training pairs come from these)")
        return pairs, {**record, "documents": "diffsets", "source": str(path), "period": data.PHI_PERIOD}
    built = data.build_documents(facts, context, data.period_seed(cfg.seed, data.PHI_PERIOD))
    return data.meta_pairs(built), {**data.provenance(facts, built, data.period_seed(cfg.seed, data.PHI_PERIOD)),
                                    "documents": "built-from-probes", "period": data.PHI_PERIOD, "pairs": len(facts)}


def probe_specs(cfg: TemporalWikiConfig, sets: Path, period: str) -> list[str]:
    """The probe sets scored in ``period``'s run: its own (changed, unchanged), and with --eval_all_periods every
    other learned period's as ``changed@PERIOD`` / ``unchanged@PERIOD``."""
    specs = [f"{kind}={sets / period / f'{kind}.jsonl'}" for kind in KINDS]
    if cfg.eval_all_periods:
        specs += [f"{kind}@{other}={sets / other / f'{kind}.jsonl'}" for other in cfg.period_list() if other != period
                  for kind in KINDS]
    return specs


def evaluate_base(cfg: TemporalWikiConfig, sets: Path, out: Path) -> dict[str, Any]:
    """The base model (no adapter) on every learned period's probes, once per seed (``base.json``, with the
    per-probe scores the intervals need)."""
    path = out / "base.json"
    procs = Processes(cfg.device)
    if not path.is_file() and procs.is_main_process:
        atomic_write_json(path, _score_base(cfg, sets))
    procs.wait_for_everyone()
    return json.loads(path.read_text())


def _score_base(cfg: TemporalWikiConfig, sets: Path) -> dict[str, Any]:
    """The base model's scores of each period's own changed and unchanged probes."""
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
    """Each probe set's numbers at ``epoch`` (no per-probe lists: those stay in metrics.jsonl)."""
    return {r["probe"]: {k: r[k] for k in (*METRICS, "exact_match") if k in r} for r in metrics
            if r["epoch"] == epoch}


def period_facts(metrics: list[dict], period: str) -> FactScores | None:
    """The per-probe NLL after a period's last epoch, as the sets ``changed@PERIOD`` / ``unchanged@PERIOD`` of the
    intervals; None when the metrics hold no per-probe lists."""
    last = max(r["epoch"] for r in metrics)
    facts: FactScores = {}
    for kind in KINDS:
        scores = runner.per_probe(metrics, kind, [last])
        if scores is None:
            return None
        facts[f"{kind}@{period}"] = {"nll": scores["nll"][0]}
    return facts


def learn_periods(cfg: TemporalWikiConfig, name: str, sets: Path, out: Path, phi: dict | None,
                  lr_selection: dict | None = None) -> tuple[dict[str, Any], FactScores | None]:
    """One method through the periods in order, each continuing the previous period's adapter, at the lr and epochs
    chosen for its adapter family. Returns the scores before and after each period, and the per-probe NLL after each
    period (``changed@PERIOD`` / ``unchanged@PERIOD``; None without per-probe lists) for the intervals."""
    cfg = runner.with_lr(cfg, lr_selection, name, epochs=True)
    result: dict[str, Any] = {}
    facts: FactScores | None = {}
    init_from = ""
    for period in cfg.period_list():
        run_dir = out / "methods" / name / period
        metrics, seconds = runner.learn_run(runner.learn_config(
            cfg, method=name, docs=str(sets / period / "docs.jsonl"), out=str(run_dir), init_from=init_from,
            phi=phi["dir"] if phi else "", probes=probe_specs(cfg, sets, period),
            review_docs=str(sets / "review.jsonl"), checkpoint_every=1))
        last = max(r["epoch"] for r in metrics)
        result[period] = {"before": _scores(metrics, 0), "after": _scores(metrics, last), "seconds": round(seconds, 1)}
        after = period_facts(metrics, period)
        facts = None if facts is None or after is None else {**facts, **after}
        init_from = str(run_dir)
    result["average"] = {kind: sum(result[p]["after"][kind]["nll"] for p in cfg.period_list()) / len(cfg.period_list())
                         for kind in KINDS}
    return result, facts


def _base_facts(base: dict[str, Any]) -> FactScores | None:
    """The base model's per-probe NLL per period, like ``learn_periods``' (None in a base.json without them)."""
    try:
        return {f"{kind}@{p}": {"nll": np.array(base[p][kind]["per_probe"]["nll"], dtype=float)}
                for p in base for kind in KINDS}
    except (KeyError, TypeError):
        return None


def statistic_over(periods: list[str]) -> Statistic:
    """The bootstrap's statistic: the object NLL after each period (mean over its probes) and their average over the
    periods, for changed and unchanged probes; per replicate (first axis)."""
    def statistic(means: Means) -> dict[str, np.ndarray]:
        by_kind = {kind: np.stack([means[f"{kind}@{p}"]["nll"] for p in periods], axis=1) for kind in KINDS}
        return {**{kind: v.mean(axis=1) for kind, v in by_kind.items()},
                **{f"periods_{kind}": v for kind, v in by_kind.items()}}

    return statistic


def _numbers(base: dict[str, Any]) -> dict[str, Any]:
    """base.json without the per-probe lists."""
    return {p: {kind: {k: v for k, v in scores.items() if k != "per_probe"} for kind, scores in by_kind.items()}
            for p, by_kind in base.items()}


def shared_pairs(cfg: TemporalWikiConfig, out: Path) -> tuple[Path | None, dict[str, Any] | None]:
    """φ's 0801-0901 pairs, shared by every seed (φ and the lr selection): prepared with --seed into OUT/sets,
    where nothing else is kept (each seed's own data is in OUT/seed-<s>/sets). None when the run needs none."""
    sets = out / "sets"
    provenance = prepare_data(cfg, sets)
    procs = Processes(cfg.device)
    if procs.is_main_process:
        for path in sorted(sets.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_file() and path != sets / "phi_pairs.jsonl":
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        if sets.is_dir() and not any(sets.iterdir()):
            sets.rmdir()
    procs.wait_for_everyone()
    pairs = sets / "phi_pairs.jsonl"
    return (pairs, provenance.get("phi_pairs")) if pairs.is_file() else (None, None)


def _row(per_seed: dict[str, dict[str, Any]], bootstrap: dict | None, periods: list[str]) -> dict[str, Any]:
    """A row over the seeds (``per_seed``: by seed): every number as the mean over seeds (seconds: their sum), each
    seed's own, and (from the bootstrap) the 95% intervals and paired differences."""
    row = {**runner.mean_over_seeds(list(per_seed.values())), "seeds": per_seed}
    for p in periods:
        if "seconds" in row.get(p, {}):
            row[p]["seconds"] = round(sum(s[p]["seconds"] for s in per_seed.values()), 1)
    return runner.with_intervals(row, bootstrap)


def table(summary: dict[str, Any]) -> str:
    """The paper's layout: rows base + methods; CHANGED / UNCHANGED object NLL after each period (means over seeds),
    their averages as ``mean ± half-width`` of the 95% interval, and the paired difference to the baseline."""
    periods = list(summary["base"])
    seeds = summary["intervals"]["seeds"]
    baseline = summary["intervals"].get("baseline") or "finetune"
    about = f"{len(seeds)} seeds" if len(seeds) > 1 else "1 seed: ± over probes only"
    header = ("| Method | " + " | ".join(f"{p} CHANGED | {p} UNCHANGED" for p in periods) + " | AVG CHANGED | "
              f"AVG UNCHANGED | Δ AVG CHANGED vs {baseline} [95%] | Δ AVG UNCHANGED vs {baseline} [95%] |")
    title = (f"TemporalWiki, {summary['model']}, documents: {summary['data']['documents']} (object NLL, lower is "
             f"better; {about})")
    lines = [title, "", header, "|---" * (2 * len(periods) + 5) + "|"]
    rows = {"base": {**{p: {"after": summary["base"][p]} for p in periods}, **summary["base_row"]}}
    rows.update(summary["methods"])
    for name, row in rows.items():
        ci, vs = row.get("ci95") or {}, row.get(f"vs_{baseline}") or {}
        values = [f"{row[p]['after'][kind]['nll']:.3f}" for p in periods for kind in KINDS]
        values += [stats.plus_minus(row["average"][kind], ci.get(kind)) for kind in KINDS]
        values += [stats.difference(vs.get(kind)) for kind in KINDS]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    check = summary.get("phi_position_check")
    if check:
        lift = {name: check["layouts"][name]["lift"] for name in ("in_place", "first", "last")}
        lines += ["", (f"φ's fact-weight lift ({check['documents']} documents of {check['period']}): in place "
                      f"{lift['in_place']:.2f}, facts moved first {lift['first']:.2f}, moved last {lift['last']:.2f}; "
                      f"kept {check['kept']:.2f} ({'≥' if check['keeps_lift'] else '<'} {check['keep_at_least']})")]
    return "\n".join(lines) + "\n"


def phi_position_check(cfg: TemporalWikiConfig, phi: dict[str, Any], out: Path) -> dict[str, Any]:
    """φ's fact-weight lift with the facts in place and moved (``taalm.position_check``) on the first learned
    period's built documents of ``--seed``: whether φ finds facts or a place. Computed once per φ
    (``position_check.json``; an OUT resumed or copied with another φ's check gets this φ's)."""
    path = out / "position_check.json"
    procs = Processes(cfg.device)
    digest = fingerprint.phi_digest(str(phi["dir"]))  # by content: a shipped alias's φ can change
    stale = not path.is_file() or json.loads(path.read_text()).get("phi_digest") != digest
    if stale and procs.is_main_process:
        period = cfg.period_list()[0]
        docs = data.period_documents(period, cfg.changed_subjects, cfg.seed, cfg.data_dir, cfg.review_paragraphs)
        check = position_check_for_benchmark(phi["dir"], docs, models.load_tokenizer(cfg.model), cfg.device,
                                             POSITION_CHECK_LENGTH)
        atomic_write_json(path, {"period": period, "seed": cfg.seed, "phi_digest": digest, **check})
    procs.wait_for_everyone()
    return json.loads(path.read_text())


def base_average(base: dict[str, Any], periods: list[str]) -> dict[str, float]:
    return {kind: sum(base[p][kind]["nll"] for p in periods) / len(periods) for kind in KINDS}


class TemporalWiki(runner.Benchmark):
    """φ's 0801-0901 pairs (φ and the lr selection; lr and epochs chosen by answer NLL) shared by every seed; each
    seed its own subjects, probes and documents, the base row and every method through every period."""

    name = "temporalwiki"
    settings = ("epochs", "lr", "batch_size", "max_length", "review_ratio", "review_decay", "recadam_t0", "lora_r",
                "lora_dropout", "seed")
    lr_metric, lr_epochs = "nll", True

    def prepare(self, cfg: TemporalWikiConfig, out: Path) -> None:
        self.phi_pairs, self.phi_data = shared_pairs(cfg, out)  # checks every input before the first write

    def held_out(self, cfg: TemporalWikiConfig, out: Path) -> tuple[list[dict], list[dict]] | None:
        if self.phi_pairs is None:
            return None
        held = runner.held_out_pairs(load_pairs(self.phi_pairs), cfg)
        docs = list(dict.fromkeys(p.document for p in held))
        return [{"text": d} for d in docs], [{"task": p.task, "answer": p.answer} for p in held]

    def meta_overrides(self, cfg: TemporalWikiConfig) -> dict[str, Any]:
        return {"val_metric": "nll"}  # φ is selected by the benchmark's own metric, the answer NLL

    def prepare_seed(self, cfg: TemporalWikiConfig, out: Path) -> runner.SeedRun:
        """The seed's subjects, probes and documents, and the base model's scores (once). φ's pairs are not the
        seed's (shared, in OUT/sets): none are kept here."""
        procs = Processes(cfg.device)
        sets = out / "sets"
        provenance = prepare_data(cfg, sets)  # checks every input before the first write
        provenance.pop("phi_pairs", None)
        if procs.is_main_process:
            (sets / "phi_pairs.jsonl").unlink(missing_ok=True)
        procs.wait_for_everyone()
        base = evaluate_base(cfg, sets, out)
        return runner.SeedRun(cfg.seed, scores={"base": _base_facts(base)},
                              data={"data": provenance, "base": _numbers(base)})

    def run_method(self, cfg: TemporalWikiConfig, name: str, out: Path,
                   run: runner.SeedRun) -> tuple[dict[str, Any], FactScores | None]:
        return learn_periods(cfg, name, out / "sets", out, self.phi, self.lr_selection)

    def statistic(self, cfg: TemporalWikiConfig) -> Statistic:
        return statistic_over(cfg.period_list())

    def summary(self, cfg: TemporalWikiConfig, runs: list[runner.SeedRun], bootstraps: dict,
                out: Path) -> dict[str, Any]:
        periods = cfg.period_list()
        methods = {name: _row({str(r.seed): r.methods[name] for r in runs}, bootstraps.get(name), periods)
                   for name in cfg.method_list()}
        base_row = _row({str(r.seed): {**r.data["base"], "average": base_average(r.data["base"], periods)}
                         for r in runs}, bootstraps.get("base"), [])
        return {"data": {**runs[0].data["data"], **({"phi_pairs": self.phi_data} if self.phi_data else {})},
                "seed_data": {str(r.seed): r.data["data"] for r in runs}, "periods": periods, "metric": METRIC,
                "phi_position_check": phi_position_check(cfg, self.phi, out) if self.phi and not cfg.diffsets else None,
                "base": runner.mean_over_seeds([r.data["base"] for r in runs]),
                "base_row": {k: v for k, v in base_row.items() if k not in periods}, "methods": methods}

    def table(self, summary: dict[str, Any]) -> str:
        return table(summary)

    def plots(self, cfg: TemporalWikiConfig, summary: dict[str, Any], runs: list[runner.SeedRun], out: Path) -> None:
        title = (f"TemporalWiki, {cfg.model} ({summary['data']['documents']}, "
                 f"{len(runs)} seed{'s' if len(runs) > 1 else ''})")
        plot_period_curves(summary, out / "curves.png", title=title)
        plot_tradeoff(summary, out / "tradeoff.png", title=title)


def run_bench(cfg: TemporalWikiConfig, command: str = "") -> dict[str, Any]:
    """φ's pairs, lr/epochs chosen on 0801-0901 (optional) and φ, shared by every seed; then per seed (``--seeds``)
    its data, the base row and every method through every period in OUT/seed-<s>; intervals over probes and seeds."""
    return runner.run(TemporalWiki(), cfg, command)
