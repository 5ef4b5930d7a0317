"""Paired differences between two finished benchmark runs on the same sets: NEW's method − OLD's method, with the
benchmark's own statistic and bootstrap (``taalm.stats``) — a new φ's taalm rows against the shipped φ's, or against
the finetune rows of the run whose sets it reused.

    taalm bench compare --new OUT_A --old OUT_B                          # taalm − taalm
    taalm bench compare --new OUT_A --old OUT_B --old_method finetune    # taalm − finetune

The pairing is checked, not assumed: in every seed both method runs must have recorded the same documents and probe
sets (the digests in their ``DONE``, ``taalm.fingerprint``); otherwise the command stops with one line naming them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from taalm import fingerprint
from taalm.bench import fictional, lama_ckl, runner, temporalwiki
from taalm.config import probe_sets
from taalm.errors import TaalmError
from taalm.io import atomic_write_text, read_jsonl
from taalm.stats import FactScores, Statistic, bootstrap

# the scalar statistics reported per benchmark, headline first; lower is better only for TemporalWiki's NLL
REPORTED = {"lama-ckl": ("top_acc", "nf_acc", "total"), "fictional": ("last_acc", "last_nf_acc", "top_acc"),
            "temporalwiki": ("changed", "unchanged")}
PAIRED_INPUTS = ("docs", "probes")  # what two runs must share to be compared fact by fact
log = logging.getLogger("taalm")


@dataclass(frozen=True)
class Side:
    """One run's method: the OUT directory of a finished benchmark and the method whose rows are compared."""

    run: Path
    method: str
    benchmark: str
    seeds: tuple[int, ...]
    periods: tuple[str, ...]  # TemporalWiki's learned periods; () for the other benchmarks

    def method_dir(self, seed: int) -> Path:
        return runner.seed_dir(self.run, seed) / "methods" / self.method

    def learn_dirs(self, seed: int) -> list[Path]:
        """The ``taalm learn`` directories of this method and seed (one per period on TemporalWiki)."""
        return [self.method_dir(seed) / p for p in self.periods] if self.periods else [self.method_dir(seed)]


def read_side(run: str, method: str) -> Side:
    """A finished benchmark run (its ``summary.json``) and one of its methods."""
    path = Path(run)
    summary_file = path / "summary.json"
    if not summary_file.is_file():
        raise TaalmError(f"{summary_file}: not found (not a finished benchmark run)")
    try:
        summary = json.loads(summary_file.read_text())
        benchmark, seeds = summary["benchmark"], tuple(summary["settings"]["seeds"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise TaalmError(f"{summary_file}: not a benchmark summary ({type(e).__name__}: {e})") from None
    if benchmark not in REPORTED:
        raise TaalmError(f"{summary_file}: unknown benchmark {benchmark!r}")
    periods = tuple(summary.get("periods", ())) if benchmark == "temporalwiki" else ()
    return Side(path, method, benchmark, seeds, periods)


def paired_inputs(directory: Path, seed_dir: Path) -> dict[str, Any] | None:
    """The digests of the documents and probe sets a finished learning run learned from: as it recorded them, or,
    for a run from before taalm recorded them, of the files its ``config.yaml`` names, found under ``seed_dir`` (the
    run may have been copied since); None where neither is there."""
    if not (directory / fingerprint.DONE).is_file():
        raise TaalmError(f"{directory}: no finished run here (no {fingerprint.DONE})")
    recorded = fingerprint.recorded_inputs(directory)
    if recorded is not None:
        return {key: recorded.get(key) for key in PAIRED_INPUTS}
    try:
        config = yaml.safe_load((directory / "config.yaml").read_text())
        local = lambda path: seed_dir.joinpath(*Path(path).parts[Path(path).parts.index(seed_dir.name) + 1:])
        return {"docs": fingerprint.file_digest(local(config["docs"])),
                "probes": {name: fingerprint.file_digest(local(path)) for name, path in probe_sets(config["probes"]).items()}}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, TaalmError):
        return None


def check_paired(new: Side, old: Side, seed: int) -> None:
    """Both methods of ``seed`` learned the same documents and were probed on the same sets (their digests). Where a
    side's digests cannot be had, only the sets' sizes are checked (by the bootstrap) and a warning says so."""
    for new_dir, old_dir in zip(new.learn_dirs(seed), old.learn_dirs(seed), strict=True):
        new_inputs = paired_inputs(new_dir, runner.seed_dir(new.run, seed))
        old_inputs = paired_inputs(old_dir, runner.seed_dir(old.run, seed))
        if new_inputs is None or old_inputs is None:
            log.warning("%s: neither records nor keeps the sets it learned: the pairing is checked by their sizes only",
                        new_dir if new_inputs is None else old_dir)
            continue
        for key in PAIRED_INPUTS:
            if new_inputs[key] != old_inputs[key]:
                raise TaalmError(f"{new_dir}: learned with other {key} than {old_dir} "
                                 f"({new_inputs[key]} against {old_inputs[key]}): not paired")


def metrics(directory: Path) -> list[dict]:
    return [record for _, record in read_jsonl(directory / "metrics.jsonl")]


def fact_scores(side: Side, seed: int) -> FactScores:
    """Per-fact scores of one method and seed, as the benchmark computes its own intervals."""
    if side.periods:
        per_period = [temporalwiki.period_facts(metrics(directory), period)
                      for directory, period in zip(side.learn_dirs(seed), side.periods, strict=True)]
        found = None if None in per_period else {k: v for facts in per_period for k, v in facts.items()}
    else:
        found = lama_ckl.fact_scores(metrics(side.method_dir(seed)))
    if found is None:
        raise TaalmError(f"{side.method_dir(seed)}: metrics hold no per-probe scores "
                         "(a run from before taalm recorded them)")
    return found


def statistic_of(side: Side) -> Statistic:
    if side.benchmark == "temporalwiki":
        return temporalwiki.statistic_over(list(side.periods))
    return fictional.statistic if side.benchmark == "fictional" else lama_ckl.statistic


def compare_runs(new_run: str, old_run: str, new_method: str = "taalm", old_method: str = "taalm",
                 seeds: list[int] | None = None) -> dict[str, Any]:
    """NEW's method − OLD's method on every seed both runs have (or ``seeds``): per reported statistic both means,
    the paired difference's per-seed values, mean over seeds and 95 % interval."""
    new, old = read_side(new_run, new_method), read_side(old_run, old_method)
    if new.benchmark != old.benchmark:
        raise TaalmError(f"{old.run}: a {old.benchmark} run, {new.run} a {new.benchmark} run: not comparable")
    if new.periods != old.periods:
        raise TaalmError(f"{old.run}: learned the periods {list(old.periods)}, {new.run} {list(new.periods)}")
    common = [s for s in new.seeds if s in old.seeds]
    chosen = list(seeds) if seeds else common
    missing = [s for s in chosen if s not in common]
    if not chosen or missing:
        raise TaalmError(f"option --seeds: {new.run} has seeds {list(new.seeds)}, {old.run} {list(old.seeds)}"
                         + (f": no seed {missing[0]} in both" if missing else ": none in common"))
    for seed in chosen:
        check_paired(new, old, seed)
    runs = [{"old": fact_scores(old, s), "new": fact_scores(new, s)} for s in chosen]
    try:
        result = bootstrap(runs, statistic_of(new), baseline="old")
    except ValueError as e:  # the sets' sizes differ: not the same facts
        raise TaalmError(f"{new.run} and {old.run}: not paired ({e})") from None
    rows = {k: {"new": result["new"]["stats"][k]["mean"], "old": result["old"]["stats"][k]["mean"],
                "difference": result["new"]["vs_old"][k]} for k in REPORTED[new.benchmark]}
    return {"benchmark": new.benchmark, "new": {"run": str(new.run), "method": new_method},
            "old": {"run": str(old.run), "method": old_method}, "seeds": chosen, "statistics": rows}


def table(report: dict[str, Any]) -> str:
    """The report as markdown: one row per statistic."""
    new, old = report["new"], report["old"]
    lower_is_better = " (object NLL: lower is better)" if report["benchmark"] == "temporalwiki" else ""
    title = (f"{report['benchmark']}, seeds {', '.join(map(str, report['seeds']))}: NEW = {new['method']} of "
             f"{new['run']}, OLD = {old['method']} of {old['run']}{lower_is_better}")
    lines = [title, "", "| statistic | NEW | OLD | NEW − OLD [95 %] | per seed |", "|---|---|---|---|---|"]
    for name, row in report["statistics"].items():
        d = row["difference"]
        lines.append(f"| {name} | {row['new']:.3f} | {row['old']:.3f} | {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, "
                     f"{d['ci95'][1]:+.3f}] | {', '.join(f'{x:+.3f}' for x in d['per_seed'])} |")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: str) -> None:
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
